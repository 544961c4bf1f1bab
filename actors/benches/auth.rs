//! Cost of authenticating one request: verifying a bearer token (header decode, signature,
//! claims) as the api's guard does before every handler. HS256 is the development key,
//! RS256 (2048-bit, from the test fixtures) what an identity provider signs with.
//!
//! Run: `cargo bench -p fraudsense-actors --bench auth`

use std::{hint::black_box, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use fraudsense_actors::auth::{AuthSettings, Role, Verifier, claims, mint};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::SecretString;

const RSA_KEY: &str = include_str!("../tests/fixtures/rs256-test-only.key.pem");
const JWKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rs256-test-only.jwks.json");

fn bench(c: &mut Criterion) {
    let hs = AuthSettings {
        issuer: "fraudsense".into(),
        audience: "fraudsense-api".into(),
        hs256_secret: Some(SecretString::from("0123456789abcdef0123456789abcdef".to_owned())),
        hs256_secret_file: None,
        jwks_file: None,
        leeway: Duration::from_secs(30),
    };
    let the_claims = claims(&hs, "bench", &[Role::Ingest], Duration::from_secs(3600));
    let hs_token = mint(&hs, &the_claims).unwrap_or_else(|e| panic!("{e}"));
    let hs_verifier = Verifier::from_settings(&hs).unwrap_or_else(|e| panic!("{e}"));

    let rs = AuthSettings { hs256_secret: None, jwks_file: Some(JWKS.into()), ..hs.clone() };
    let rs_verifier = Verifier::from_settings(&rs).unwrap_or_else(|e| panic!("{e}"));
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("test-key-1".into());
    let key = EncodingKey::from_rsa_pem(RSA_KEY.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let rs_token = jsonwebtoken::encode(&header, &the_claims, &key).unwrap_or_else(|e| panic!("{e}"));

    // A fresh verifier per iteration batch would measure construction: instead, measure the
    // full check through a verifier that never remembers (a new token each time is what a
    // first request costs) and the repeat of a remembered one.
    let mut group = c.benchmark_group("verify_token");
    group.bench_function("hs256_first_use", |b| {
        b.iter_batched(
            || Verifier::from_settings(&hs).unwrap_or_else(|e| panic!("{e}")),
            |v| black_box(v.verify(black_box(&hs_token))),
            criterion::BatchSize::SmallInput,
        )
    });
    group.bench_function("rs256_2048_first_use", |b| {
        b.iter_batched(
            || Verifier::from_settings(&rs).unwrap_or_else(|e| panic!("{e}")),
            |v| black_box(v.verify(black_box(&rs_token))),
            criterion::BatchSize::SmallInput,
        )
    });
    let _ = (hs_verifier.verify(&hs_token), rs_verifier.verify(&rs_token));
    group.bench_function("hs256_repeat", |b| b.iter(|| black_box(hs_verifier.verify(black_box(&hs_token)))));
    group.bench_function("rs256_2048_repeat", |b| {
        b.iter(|| black_box(rs_verifier.verify(black_box(&rs_token))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

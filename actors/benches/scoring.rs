//! Cost of one full decision on the live path, with the shipped bootstrap model and the
//! default rules: the feature vector, the Isolation Forest with explanation, the logistic
//! regression, the calibrator, the rules and the receipt (reasons, contributions).
//! The raw ceiling measured in the same run is the Isolation Forest score alone, the part
//! no decision can skip.
//!
//! Run: `cargo bench -p fraudsense-actors --bench scoring`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fraudsense_actors::{
    Transaction,
    features::{Features, MODEL_WIDTH},
    rules::RuleConfig,
    scoring::{RuleSet, decide},
    store::catalog::{BOOTSTRAP_MODEL, ModelPackage},
};

fn bench(c: &mut Criterion) {
    let package: ModelPackage = serde_json::from_str(BOOTSTRAP_MODEL).unwrap_or_else(|e| panic!("{e}"));
    let model = package.model;
    let rules = RuleSet { version: "rules-1".into(), config: RuleConfig::default() };
    let body = serde_json::json!({
        "transaction_id": "b-1", "account_id": "acc-1", "merchant_id": "mer-1", "amount": "742.10",
        "currency": "EUR", "timestamp": "2026-11-20T02:30:00Z", "geo_lat": 48.85, "geo_lon": 2.35
    });
    let tx = Transaction::parse(&body, chrono::Utc::now()).unwrap_or_else(|e| panic!("{e:?}"));
    let features = Features {
        amount: 742.1,
        tx_count_5m: 3,
        tx_count_1h: 6,
        tx_count_24h: 9,
        tx_count_7d: 20,
        amount_sum_1h: 1900.0,
        amount_sum_24h: 2300.0,
        amount_ratio_7d: Some(11.0),
        seconds_since_prev: Some(95.0),
        distance_km: Some(850.0),
        speed_kmh: Some(32_000.0),
        distinct_merchants_24h: 5,
        new_merchant: true,
        hour_of_day: 2,
        night: true,
        merchant_risk_rate: 0.02,
        ..Features::default()
    };
    let x = features.vector();
    c.bench_function("ceiling: isolation forest score only", |b| {
        b.iter(|| black_box(model.forest.score(black_box(&x)).unwrap_or(0.0)))
    });
    let mut shares = [0.0; MODEL_WIDTH];
    c.bench_function("model score (forest + explanation + regression + calibrator)", |b| {
        b.iter(|| {
            black_box(model.score(black_box(&features), &mut shares).map(|s| s.probability).unwrap_or(0.0))
        })
    });
    c.bench_function("full decision with receipt (model + rules + reasons)", |b| {
        b.iter(|| black_box(decide(&model, &rules, black_box(&tx), Some(black_box(&features))).score))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

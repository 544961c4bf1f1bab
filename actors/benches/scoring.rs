//! Cost of one full decision on the live path, with the shipped bootstrap model and the
//! default rules: the feature vector, the Isolation Forest with explanation, the logistic
//! regression, the calibrator, the rules and the receipt (reasons, contributions).
//! The raw ceiling measured in the same run is the Isolation Forest score alone, the part
//! no decision can skip.
//!
//! The warm scoring path is what a worker does per transaction once the account's actor is
//! warm: record the payment in the in-memory window, compute the account's windows from it,
//! derive the features (merchant counts as Redis answered them) and decide. Only the Redis
//! write itself, which runs concurrently with nothing else on this path, is left out.
//!
//! Run: `cargo bench -p fraudsense-actors --bench scoring`

use std::hint::black_box;

use chrono::{TimeDelta, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use fraudsense_actors::{
    Transaction,
    features::{AccountWindow, Entry, Features, Location, MODEL_WIDTH, derive},
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

/// A warm window holding `n` earlier payments of the account, spread over the last week.
fn history(tx: &Transaction, n: i64) -> AccountWindow {
    let mut window = AccountWindow::default();
    let end = tx.event_time().timestamp_millis();
    for i in 0..n {
        window.observe(Entry {
            at_ms: end - (i + 1) * (7 * 24 * 3_600_000 - 60_000) / n,
            id: format!("h-{i}").into(),
            amount: 20.0 + (i % 7) as f64 * 13.5,
            merchant: format!("mer-{}", i % 9).into(),
            location: Some(Location { lat: 48.85 + (i % 3) as f64 * 0.01, lon: 2.35 }),
        });
    }
    window
}

fn warm(c: &mut Criterion) {
    let package: ModelPackage = serde_json::from_str(BOOTSTRAP_MODEL).unwrap_or_else(|e| panic!("{e}"));
    let model = package.model;
    let rules = RuleSet { version: "rules-1".into(), config: RuleConfig::default() };
    let at = Utc::now() - TimeDelta::hours(2);
    let body = serde_json::json!({
        "transaction_id": "b-1", "account_id": "acc-1", "merchant_id": "mer-new", "amount": "742.10",
        "currency": "EUR", "timestamp": at.to_rfc3339(), "geo_lat": 48.85, "geo_lon": 2.35
    });
    let tx = Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"));
    for n in [20, 500] {
        let window = history(&tx, n);
        let name = format!("warm scoring path: window of {n} + features + forest + rules + receipt");
        c.bench_function(&name, |b| {
            b.iter_batched(
                || window.clone(),
                |mut window| {
                    let mut raw = window.observe(Entry::of(black_box(&tx)));
                    raw.merchant_counts = (12, 140);
                    raw.merchant_labels = (40, 1);
                    let features = derive(&tx, &raw);
                    black_box(decide(&model, &rules, &tx, Some(&features)).score);
                    window
                },
                BatchSize::SmallInput,
            )
        });
    }
}

criterion_group!(benches, bench, warm);
criterion_main!(benches);

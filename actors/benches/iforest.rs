//! Isolation Forest scoring cost: one row at a time (the live path) and with explanations.
//! 100 trees × 256 samples, 16 features, as in STACK.md's scikit-learn reference
//! (3.4 ms per single row; 2.5 µs/row in batches of 100k). Target: ≤ 5 µs per row.
//!
//! Run: `cargo bench -p fraudsense-actors --bench iforest`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fraudsense_actors::iforest::{IsolationForest, Params};

const FEATURES: usize = 16;

/// Deterministic pseudo-random rows (no RNG crate needed for a benchmark).
fn rows(n: usize) -> Vec<Vec<f64>> {
    let mut state = 0x1234_5678_9abc_def0u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n).map(|_| (0..FEATURES).map(|_| next() * 10.0).collect()).collect()
}

fn bench(c: &mut Criterion) {
    let names: Vec<String> = (0..FEATURES).map(|i| format!("f{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let train = rows(10_000);
    let forest =
        IsolationForest::fit("bench", &names, &train, Params { trees: 100, sample_size: 256, seed: 7 })
            .unwrap_or_else(|e| panic!("{e}"));
    let probe = rows(1_000);
    let mut i = 0;
    c.bench_function("iforest score 1 row (100 trees x 256, 16 features)", |b| {
        b.iter(|| {
            i = (i + 1) % probe.len();
            black_box(forest.score(black_box(&probe[i])).unwrap_or(0.0))
        })
    });
    let mut contributions = vec![0.0; FEATURES];
    c.bench_function("iforest score + explain 1 row", |b| {
        b.iter(|| {
            i = (i + 1) % probe.len();
            black_box(forest.explain(black_box(&probe[i]), &mut contributions).unwrap_or(0.0))
        })
    });
    c.bench_function("iforest fit (100 trees x 256)", |b| {
        b.iter(|| {
            IsolationForest::fit("bench", &names, black_box(&train[..2_000]), Params::default()).is_ok()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

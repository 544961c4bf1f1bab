//! The Redis sliding windows against the real Redis, each test under its own key prefix.

use chrono::{DateTime, Utc};
use fraudsense_actors::{
    Transaction,
    features::{Features, WindowStore},
    testing::TestEnv,
};
use serde_json::json;

async fn store() -> (TestEnv, WindowStore) {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let redis = fraudsense_actors::connect_redis(&env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let store = WindowStore::new(redis, &env.settings.redis.key_prefix, &env.settings.scoring);
    (env, store)
}

fn tx(id: &str, amount: &str, at: &str) -> Transaction {
    let body = json!({
        "transaction_id": id, "account_id": "acct-w", "merchant_id": format!("m-{id}"), "amount": amount,
        "currency": "EUR", "timestamp": at, "geo_lat": 40.0, "geo_lon": -3.5
    });
    Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
}

async fn observe(store: &WindowStore, t: &Transaction) -> Features {
    store.observe(t).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn windows_count_and_sum_on_event_time_and_ignore_redeliveries() {
    let (env, store) = store().await;
    let f = observe(&store, &tx("a", "10.25", "2026-11-01T10:00:00Z")).await;
    assert_eq!((f.tx_count_5m, f.tx_count_7d, f.seconds_since_prev), (1, 1, None));
    let f = observe(&store, &tx("b", "5", "2026-11-01T10:03:00Z")).await;
    assert_eq!((f.tx_count_5m, f.amount_sum_5m), (2, 15.25));
    assert_eq!(f.seconds_since_prev, Some(180.0));
    // Redelivery of b: same features, nothing counted twice.
    assert_eq!(observe(&store, &tx("b", "5", "2026-11-01T10:03:00Z")).await, f);
    // Two hours later: the 5-minute and 1-hour windows have moved on, 24 h has all three.
    let f = observe(&store, &tx("c", "100", "2026-11-01T12:03:00Z")).await;
    assert_eq!((f.tx_count_5m, f.tx_count_1h, f.tx_count_24h), (1, 1, 3));
    assert_eq!(f.amount_sum_24h, 115.25);
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn a_late_transaction_sees_only_what_came_before_it() {
    let (env, store) = store().await;
    observe(&store, &tx("early", "1", "2026-11-01T10:00:00Z")).await;
    observe(&store, &tx("later", "2", "2026-11-01T10:10:00Z")).await;
    // Arrives last but happened in between: its windows end at its own timestamp.
    let f = observe(&store, &tx("middle", "4", "2026-11-01T10:05:00Z")).await;
    assert_eq!((f.tx_count_1h, f.amount_sum_1h), (2, 5.0));
    assert_eq!(f.seconds_since_prev, Some(300.0));
    // The account's "last" stays the latest event, not the latest arrival.
    let state = store.account_state("acct-w", None).await.unwrap_or_else(|e| panic!("{e}"));
    let state = state.unwrap_or_else(|| panic!("no state"));
    assert_eq!(state.last_transaction_id.as_deref(), Some("later"));
    assert_eq!(state.last_merchant_id.as_deref(), Some("m-later"));
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn entries_older_than_the_longest_window_are_trimmed_and_keys_expire() {
    let (env, store) = store().await;
    observe(&store, &tx("old", "1", "2026-10-01T10:00:00Z")).await;
    let f = observe(&store, &tx("new", "2", "2026-11-01T10:00:00Z")).await;
    assert_eq!((f.tx_count_7d, f.amount_sum_7d, f.seconds_since_prev), (1, 2.0, None));
    let redis = fraudsense_actors::connect_redis(&env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
    let keys = store.account_keys("acct-w");
    let members: i64 = redis.zcard(&keys[0]).await.unwrap_or(-1);
    let amounts: i64 = redis.hlen(&keys[1]).await.unwrap_or(-1);
    assert_eq!((members, amounts), (1, 1), "the old entry is gone from both structures");
    for key in &keys {
        let ttl: i64 = redis.pttl(key).await.unwrap_or(-1);
        assert!(ttl > 0, "{key} must expire");
    }
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn account_state_reports_windows_and_last_location() {
    let (env, store) = store().await;
    assert!(store.account_state("acct-w", None).await.unwrap_or_else(|e| panic!("{e}")).is_none());
    observe(&store, &tx("s1", "20", "2026-11-01T10:00:00Z")).await;
    observe(&store, &tx("s2", "30.5", "2026-11-01T10:02:00Z")).await;
    let state = store.account_state("acct-w", None).await.unwrap_or_else(|e| panic!("{e}"));
    let state = state.unwrap_or_else(|| panic!("no state"));
    let at: DateTime<Utc> = "2026-11-01T10:02:00Z".parse().unwrap_or_default();
    assert_eq!((state.as_of, state.last_seen), (Some(at), Some(at)));
    assert_eq!(state.windows[0].window, "5m");
    assert_eq!((state.windows[0].count, state.windows[0].sum.as_str()), (2, "50.5000"));
    assert_eq!(state.last_location.map(|l| (l.lat, l.lon)), Some((40.0, -3.5)));
    // Asked about a later moment, the short windows are empty.
    let later: DateTime<Utc> = "2026-11-01T11:00:00Z".parse().unwrap_or_default();
    let state = store.account_state("acct-w", Some(later)).await.unwrap_or_else(|e| panic!("{e}"));
    let state = state.unwrap_or_else(|| panic!("no state"));
    assert_eq!((state.windows[0].count, state.windows[3].count), (0, 2));
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// A transaction of `account` at `merchant`, `at`, in `(lat, lon)`.
fn at(id: &str, account: &str, merchant: &str, amount: &str, when: &str, place: (f64, f64)) -> Transaction {
    let body = json!({
        "transaction_id": id, "account_id": account, "merchant_id": merchant, "amount": amount,
        "currency": "EUR", "timestamp": when, "geo_lat": place.0, "geo_lon": place.1
    });
    Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
}

const MADRID: (f64, f64) = (40.4168, -3.7038);
const PARIS: (f64, f64) = (48.8566, 2.3522);

#[tokio::test]
async fn travel_history_and_merchant_features_come_from_the_event_before() {
    let (env, store) = store().await;
    let f = observe(&store, &at("t1", "acc-t", "m-a", "10", "2026-11-02T12:00:00Z", MADRID)).await;
    assert_eq!((f.distance_km, f.speed_kmh, f.amount_ratio_7d), (None, None, None), "no history yet");
    assert!(f.new_merchant);
    let f = observe(&store, &at("t2", "acc-t", "m-a", "10", "2026-11-02T12:10:00Z", MADRID)).await;
    assert_eq!(f.distance_km, Some(0.0));
    assert!(!f.new_merchant, "paid m-a before");
    assert_eq!(f.amount_ratio_7d, Some(1.0));
    // Thirty minutes later in Paris: about 1050 km, an impossible 2100 km/h.
    let f = observe(&store, &at("t3", "acc-t", "m-b", "100", "2026-11-02T12:40:00Z", PARIS)).await;
    let km = f.distance_km.unwrap_or_default();
    assert!((1040.0..1060.0).contains(&km), "{km}");
    assert!((f.speed_kmh.unwrap_or_default() - km * 2.0).abs() < 1e-6);
    assert!(f.new_merchant);
    assert_eq!(f.distinct_merchants_24h, 2);
    assert_eq!(f.amount_ratio_7d, Some(10.0), "100 against a history averaging 10");
    assert_eq!(f.amount_mean_1h, 40.0);
    // Another account at the same merchant sees the merchant's traffic, not the account's.
    let f = observe(&store, &at("o1", "acc-o", "m-b", "5", "2026-11-02T12:45:00Z", PARIS)).await;
    assert_eq!((f.tx_count_1h, f.merchant_tx_count_1h, f.merchant_tx_count_24h), (1, 2, 2));
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn the_merchant_risk_rate_only_counts_labels_older_than_the_delay() {
    let (env, store) = store().await;
    assert_eq!(env.settings.scoring.label_delay.as_secs(), 86_400);
    let labelled: DateTime<Utc> = "2026-11-03T00:00:00Z".parse().unwrap_or_default();
    for (i, fraud) in [true, true, false].into_iter().enumerate() {
        store
            .record_label("m-risky", &format!("old-{i}"), fraud, labelled)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Labelling the same transaction again changes nothing.
    store.record_label("m-risky", "old-0", false, labelled).await.unwrap_or_else(|e| panic!("{e}"));
    let f = observe(&store, &at("r1", "acc-r", "m-risky", "10", "2026-11-03T12:00:00Z", MADRID)).await;
    assert_eq!(
        (f.merchant_labels, f.merchant_fraud_labels),
        (0, 0),
        "labels younger than a day do not count"
    );
    assert_eq!(f.merchant_risk_rate, 1.0 / 50.0, "the prior");
    let f = observe(&store, &at("r2", "acc-r", "m-risky", "10", "2026-11-04T00:00:00Z", MADRID)).await;
    assert_eq!((f.merchant_labels, f.merchant_fraud_labels), (3, 2));
    assert_eq!(f.merchant_risk_rate, 3.0 / 53.0);
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn time_of_day_is_local_solar_time() {
    let (env, store) = store().await;
    // 18:00 UTC in Tokyo (139.7° E, +9 h) is 03:00 on Sunday morning.
    let f = observe(&store, &at("k1", "acc-k", "m-k", "10", "2026-11-07T18:00:00Z", (35.68, 139.7))).await;
    assert_eq!((f.hour_of_day, f.night, f.weekend), (3, true, true));
    let f = observe(&store, &at("k2", "acc-l", "m-k", "10", "2026-11-09T18:00:00Z", MADRID)).await;
    assert_eq!((f.hour_of_day, f.night, f.weekend), (18, false, false));
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn a_very_busy_account_is_still_scored() {
    let (env, store) = store().await;
    // 9000 payments in the week before: more than Lua can `unpack` at once.
    use fred::interfaces::{HashesInterface, SortedSetsInterface};
    let redis = fraudsense_actors::connect_redis(&env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let keys = store.account_keys("acc-busy");
    let base: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap_or_default();
    let members: Vec<(f64, String)> =
        (0..9000).map(|i| ((base.timestamp_millis() + i * 60_000) as f64, format!("b{i}"))).collect();
    let _: i64 = redis
        .zadd(&keys[0], None, None, false, false, members.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let amounts: Vec<(String, String)> = members.iter().map(|(_, id)| (id.clone(), "1".to_owned())).collect();
    let _: i64 = redis.hset(&keys[1], amounts).await.unwrap_or_else(|e| panic!("{e}"));
    let merchants: Vec<(String, String)> =
        members.iter().map(|(_, id)| (id.clone(), "m-usual".to_owned())).collect();
    let _: i64 = redis.hset(&keys[4], merchants).await.unwrap_or_else(|e| panic!("{e}"));
    let f = observe(&store, &at("b-new", "acc-busy", "m-usual", "5", "2026-11-07T06:00:00Z", MADRID)).await;
    assert_eq!(f.tx_count_7d, 9001);
    assert_eq!(f.amount_sum_7d, 9005.0);
    assert!(!f.new_merchant);
    assert_eq!(f.distinct_merchants_24h, 1);
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// A payment of the warm-copy test: `n` picks id, time (mostly forward, some late),
/// amount, merchant and location deterministically.
fn mixed(n: u64, seed: &mut u64) -> Transaction {
    let mut next = |m: u64| {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*seed >> 33) % m
    };
    let base: DateTime<Utc> = "2026-11-01T00:00:00Z".parse().unwrap_or_default();
    // About 20 minutes apart on average, one in eight up to 6 hours late.
    let late = if next(8) == 0 { next(6 * 3600) as i64 } else { 0 };
    let at = base + chrono::Duration::seconds(n as i64 * 1200 + next(600) as i64 - late);
    let mut body = json!({
        "transaction_id": format!("w{n}"), "account_id": "acct-warm",
        "merchant_id": format!("m{}", next(6)), "amount": format!("{}.{:02}", 1 + next(500), next(100)),
        "currency": "EUR", "timestamp": at.to_rfc3339(),
    });
    if next(5) != 0 {
        body["geo_lat"] = json!(40.0 + next(1000) as f64 / 100.0);
        body["geo_lon"] = json!(-3.5 + next(1000) as f64 / 100.0);
    }
    Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
}

#[tokio::test]
async fn a_warm_copy_gives_exactly_the_features_redis_holds_even_after_another_writer() {
    use fraudsense_actors::features::AccountWindow;
    let (env, warm_store) = store().await;
    let redis = fraudsense_actors::connect_redis(&env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    // The reference reads the whole window from Redis every time, under its own keys.
    let reference =
        WindowStore::new(redis, &format!("{}ref:", env.settings.redis.key_prefix), &env.settings.scoring);
    let mut window = AccountWindow::default();
    let mut seed = 7;
    let mut sent: Vec<Transaction> = Vec::new();
    for n in 0..400 {
        // One in ten is a redelivery of an earlier payment.
        let t = if n % 10 == 9 { sent[(n * 7) % sent.len()].clone() } else { mixed(n as u64, &mut seed) };
        sent.push(t.clone());
        if n % 50 == 25 {
            // Another node (or a restarted actor) writes this account: the copy is stale now.
            let other = observe(&warm_store, &t).await;
            assert_eq!(other, observe(&reference, &t).await, "payment {n} via the other writer");
            continue;
        }
        let before = window.version();
        let warm = warm_store.observe_with(&mut window, &t).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(warm, observe(&reference, &t).await, "payment {n} ({})", t.transaction_id);
        assert!(window.version() > before, "every write moves the version on");
    }
    assert!(window.len() > 100, "the copy holds the week: {}", window.len());
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

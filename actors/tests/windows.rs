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

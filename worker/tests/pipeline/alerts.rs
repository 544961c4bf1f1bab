//! Alerts leave the worker for Redis pub/sub and the alerts exchange, at least once.

use fred::interfaces::{EventInterface, PubsubInterface};
use futures_util::StreamExt;
use lapin::options::BasicAckOptions;
use serde_json::Value;

use crate::helpers::{DEADLINE, Pipeline, spawn_pipeline, tap, transaction};

/// A Redis subscriber on the deployment's alerts channel and a queue bound to `alert.high`.
async fn listen(p: &Pipeline) -> (fred::clients::Client, lapin::Consumer, lapin::Connection) {
    let redis =
        fraudsense_actors::connect_redis(&p.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    redis
        .subscribe(format!("{}alerts", p.env.settings.redis.key_prefix))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The worker has declared the topology by now (it is consuming).
    let (consumer, conn) = tap(&p.env, &p.env.topology().alerts_exchange, "alert.high").await;
    (redis, consumer, conn)
}

async fn next_amqp(consumer: &mut lapin::Consumer) -> Value {
    let delivery = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no alert on the exchange within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("consumer closed"))
        .unwrap_or_else(|e| panic!("{e}"));
    delivery.ack(BasicAckOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_slice(&delivery.data).unwrap_or_else(|e| panic!("{e}"))
}

async fn next_redis(rx: &mut tokio::sync::broadcast::Receiver<fred::types::Message>) -> Value {
    let message = tokio::time::timeout(DEADLINE, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no alert on Redis within {DEADLINE:?}"))
        .unwrap_or_else(|e| panic!("{e}"));
    let text: String = message.value.convert().unwrap_or_default();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn a_high_risk_alert_reaches_redis_subscribers_and_the_alerts_exchange() {
    let p = spawn_pipeline().await;
    let (redis, mut consumer, _conn) = listen(&p).await;
    let mut rx = redis.message_rx();
    assert_eq!(p.post(&transaction("al-1", "acct-al", "25000", "2026-11-20T09:00:00Z")).await, 202);
    let on_exchange = next_amqp(&mut consumer).await;
    let on_redis = next_redis(&mut rx).await;
    assert_eq!(on_exchange, on_redis, "the same event on both");
    assert_eq!(on_exchange["transaction_id"], "al-1");
    assert_eq!(on_exchange["account_id"], "acct-al");
    assert_eq!(
        (on_exchange["amount"].as_str(), on_exchange["currency"].as_str()),
        (Some("25000"), Some("USD"))
    );
    assert_eq!(on_exchange["risk_label"], "HIGH");
    assert!(on_exchange["reasons"].as_array().is_some_and(|r| r.iter().any(|c| c == "HIGH_AMOUNT")));
    assert!(
        on_exchange["alert_id"].as_i64().is_some_and(|id| id > 0) && on_exchange["created_at"].is_string()
    );
    // Marked published once the publisher commits, just after it sent both.
    fraudsense_actors::testing::eventually(DEADLINE, "the alert marked published", || async {
        let sql = "SELECT count(*) FROM alerts WHERE transaction_id = $1 AND published_at IS NOT NULL";
        Ok((p.count(sql, "al-1").await == 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    p.teardown().await;
}

#[tokio::test]
async fn an_alert_committed_but_not_published_before_a_crash_is_published_by_the_sweep() {
    let p = spawn_pipeline().await;
    let (_redis, mut consumer, _conn) = listen(&p).await;
    assert_eq!(p.post(&transaction("sw-1", "acct-sw", "12", "2026-11-20T09:00:00Z")).await, 202);
    p.scored("sw-1").await;
    // What a crash between commit and publish leaves behind: an alert with no published_at.
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    client
        .execute(
            "INSERT INTO alerts (transaction_id, account_id, risk_label, score, reason, threshold)
             VALUES ('sw-1', 'acct-sw', 'HIGH', 0.95, 'DENYLIST_ACCOUNT', 0.8)",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let event = next_amqp(&mut consumer).await;
    assert_eq!(
        (event["transaction_id"].as_str(), event["reasons"][0].as_str()),
        (Some("sw-1"), Some("DENYLIST_ACCOUNT"))
    );
    p.teardown().await;
}

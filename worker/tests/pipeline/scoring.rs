use fraudsense_actors::{TransactionCreated, testing::eventually, topology::TRANSACTION_CREATED};
use lapin::{BasicProperties, options::BasicPublishOptions};

use crate::helpers::{DEADLINE, spawn_api_only, spawn_pipeline, transaction};

#[tokio::test]
async fn a_posted_transaction_is_scored_and_explained() {
    let p = spawn_pipeline().await;
    assert_eq!(p.post(&transaction("e2e-1", "acct-a", "25.00", "2026-11-20T09:00:00Z")).await, 202);
    let view = p.scored("e2e-1").await;
    assert_eq!(view["amount"], "25", "decimal, exact, without padding");
    assert_eq!(view["account_id"], "acct-a");
    assert_eq!(view["score"]["risk_label"], "LOW");
    // The first decision is already a model's: the shipped bootstrap model and default rules.
    assert_eq!(view["score"]["model_version"], "bootstrap-1");
    assert_eq!(view["score"]["rules_version"], "rules-1");
    assert_eq!(view["score"]["features"]["tx_count_1h"], 1);
    assert_eq!(view["score"]["features"]["new_merchant"], true);
    // The receipt explains the anomaly score: one share per model input, summing to it.
    let anomaly = view["score"]["model"]["anomaly"].as_f64().unwrap_or(-1.0);
    assert!((0.0..=1.0).contains(&anomaly), "{view}");
    let shares = view["score"]["contributions"].as_object().cloned().unwrap_or_default();
    assert_eq!(shares.len(), fraudsense_actors::features::MODEL_WIDTH);
    let total: f64 = shares.values().filter_map(|v| v.as_f64()).sum();
    assert!((total - anomaly).abs() < 1e-9, "contributions {total} vs anomaly {anomaly}");
    let probability = view["score"]["model"]["probability"].as_f64().unwrap_or(-1.0);
    assert_eq!(view["score"]["score"].as_f64(), Some(probability), "no rule fired: the model decides");
    assert_eq!(view["score"]["thresholds"]["high"], 0.8);
    assert_eq!(view["alerts"], serde_json::json!([]));

    // Both binaries export Prometheus metrics (worker on its own port).
    let worker = p.node.as_ref().map(|n| n.addr()).unwrap_or_else(|| panic!("no worker"));
    let text = p.http.get(format!("http://{worker}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let text = text.text().await.unwrap_or_default();
    for name in
        ["transactions_processed_total", "transaction_processing_seconds_bucket", "worker_account_actors"]
    {
        assert!(text.contains(name), "worker /metrics lacks {name}:\n{text}");
    }
    let text = p.request(reqwest::Method::GET, "/metrics", None).await.text().await.unwrap_or_default();
    assert!(text.contains("transactions_ingested_total{outcome=\"accepted\"}"), "api /metrics:\n{text}");
    p.teardown().await;
}

#[tokio::test]
async fn the_same_transaction_twice_is_recorded_and_counted_once() {
    let p = spawn_pipeline().await;
    let body = transaction("dup-1", "acct-dup", "40", "2026-11-20T09:00:00Z");
    assert_eq!(p.post(&body).await, 202);
    assert_eq!(p.post(&body).await, 202, "a client retry gets the same answer");
    // The worker must also absorb a second delivery that got past the api (redelivery).
    p.publish_direct(&body).await;
    // Same account, so the worker handles it strictly after both copies of dup-1.
    let sentinel = transaction("dup-2", "acct-dup", "41", "2026-11-20T09:05:00Z");
    assert_eq!(p.post(&sentinel).await, 202);
    let view = p.scored("dup-2").await;
    assert_eq!(
        view["score"]["features"]["tx_count_1h"], 2,
        "the redelivered copy must not be counted twice in the window"
    );
    assert_eq!(p.count("SELECT count(*) FROM transactions WHERE transaction_id = $1", "dup-1").await, 1);
    assert_eq!(p.count("SELECT count(*) FROM scores WHERE transaction_id = $1", "dup-1").await, 1);
    p.teardown().await;
}

#[tokio::test]
async fn a_high_risk_transaction_raises_exactly_one_alert() {
    let p = spawn_pipeline().await;
    let body = transaction("high-1", "acct-h", "25000", "2026-11-20T09:00:00Z");
    assert_eq!(p.post(&body).await, 202);
    p.publish_direct(&body).await;
    assert_eq!(p.post(&transaction("high-2", "acct-h", "1", "2026-11-20T09:01:00Z")).await, 202);
    p.scored("high-2").await;
    let view = p.scored("high-1").await;
    assert_eq!(view["score"]["risk_label"], "HIGH");
    assert_eq!(view["score"]["reasons"][0]["code"], "HIGH_AMOUNT");
    assert_eq!(view["alerts"].as_array().map(Vec::len), Some(1));
    assert_eq!(view["alerts"][0]["reason"], "HIGH_AMOUNT");
    assert_eq!(p.count("SELECT count(*) FROM alerts WHERE transaction_id = $1", "high-1").await, 1);
    assert_eq!(p.count("SELECT count(*) FROM alerts WHERE account_id = $1", "acct-h").await, 1);
    p.teardown().await;
}

#[tokio::test]
async fn a_transaction_accepted_while_no_worker_runs_waits_and_is_scored_later() {
    let mut p = spawn_api_only().await;
    assert_eq!(p.post(&transaction("late-1", "acct-l", "60", "2026-11-20T09:00:00Z")).await, 202);
    assert_eq!(p.env.queued_transactions().await.unwrap_or_default(), 1);
    let (status, waiting) = p.get("late-1").await;
    assert_eq!((status, waiting["status"].as_str()), (200, Some("queued")), "accepted, not yet scored");

    p.start_worker().await;
    let view = p.scored("late-1").await;
    assert_eq!(view["score"]["risk_label"], "LOW");
    eventually(DEADLINE, "the queue to drain", || async {
        Ok((p.env.queued_transactions().await? == 0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    p.teardown().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_does_not_block_the_others() {
    let p = spawn_pipeline().await;
    let topology = p.env.topology();
    let (_conn, channel) = p.env.amqp().await.unwrap_or_else(|e| panic!("{e:#}"));
    // A well-formed event with a version this build does not know is refused too.
    let mut future = serde_json::to_value(TransactionCreated::new(
        serde_json::from_value(serde_json::json!({
            "transaction_id": "v9", "account_id": "a", "amount": "1", "currency": "USD",
            "timestamp": "2026-11-20T09:00:00Z", "merchant_id": "m", "geo_lat": null, "geo_lon": null,
            "country": null, "channel": null, "metadata": null
        }))
        .unwrap_or_else(|e| panic!("{e}")),
        serde_json::json!({}),
        chrono::Utc::now(),
    ))
    .unwrap_or_default();
    future["schema_version"] = 2.into();
    let future = future.to_string();
    for body in [&b"not json"[..], br#"{"schema_version": 99}"#, future.as_bytes()] {
        channel
            .basic_publish(
                topology.transactions_exchange.as_str().into(),
                TRANSACTION_CREATED.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    assert_eq!(p.post(&transaction("after-poison", "acct-p", "5", "2026-11-20T09:00:00Z")).await, 202);
    p.scored("after-poison").await;
    eventually(DEADLINE, "three dead letters", || async {
        Ok((p.env.ready_messages(&topology.dead_letter_queue).await? == 3).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(p.get("v9").await.0, 404);
    p.teardown().await;
}

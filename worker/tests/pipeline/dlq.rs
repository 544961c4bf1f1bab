use fraudsense_actors::{TransactionCreated, testing::eventually, topology::TRANSACTION_CREATED};
use fraudsense_worker::dlq;
use lapin::{BasicProperties, options::BasicPublishOptions};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, spawn_pipeline, transaction};

#[tokio::test]
async fn dead_letters_can_be_listed_replayed_and_purged() {
    let p = spawn_pipeline().await;
    let topology = p.env.topology();
    let (_conn, channel) = p.env.amqp().await.unwrap_or_else(|e| panic!("{e:#}"));
    // A poison message (the worker dead-letters it) ...
    channel
        .basic_publish(
            topology.transactions_exchange.as_str().into(),
            TRANSACTION_CREATED.into(),
            BasicPublishOptions::default(),
            b"definitely not json",
            BasicProperties::default().with_delivery_mode(2).with_message_id("poison-1".into()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // ... and a good one that was dead-lettered earlier (say, during an incident).
    let body = transaction("dlq-good", "acct-dlq", "15", "2026-11-20T09:00:00Z");
    let tx =
        fraudsense_actors::Transaction::parse(&body, chrono::Utc::now()).unwrap_or_else(|e| panic!("{e:?}"));
    let event =
        serde_json::to_vec(&TransactionCreated::new(tx, body, chrono::Utc::now())).unwrap_or_default();
    channel
        .basic_publish(
            topology.dead_letter_exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &event,
            BasicProperties::default().with_delivery_mode(2).with_message_id("dlq-good".into()),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let dead = async |n: u32| {
        eventually(DEADLINE, &format!("{n} dead letters"), || async {
            Ok((p.env.ready_messages(&topology.dead_letter_queue).await? == n).then_some(()))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    };
    dead(2).await;

    // Over HTTP, as an admin: peek (changes nothing), replay, purge.
    let listed: Value =
        p.request(Method::GET, "/admin/dlq?limit=10", None).await.json().await.unwrap_or_default();
    assert_eq!(listed["depth"], 2, "{listed}");
    let letters = listed["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(letters.len(), 2, "{letters:?}");
    let poison = letters.iter().find(|l| l["message_id"] == "poison-1");
    assert_eq!(poison.map(|l| l["reason"].clone()), Some(json!("rejected")));
    assert_eq!(poison.map(|l| l["body"].clone()), Some(json!("definitely not json")));
    let good = letters.iter().find(|l| l["message_id"] == "dlq-good");
    assert_eq!(good.map(|l| l["body"]["transaction"]["transaction_id"].clone()), Some(json!("dlq-good")));
    dead(2).await; // listing changed nothing

    let replayed = p.request(Method::POST, "/admin/dlq/replay", Some(&json!({"limit": 10}))).await;
    assert_eq!(replayed.status().as_u16(), 200);
    assert_eq!(replayed.json::<Value>().await.unwrap_or_default()["count"], 2, "replayed");
    p.scored("dlq-good").await;
    dead(1).await; // the poison message is poison again

    // Purging is irreversible: it must be confirmed.
    let unconfirmed = p.request(Method::POST, "/admin/dlq/purge", Some(&json!({}))).await;
    assert_eq!(unconfirmed.status().as_u16(), 422);
    dead(1).await;
    let purged = p.request(Method::POST, "/admin/dlq/purge", Some(&json!({"confirm": true}))).await;
    assert_eq!(purged.json::<Value>().await.unwrap_or_default()["count"], 1, "purged");
    dead(0).await;

    // Both are in the audit trail: who, and the queue before and after.
    let audited = p
        .count(
            "SELECT count(*) FROM audit_log WHERE actor = 'test' AND action = ANY(string_to_array($1, ',')) \
             AND before ? 'dead_letters' AND (after->>'replayed' = '2' OR after->>'purged' = '1')",
            "dlq.replay,dlq.purge",
        )
        .await;
    assert_eq!(audited, 2);
    // The command line does the same, as cli:<login>.
    assert_eq!(dlq::replay(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}")), 0);
    assert_eq!(dlq::list(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}")), []);
    let cli = p
        .count("SELECT count(*) FROM audit_log WHERE actor LIKE $1 AND action = 'dlq.replay'", "cli:%")
        .await;
    assert_eq!(cli, 1);
    p.teardown().await;
}

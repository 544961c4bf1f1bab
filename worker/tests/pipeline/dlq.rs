use fraudsense_actors::{TransactionCreated, testing::eventually, topology::TRANSACTION_CREATED};
use fraudsense_worker::dlq;
use lapin::{BasicProperties, options::BasicPublishOptions};

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

    let letters = dlq::list(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(letters.len(), 2, "{letters:?}");
    let poison = letters.iter().find(|l| l.message_id.as_deref() == Some("poison-1"));
    assert_eq!(poison.and_then(|l| l.reason.as_deref()), Some("rejected"));
    assert_eq!(poison.map(|l| l.body.clone()), Some(serde_json::json!("definitely not json")));
    let good = letters.iter().find(|l| l.message_id.as_deref() == Some("dlq-good"));
    assert_eq!(
        good.map(|l| l.body["transaction"]["transaction_id"].clone()),
        Some(serde_json::json!("dlq-good"))
    );
    dead(2).await; // listing changed nothing

    let replayed = dlq::replay(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(replayed, 2, "replayed");
    p.scored("dlq-good").await;
    dead(1).await; // the poison message is poison again

    let purged = dlq::purge(&p.env.settings).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(purged, 1, "purged");
    dead(0).await;
    p.teardown().await;
}

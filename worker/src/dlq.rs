//! Operator tools for the dead-letter queue: inspect, replay, purge.
//!
//! `list` never removes anything (messages are read unacknowledged and returned when the
//! channel closes); `replay` republishes each message to the transactions exchange, waits for
//! the broker's confirm and only then removes it from the dead-letter queue; `purge` empties it.

use std::time::Duration;

use anyhow::Context;
use fraudsense_actors::{
    Settings,
    consumer::RETRIES_HEADER,
    topology::{TRANSACTION_CREATED, Topology},
};
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use secrecy::ExposeSecret;
use serde::Serialize;
use serde_json::Value;

/// Longest any single broker operation may take here.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// One dead-lettered message, as `dlq list` prints it (one JSON object per line).
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    /// The publisher's message id (the transaction id for api-published messages).
    pub message_id: Option<String>,
    /// Why the broker dead-lettered it (`rejected`: undecodable; `delivery_limit`: kept failing).
    pub reason: Option<String>,
    /// How many times it was dead-lettered.
    pub count: Option<i64>,
    /// The queue it was dead-lettered from.
    pub queue: Option<String>,
    /// The body: JSON if it parses, else the bytes as lossy UTF-8.
    pub body: Value,
}

async fn open(settings: &Settings) -> anyhow::Result<(Connection, Channel, Topology)> {
    let connection = tokio::time::timeout(
        OP_TIMEOUT,
        Connection::connect(settings.amqp.url.expose_secret(), ConnectionProperties::default()),
    )
    .await
    .context("connecting to RabbitMQ timed out")?
    .context("connecting to RabbitMQ")?;
    let channel = connection.create_channel().await?;
    let topology = Topology::from_settings(&settings.amqp);
    topology.declare(&channel).await.context("declaring the topology")?;
    Ok((connection, channel, topology))
}

/// Up to `limit` dead letters, oldest first, left in place.
pub async fn list(settings: &Settings, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    let (connection, channel, topology) = open(settings).await?;
    let mut letters = Vec::new();
    while letters.len() < limit {
        let got = channel
            .basic_get(topology.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?;
        let Some(message) = got else { break };
        letters.push(describe(&message.delivery.properties, &message.delivery.data));
    }
    // Closing without acking returns every message we looked at.
    let _ = connection.close(200, "dlq list done".into()).await;
    Ok(letters)
}

/// Republishes up to `limit` of the dead letters present now; returns how many. (Messages
/// that fail again while we replay come back behind us and are not replayed twice.)
pub async fn replay(settings: &Settings, limit: usize) -> anyhow::Result<usize> {
    let (connection, channel, topology) = open(settings).await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let present = channel
        .queue_declare(topology.dead_letter_queue.as_str().into(), passive, FieldTable::default())
        .await?
        .message_count();
    let limit = limit.min(usize::try_from(present).unwrap_or(usize::MAX));
    channel.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut replayed = 0;
    while replayed < limit {
        let got = channel
            .basic_get(topology.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?;
        let Some(message) = got else { break };
        let delivery = message.delivery;
        let original = &delivery.properties;
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = original.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        if let Some(content_type) = original.content_type() {
            properties = properties.with_content_type(content_type.clone());
        }
        // Keep the shard key (so it lands on its account's shard); drop the broker's death
        // records and our retry count, so it gets a fresh set of attempts.
        let mut headers = FieldTable::default();
        for (key, value) in original.headers().as_ref().map(|h| h.inner().clone()).unwrap_or_default() {
            if key.as_str() != "x-death"
                && key.as_str() != RETRIES_HEADER
                && !key.as_str().starts_with("x-first-death")
            {
                headers.insert(key, value);
            }
        }
        properties = properties.with_headers(headers);
        let confirm = tokio::time::timeout(OP_TIMEOUT, async {
            channel
                .basic_publish(
                    topology.transactions_exchange.as_str().into(),
                    TRANSACTION_CREATED.into(),
                    BasicPublishOptions::default(),
                    &delivery.data,
                    properties,
                )
                .await?
                .await
        })
        .await
        .context("the broker did not confirm the replay")??;
        anyhow::ensure!(confirm.is_ack(), "the broker refused the replayed message");
        // Only now is it safe to drop the dead letter.
        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
        replayed += 1;
    }
    let _ = connection.close(200, "dlq replay done".into()).await;
    Ok(replayed)
}

/// Deletes every dead letter; returns how many there were.
pub async fn purge(settings: &Settings) -> anyhow::Result<u32> {
    let (connection, channel, topology) = open(settings).await?;
    let purged =
        channel.queue_purge(topology.dead_letter_queue.as_str().into(), QueuePurgeOptions::default()).await?;
    let _ = connection.close(200, "dlq purge done".into()).await;
    Ok(purged)
}

fn describe(properties: &BasicProperties, data: &[u8]) -> DeadLetter {
    let death = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-death").cloned())
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().cloned(),
            _ => None,
        })
        .and_then(|v| match v {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .unwrap_or_default();
    DeadLetter {
        message_id: properties.message_id().as_ref().map(|s| s.to_string()),
        reason: text(&death, "reason"),
        count: match death.inner().get("count") {
            Some(AMQPValue::LongLongInt(n)) => Some(*n),
            Some(AMQPValue::LongInt(n)) => Some(i64::from(*n)),
            _ => None,
        },
        queue: text(&death, "queue"),
        body: serde_json::from_slice(data)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into())),
    }
}

fn text(table: &FieldTable, key: &str) -> Option<String> {
    match table.inner().get(key) {
        Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        Some(AMQPValue::ShortString(s)) => Some(s.to_string()),
        _ => None,
    }
}

//! The dead-letter queue, for operators: inspect, replay, purge — from the worker's `dlq`
//! command or the api's `/admin/dlq` routes.
//!
//! [`peek`] never removes anything (messages are read unacknowledged and returned when the
//! channel closes); [`replay`] republishes each message to the transactions exchange, waits
//! for the broker's confirm and only then removes it from the dead-letter queue; [`purge`]
//! empties it. [`replay_audited`] and [`purge_audited`] do the same and record who did it in
//! the audit trail, with the queue depth before and after.

use std::time::Duration;

use deadpool_postgres::Pool;
use serde_json::json;

use crate::{
    auth::Principal,
    consumer::RETRIES_HEADER,
    settings::AmqpSettings,
    store::{
        StoreError,
        audit::{self, Entry},
    },
    topology::{TRANSACTION_CREATED, Topology},
};
use lapin::{
    BasicProperties, Channel, Connection,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
        QueuePurgeOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use serde_json::Value;

/// Longest any single broker operation may take here.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why an operation on the dead-letter queue failed; nothing is lost either way (a message
/// leaves the queue only after its replay was confirmed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The broker refused or dropped the operation.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// The broker did not answer in time.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    /// The broker nacked a replayed message (it stays dead-lettered).
    #[error("the broker refused the replayed message")]
    Refused,
    /// The audit trail could not be written.
    #[error("audit trail: {0}")]
    Store(#[from] StoreError),
}

/// One dead-lettered message, as `dlq list` prints it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// One short broker connection for one operator action.
struct Session {
    connection: Connection,
    channel: Channel,
    topology: Topology,
}

impl Session {
    async fn open(amqp: &AmqpSettings) -> Result<Self, DlqError> {
        let connection = tokio::time::timeout(OP_TIMEOUT, crate::topology::connect_amqp(amqp))
            .await
            .map_err(|_| DlqError::Timeout(OP_TIMEOUT))??;
        let channel = connection.create_channel().await?;
        let topology = Topology::from_settings(amqp);
        topology.declare(&channel).await?;
        Ok(Self { connection, channel, topology })
    }

    /// Messages in the dead-letter queue now.
    async fn depth(&self) -> Result<u32, DlqError> {
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        Ok(self
            .channel
            .queue_declare(self.topology.dead_letter_queue.as_str().into(), passive, FieldTable::default())
            .await?
            .message_count())
    }

    /// Closing without acking returns every message read but not acknowledged.
    async fn close(self, done: &str) {
        let _ = self.connection.close(200, done.into()).await;
    }
}

/// The queue's depth and up to `limit` dead letters, oldest first, left in place.
pub async fn peek(amqp: &AmqpSettings, limit: usize) -> Result<(u32, Vec<DeadLetter>), DlqError> {
    let session = Session::open(amqp).await?;
    let depth = session.depth().await?;
    let mut letters = Vec::new();
    while letters.len() < limit {
        let got = session
            .channel
            .basic_get(session.topology.dead_letter_queue.as_str().into(), BasicGetOptions { no_ack: false })
            .await?;
        let Some(message) = got else { break };
        letters.push(describe(&message.delivery.properties, &message.delivery.data));
    }
    session.close("dlq list done").await;
    Ok((depth, letters))
}

/// Republishes up to `limit` of the dead letters present now; returns how many. (Messages
/// that fail again while we replay come back behind us and are not replayed twice.)
pub async fn replay(amqp: &AmqpSettings, limit: usize) -> Result<usize, DlqError> {
    let session = Session::open(amqp).await?;
    let replayed = replay_on(&session, limit).await;
    session.close("dlq replay done").await;
    replayed
}

async fn replay_on(session: &Session, limit: usize) -> Result<usize, DlqError> {
    let Session { channel, topology, .. } = session;
    let present = session.depth().await?;
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
        .map_err(|_| DlqError::Timeout(OP_TIMEOUT))??;
        if !confirm.is_ack() {
            return Err(DlqError::Refused);
        }
        // Only now is it safe to drop the dead letter.
        channel.basic_ack(delivery.delivery_tag, BasicAckOptions::default()).await?;
        replayed += 1;
    }
    Ok(replayed)
}

/// Deletes every dead letter; returns how many there were.
pub async fn purge(amqp: &AmqpSettings) -> Result<u32, DlqError> {
    let session = Session::open(amqp).await?;
    let purged = session
        .channel
        .queue_purge(session.topology.dead_letter_queue.as_str().into(), QueuePurgeOptions::default())
        .await;
    session.close("dlq purge done").await;
    Ok(purged?)
}

/// [`replay`], recorded in the audit trail as `actor`'s `dlq.replay` with the queue depth
/// before and after. The database is reached first, so an action is never taken that could
/// not be recorded because the database was down.
pub async fn replay_audited(
    pool: &Pool,
    amqp: &AmqpSettings,
    limit: usize,
    actor: &Principal,
) -> Result<usize, DlqError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let db = client.transaction().await.map_err(StoreError::from)?;
    let session = Session::open(amqp).await?;
    let before = session.depth().await?;
    let replayed = replay_on(&session, limit).await;
    let after = session.depth().await.ok();
    session.close("dlq replay done").await;
    let outcome = match &replayed {
        Ok(n) => json!({"replayed": n, "dead_letters": after}),
        Err(error) => json!({"error": error.to_string(), "dead_letters": after}),
    };
    record(db, actor, "dlq.replay", amqp, json!({"dead_letters": before, "limit": limit}), outcome).await?;
    replayed
}

/// [`purge`], recorded in the audit trail as `actor`'s `dlq.purge` (the broker's purge
/// count is the depth before).
pub async fn purge_audited(pool: &Pool, amqp: &AmqpSettings, actor: &Principal) -> Result<u32, DlqError> {
    let mut client = pool.get().await.map_err(StoreError::from)?;
    let db = client.transaction().await.map_err(StoreError::from)?;
    let purged = purge(amqp).await?;
    let before = purged;
    record(db, actor, "dlq.purge", amqp, json!({"dead_letters": before}), json!({"purged": purged})).await?;
    Ok(purged)
}

async fn record(
    db: deadpool_postgres::Transaction<'_>,
    actor: &Principal,
    action: &'static str,
    amqp: &AmqpSettings,
    before: Value,
    after: Value,
) -> Result<(), DlqError> {
    let subject = Topology::from_settings(amqp).dead_letter_queue;
    let entry = Entry { actor, action, subject, before: Some(before), after: Some(after) };
    let written = async {
        audit::record(&db, &entry).await?;
        db.commit().await.map_err(StoreError::from)
    };
    written.await.map_err(|error| {
        // The broker already acted: the log line is the record of last resort.
        tracing::error!(%error, actor = actor.subject, action, "dead-letter action done but not audited");
        DlqError::Store(error)
    })
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

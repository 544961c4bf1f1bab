//! The broker's raw ceiling: lapin alone, persistent messages with publisher confirms into a
//! temporary durable quorum queue, consumed with manual acks on another connection.

use std::{collections::VecDeque, time::Duration};

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Confirmation, Connection, PublisherConfirm,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use tokio::time::Instant;

use fraudsense_actors::{settings::AmqpSettings, topology::connect_amqp};

use crate::load::bodies::Bodies;

/// Most publishes awaiting their confirm at once.
pub const CONFIRM_WINDOW: usize = 1000;
/// The consumer's prefetch.
pub const PREFETCH: u16 = 500;
/// The consumer acks every this many deliveries (`multiple`), and the last one.
const ACK_EVERY: u64 = 100;
/// Longest a measurement may take.
const TIMEOUT: Duration = Duration::from_secs(300);

/// What the raw measurement found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Ceiling {
    /// `quorum`.
    pub queue_type: String,
    /// Messages published and consumed.
    pub messages: u64,
    /// Size of each message body: one serialized `transaction.created` event.
    pub body_bytes: usize,
    /// Most unconfirmed publishes at once.
    pub confirm_window: usize,
    /// The consumer's prefetch.
    pub prefetch: u16,
    /// Messages confirmed per second (first publish → last confirm).
    pub publish_rate: f64,
    /// Messages consumed per second (first publish → last delivery acked).
    pub consume_rate: f64,
    /// The lower of the two: the "raw ceiling (msg/s)".
    pub end_to_end_rate: f64,
    /// First publish → last ack.
    pub seconds: f64,
}

/// One serialized `transaction.created` event as the api publishes it for a load-generator
/// payment (same body generator, same wrapper), to size the raw messages.
pub fn sample_event(accounts: usize, now: DateTime<Utc>) -> anyhow::Result<Vec<u8>> {
    let mut bodies = Bodies::new("bench-ceiling-sample", accounts, 500, 0.05, 42);
    let body = bodies.payment(0, now).body;
    let raw: serde_json::Value = serde_json::from_slice(&body).context("sample body")?;
    let tx: fraudsense_actors::Transaction =
        serde_json::from_value(raw.clone()).context("sample transaction")?;
    let event = fraudsense_actors::TransactionCreated::new(tx, raw, now);
    Ok(serde_json::to_vec(&event)?)
}

/// A queue name no one else uses.
fn queue_name() -> String {
    format!("fraudsense-bench-ceiling-{}", super::run_suffix('-'))
}

/// Measures the ceiling with `messages` copies of `body` on the broker of `amqp`.
/// The temporary queue is deleted afterwards, whether or not the measurement worked.
pub async fn measure(amqp: &AmqpSettings, messages: u64, body: &[u8]) -> anyhow::Result<Ceiling> {
    if messages == 0 {
        bail!("no messages to measure with");
    }
    let queue = queue_name();
    let publisher = connect_amqp(amqp).await.context("connecting to RabbitMQ")?;
    let result = tokio::time::timeout(TIMEOUT, measure_on(&publisher, amqp, &queue, messages, body)).await;
    let deleted = delete_queue(&publisher, amqp, &queue).await;
    let _ = publisher.close(200, "bench done".into()).await;
    let ceiling = match result {
        Ok(r) => r?,
        Err(_) => bail!("the raw measurement did not finish within {} s", TIMEOUT.as_secs()),
    };
    deleted.with_context(|| format!("deleting the temporary queue {queue}"))?;
    Ok(ceiling)
}

async fn delete_queue(connection: &Connection, amqp: &AmqpSettings, queue: &str) -> anyhow::Result<()> {
    let delete = async |connection: &Connection| -> anyhow::Result<()> {
        let channel = connection.create_channel().await?;
        channel.queue_delete(queue.into(), QueueDeleteOptions::default()).await?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    };
    if delete(connection).await.is_ok() {
        return Ok(());
    }
    // The first connection may be the one that failed: try once more on a fresh one.
    let fresh = connect_amqp(amqp).await?;
    let result = delete(&fresh).await;
    let _ = fresh.close(200, "bench done".into()).await;
    result
}

async fn measure_on(
    publisher: &Connection,
    amqp: &AmqpSettings,
    queue: &str,
    messages: u64,
    body: &[u8],
) -> anyhow::Result<Ceiling> {
    let channel = publisher.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
    channel.queue_declare(queue.into(), durable, args).await.context("declaring the temporary queue")?;
    channel.confirm_select(ConfirmSelectOptions::default()).await?;

    let consumer_conn = connect_amqp(amqp).await.context("connecting the consumer")?;
    let consumer_channel = consumer_conn.create_channel().await?;
    consumer_channel.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut deliveries = consumer_channel
        .basic_consume(
            queue.into(),
            "fraudsense-bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;

    let start = Instant::now();
    let consume = async {
        let mut received = 0u64;
        while received < messages {
            let delivery = match deliveries.next().await {
                Some(Ok(d)) => d,
                Some(Err(e)) => return Err(anyhow::Error::from(e).context("consuming")),
                None => bail!("the consumer was cancelled after {received} messages"),
            };
            received += 1;
            if received.is_multiple_of(ACK_EVERY) || received == messages {
                consumer_channel.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true }).await?;
            }
        }
        Ok(start.elapsed())
    };
    let publish = async {
        let mut window = VecDeque::with_capacity(CONFIRM_WINDOW);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_type("transaction.created".into());
        for _ in 0..messages {
            if window.len() >= CONFIRM_WINDOW {
                await_confirm(window.pop_front()).await?;
            }
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    properties.clone(),
                )
                .await?;
            window.push_back(confirm);
        }
        while let Some(confirm) = window.pop_front() {
            await_confirm(Some(confirm)).await?;
        }
        anyhow::Ok(start.elapsed())
    };
    let (published, consumed) = tokio::try_join!(publish, consume)?;
    let _ = consumer_conn.close(200, "bench done".into()).await;
    let _ = channel.close(200, "bench done".into()).await;

    let publish_rate = messages as f64 / published.as_secs_f64().max(1e-9);
    let consume_rate = messages as f64 / consumed.as_secs_f64().max(1e-9);
    Ok(Ceiling {
        queue_type: "quorum".into(),
        messages,
        body_bytes: body.len(),
        confirm_window: CONFIRM_WINDOW,
        prefetch: PREFETCH,
        publish_rate,
        consume_rate,
        end_to_end_rate: publish_rate.min(consume_rate),
        seconds: published.max(consumed).as_secs_f64(),
    })
}

async fn await_confirm(confirm: Option<PublisherConfirm>) -> anyhow::Result<()> {
    let Some(confirm) = confirm else { return Ok(()) };
    match confirm.await? {
        Confirmation::Ack(_) => Ok(()),
        Confirmation::Nack(_) => bail!("the broker nacked a message"),
        Confirmation::NotRequested => bail!("confirms are not enabled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_sample_event_is_a_decodable_transaction_created() {
        let body = sample_event(100_000, Utc::now()).unwrap_or_else(|e| panic!("{e:#}"));
        let event = fraudsense_actors::TransactionCreated::decode(&body).unwrap_or_else(|e| panic!("{e}"));
        assert!(event.transaction.transaction_id.starts_with("bench-ceiling-sample-"));
        assert!(body.len() > 200, "{}", body.len());
    }

    #[test]
    fn bench_queue_names_are_distinct() {
        let a = queue_name();
        std::thread::sleep(Duration::from_millis(1));
        assert_ne!(a, queue_name());
        assert!(a.starts_with("fraudsense-bench-ceiling-"));
    }
}

//! Waiting for the pipeline's shard queues to empty between steps.

use std::time::Duration;

use fraudsense_actors::{settings::AmqpSettings, topology::connect_amqp};
use lapin::{Connection, options::QueueDeclareOptions, types::FieldTable};
use tokio::time::Instant;

/// How often the queues are looked at.
const POLL_EVERY: Duration = Duration::from_millis(250);

/// Messages ready in `queues` (passive declares; a missing queue counts as empty).
pub async fn ready(connection: &Connection, queues: &[String]) -> anyhow::Result<u64> {
    let mut total = 0u64;
    for queue in queues {
        // A failed passive declare closes its channel: one channel per look.
        let channel = connection.create_channel().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        if let Ok(q) = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await {
            total += u64::from(q.message_count());
            let _ = channel.close(200, "looked".into()).await;
        }
    }
    Ok(total)
}

/// Waits (at most `timeout`) until `queues` hold no ready message; returns how many were
/// still ready when it stopped waiting (0 once empty).
pub async fn wait_empty(amqp: &AmqpSettings, queues: &[String], timeout: Duration) -> anyhow::Result<u64> {
    let connection = connect_amqp(amqp).await?;
    let deadline = Instant::now() + timeout;
    let left = loop {
        let left = ready(&connection, queues).await?;
        if left == 0 || Instant::now() >= deadline {
            break left;
        }
        tokio::time::sleep(POLL_EVERY).await;
    };
    let _ = connection.close(200, "bench done".into()).await;
    Ok(left)
}

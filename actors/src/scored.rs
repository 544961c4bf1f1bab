//! `transaction.scored`: every committed decision goes out on the transactions exchange with
//! routing key `transaction.scored` (transaction + decision, [`TransactionScored`]), so
//! downstream services (case management, analytics, a data lake) can bind to the decisions
//! without reading PostgreSQL.
//!
//! Delivery is at least once without an outbox table: the alert actor hands each committed
//! batch here instead of acking it; the batch is published with confirms and only then are
//! its deliveries acked. A crash after the commit and before the confirm leaves them
//! unacked, the broker redelivers, the store recognises the transaction, and the event is
//! published again (`redelivered: true`). Publishing never blocks the commit path: batches
//! queue here (bounded by the consumer's prefetch, since nothing is acked before), and a
//! broker that refuses or cannot be reached is retried with backoff before the deliveries
//! are handed back to the broker.

use std::time::Duration;

use chrono::Utc;
use lapin::{BasicProperties, Channel, Connection, options::BasicPublishOptions};
use tokio::{sync::mpsc, task::JoinHandle};
use tracing::Instrument;

use crate::{
    backoff,
    events::{TRANSACTION_SCORED_VERSION, TransactionScored},
    job::{Job, Settlement},
    scoring::Decision,
    settings::{AmqpSettings, Settings},
    store::Recorded,
    topology::Topology,
};

/// Routing key of committed decisions.
pub const TRANSACTION_SCORED: &str = "transaction.scored";
/// Longest the broker may take to confirm one batch.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts at publishing one batch before its deliveries are handed back to the broker.
const ATTEMPTS: u32 = 6;
/// Batches waiting to be published (each holds up to `COMMIT_BATCH_MAX` deliveries).
const QUEUED_BATCHES: usize = 64;

/// A committed batch: its deliveries and the event bodies to publish before acking them.
struct Batch {
    jobs: Vec<Job>,
    bodies: Vec<Vec<u8>>,
}

/// Where the alert actor sends committed batches; cheap to clone.
#[derive(Debug, Clone)]
pub struct ScoredSender(mpsc::Sender<Batch>);

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("jobs", &self.jobs.len()).finish()
    }
}

impl ScoredSender {
    /// Publishes one event per committed decision, then acks the deliveries. Waits while
    /// the publisher is [`QUEUED_BATCHES`] behind; if it has stopped, the deliveries are
    /// handed back to the broker (they come back as redeliveries and are published then).
    pub async fn publish(&self, node_id: &str, committed: Vec<(Job, Decision)>, recorded: &[Recorded]) {
        let decided_at = Utc::now();
        let mut jobs = Vec::with_capacity(committed.len());
        let mut bodies = Vec::with_capacity(committed.len());
        let mut recorded = recorded.iter();
        for (job, decision) in committed {
            // One record per decision (the store's contract); a job without one is still
            // acked below, it just has no event (jobs without bodies come last).
            let Some(recorded) = recorded.next() else {
                jobs.push(job);
                continue;
            };
            let event = TransactionScored {
                schema_version: TRANSACTION_SCORED_VERSION,
                transaction: job.event.transaction.clone(),
                decision,
                alert_id: recorded.alert_id,
                redelivered: !recorded.new_transaction,
                received_at: job.event.received_at,
                decided_at,
                node_id: node_id.to_owned(),
            };
            // These types always serialise (no maps with non-string keys, no failing impls).
            bodies.push(serde_json::to_vec(&event).unwrap_or_default());
            jobs.push(job);
        }
        if let Err(mpsc::error::SendError(batch)) = self.0.send(Batch { jobs, bodies }).await {
            Job::settle_all(batch.jobs, Settlement::Retry);
        }
    }
}

/// The running publisher; stopped when dropped (what it held is redelivered by the broker).
#[derive(Debug)]
pub struct ScoredPublisher {
    sender: ScoredSender,
    task: JoinHandle<()>,
}

impl ScoredPublisher {
    /// Starts publishing on its own broker connection (reconnects with backoff).
    pub fn start(settings: &Settings) -> Self {
        let (tx, rx) = mpsc::channel(QUEUED_BATCHES);
        let topology = Topology::from_settings(&settings.amqp);
        let amqp = settings.amqp.clone();
        let task = tokio::spawn(run(amqp, topology, rx));
        Self { sender: ScoredSender(tx), task }
    }

    /// The handle the alert actor publishes through.
    pub fn sender(&self) -> ScoredSender {
        self.sender.clone()
    }
}

impl Drop for ScoredPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(amqp: AmqpSettings, topology: Topology, mut batches: mpsc::Receiver<Batch>) {
    let mut link: Option<(Connection, Channel)> = None;
    while let Some(batch) = batches.recv().await {
        let mut attempt = 0u32;
        let settlement = loop {
            if link.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
                link = topology
                    .open_confirming(&amqp)
                    .await
                    .inspect_err(|error| tracing::warn!(component = "scored", %error, "transactions exchange unreachable"))
                    .ok();
            }
            let outcome = match &link {
                Some((_, channel)) => publish(channel, &topology, &batch).await,
                None => Err("not connected".to_owned()),
            };
            match outcome {
                Ok(()) => {
                    metrics::counter!("transactions_scored_published_total")
                        .increment(batch.jobs.len() as u64);
                    break Settlement::Ack;
                }
                Err(error) => {
                    attempt += 1;
                    metrics::counter!("scored_publish_failures_total").increment(1);
                    tracing::warn!(
                        component = "scored",
                        error,
                        attempt,
                        size = batch.jobs.len(),
                        "transaction.scored not published"
                    );
                    link = None;
                    if attempt >= ATTEMPTS {
                        // Committed but not announced: the broker redelivers, the store
                        // recognises the transaction, and the event goes out then.
                        break Settlement::Retry;
                    }
                    tokio::time::sleep(backoff::exponential(
                        Duration::from_millis(100),
                        Duration::from_secs(5),
                        attempt - 1,
                    ))
                    .await;
                }
            }
        };
        Job::settle_all(batch.jobs, settlement);
    }
}

/// Publishes every body of the batch, then waits for all the confirms.
async fn publish(channel: &Channel, topology: &Topology, batch: &Batch) -> Result<(), String> {
    let mut confirms = Vec::with_capacity(batch.bodies.len());
    for (job, body) in batch.jobs.iter().zip(&batch.bodies) {
        let span = tracing::info_span!(
            parent: &job.span,
            "publish transaction.scored",
            component = "scored",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %topology.transactions_exchange,
        );
        let mut headers = lapin::types::FieldTable::default();
        crate::telemetry::propagation::inject_amqp(&span, &mut headers);
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(job.event.transaction.transaction_id.as_str().into())
            .with_type(TRANSACTION_SCORED.into())
            .with_headers(headers);
        let confirm = channel
            .basic_publish(
                topology.transactions_exchange.as_str().into(),
                TRANSACTION_SCORED.into(),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .instrument(span)
            .await
            .map_err(|e| e.to_string())?;
        confirms.push(confirm);
    }
    Topology::confirm_all(confirms, CONFIRM_TIMEOUT).await
}

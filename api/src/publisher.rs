//! Publishing to RabbitMQ with publisher confirms: a `202` is only ever sent for a message
//! the broker has confirmed as persisted.
//!
//! - **Pipelined**: every request publishes on one shared confirm-mode channel and awaits
//!   its own confirm, so any number of confirms are in flight at once.
//! - **Bounded**: no confirm within `PUBLISH_CONFIRM_TIMEOUT_MS`, a blocked connection
//!   (`connection.blocked`, the broker's memory or disk alarm) or no connection at all is
//!   an error at once, which the handler turns into `503` + `Retry-After`.
//! - **Self-healing**: a lost connection is re-established single-flight with exponential
//!   backoff (100 ms … 5 s), both on demand and by a background task, so `/ready` recovers
//!   without traffic.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use fraudsense_actors::{
    events::TransactionCreated,
    settings::AmqpSettings,
    topology::{SHARD_KEY_HEADER, TRANSACTION_CREATED, Topology},
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};

/// Longest a (re)connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// First reconnect delay after a failure; doubles per failure up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// A confirm timeout this recent makes `/ready` report the broker as down.
const DEGRADED_FOR: Duration = Duration::from_secs(10);
/// How often the background task checks the connection.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker could be had.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
    /// The broker blocked publishing (resource alarm).
    #[error("broker blocked publishing")]
    Blocked,
    /// The broker did not confirm within the timeout.
    #[error("broker did not confirm within {0:?}")]
    Timeout(Duration),
    /// The broker refused the message (nack) or could not route it.
    #[error("broker rejected the message: {0}")]
    Rejected(&'static str),
    /// The message could not be encoded.
    #[error("encoding failed: {0}")]
    Encode(#[from] serde_json::Error),
}

struct Link {
    connection: Connection,
    channel: Channel,
}

impl Link {
    fn usable(&self) -> bool {
        self.channel.status().connected() && self.connection.status().connected()
    }
}

/// Shared publisher, cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Health {
    /// Consecutive failed connects (drives the backoff).
    failures: u32,
    /// When the last connect failed.
    failed_at: Option<Instant>,
    /// When a confirm last timed out (cleared by the next confirm).
    timed_out_at: Option<Instant>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    link: Mutex<Option<Arc<Link>>>,
    health: Mutex<Health>,
    reconnect: tokio::sync::Mutex<()>,
    in_flight: AtomicUsize,
}

impl Publisher {
    /// A publisher for `topology`; connects on first use (see [`Publisher::connect`]).
    pub fn new(settings: AmqpSettings, topology: Topology) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                topology,
                link: Mutex::new(None),
                health: Mutex::new(Health::default()),
                reconnect: tokio::sync::Mutex::new(()),
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Connects now and declares the topology; start-up calls this so messages route
    /// to the queue even before any worker has run.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.link().await.map(|_| ())
    }

    /// Keeps the connection up in the background until every publisher handle is dropped.
    pub fn spawn_watchdog(&self) -> tokio::task::JoinHandle<()> {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(WATCH_EVERY).await;
                let Some(inner) = weak.upgrade() else { return };
                let publisher = Publisher { inner };
                if !publisher.current().is_some_and(|l| l.usable()) {
                    let _ = publisher.link().await;
                }
            }
        })
    }

    /// True if the broker is connected, not blocking us, and confirming.
    pub async fn is_ready(&self) -> bool {
        let recently_timed_out = self.health().timed_out_at.is_some_and(|at| at.elapsed() < DEGRADED_FOR);
        match self.link().await {
            Ok(link) => !link.connection.status().blocked() && !recently_timed_out,
            Err(_) => false,
        }
    }

    /// Whether a usable connection exists right now (never attempts one).
    pub fn connected(&self) -> bool {
        self.current().is_some_and(|l| l.usable())
    }

    /// Publishes awaiting their confirm right now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// How long a publish waits for its confirm.
    pub fn confirm_timeout(&self) -> Duration {
        self.inner.settings.confirm_timeout
    }

    /// Publishes a persistent `transaction.created` and waits for the broker's confirm.
    /// The message's headers carry this span's W3C trace context to the worker.
    #[tracing::instrument(
        name = "publish transaction.created",
        skip_all,
        fields(
            component = "api",
            otel.kind = "producer",
            messaging.system = "rabbitmq",
            messaging.destination.name = %self.inner.topology.transactions_exchange,
            messaging.rabbitmq.destination.routing_key = TRANSACTION_CREATED,
            messaging.message.id = %event.transaction.transaction_id,
        )
    )]
    pub async fn publish(&self, event: &TransactionCreated) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(event)?;
        let link = self.link().await?;
        if link.connection.status().blocked() {
            return Err(PublishError::Blocked);
        }
        let id = event.transaction.transaction_id.as_str();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.into())
            .with_type(TRANSACTION_CREATED.into())
            .with_timestamp(u64::try_from(event.received_at.timestamp()).unwrap_or_default())
            .with_headers(self.headers(event));
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let timeout = self.inner.settings.confirm_timeout;
        let _in_flight = InFlight::enter(&self.inner.in_flight);
        let started = Instant::now();
        let confirmed = tokio::time::timeout(timeout, async {
            link.channel
                .basic_publish(
                    self.inner.topology.transactions_exchange.as_str().into(),
                    TRANSACTION_CREATED.into(),
                    options,
                    &payload,
                    properties,
                )
                .await?
                .await
        })
        .await;
        match confirmed {
            Err(_) => {
                self.health().timed_out_at = Some(Instant::now());
                Err(PublishError::Timeout(timeout))
            }
            Ok(Err(error)) => {
                self.forget(&link);
                Err(PublishError::Unreachable(error.to_string()))
            }
            Ok(Ok(confirmation)) => {
                metrics::histogram!("amqp_publish_confirm_seconds").record(started.elapsed().as_secs_f64());
                self.health().timed_out_at = None;
                match confirmation {
                    Confirmation::Ack(None) => Ok(()),
                    Confirmation::Ack(Some(_)) => Err(PublishError::Rejected("unroutable")),
                    Confirmation::Nack(_) => Err(PublishError::Rejected("nacked")),
                    Confirmation::NotRequested => Err(PublishError::Rejected("confirms not enabled")),
                }
            }
        }
    }

    /// The header the consistent-hash exchange shards on, and the trace context.
    fn headers(&self, event: &TransactionCreated) -> FieldTable {
        let mut headers = FieldTable::default();
        let key = self.inner.settings.shard_key.value(&event.transaction);
        headers.insert(SHARD_KEY_HEADER.into(), AMQPValue::LongString(key.as_str().into()));
        fraudsense_actors::telemetry::propagation::inject_amqp(&tracing::Span::current(), &mut headers);
        headers
    }

    /// Closes the connection (shutdown).
    pub async fn close(&self) {
        if let Some(link) = self.current() {
            let _ = link.connection.close(200, "api stopping".into()).await;
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.inner.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> Option<Arc<Link>> {
        self.inner.link.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn forget(&self, dead: &Arc<Link>) {
        let mut link = self.inner.link.lock().unwrap_or_else(PoisonError::into_inner);
        if link.as_ref().is_some_and(|l| Arc::ptr_eq(l, dead)) {
            *link = None;
        }
    }

    /// The open link, reconnecting (single-flight, with backoff) if it is gone.
    async fn link(&self) -> Result<Arc<Link>, PublishError> {
        if let Some(link) = self.current().filter(|l| l.usable()) {
            return Ok(link);
        }
        let _single_flight = self.inner.reconnect.lock().await;
        if let Some(link) = self.current().filter(|l| l.usable()) {
            return Ok(link);
        }
        let waiting = {
            let h = self.health();
            h.failed_at.is_some_and(|at| at.elapsed() < backoff(h.failures))
        };
        if waiting {
            return Err(PublishError::Unreachable("waiting before the next reconnect attempt".into()));
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await {
            Ok(Ok(link)) => {
                let link = Arc::new(link);
                *self.inner.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
                let mut h = self.health();
                h.failures = 0;
                h.failed_at = None;
                tracing::info!(component = "publisher", "connected to broker");
                Ok(link)
            }
            failed => {
                let why = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                };
                let mut h = self.health();
                h.failures = h.failures.saturating_add(1);
                h.failed_at = Some(Instant::now());
                tracing::warn!(component = "publisher", error = %why, failures = h.failures, "broker connection failed");
                Err(PublishError::Unreachable(why))
            }
        }
    }

    async fn open(&self) -> Result<Link, lapin::Error> {
        let connection = fraudsense_actors::topology::connect_amqp(&self.inner.settings).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        self.inner.topology.declare(&channel).await?;
        Ok(Link { connection, channel })
    }
}

/// Counts a publish as in flight for as long as it lives (also when its future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Delay before reconnect attempt number `failures + 1` (none before the first).
fn backoff(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => fraudsense_actors::backoff::exponential(MIN_BACKOFF, MAX_BACKOFF, n - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_is_exponential_and_capped() {
        assert_eq!(backoff(0), Duration::ZERO);
        assert_eq!(backoff(1), MIN_BACKOFF);
        assert_eq!(backoff(2), MIN_BACKOFF * 2);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}

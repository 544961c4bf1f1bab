//! Alert delivery: every committed alert reaches the Redis pub/sub channel `{p}alerts` (live
//! dashboards and WebSockets) and the `{p}alerts` topic exchange with routing key
//! `alert.<risk>` (downstream services), at least once.
//!
//! The alert row is the outbox: it is written in the same PostgreSQL transaction as the
//! decision with `published_at` unset. The publisher takes unpublished alerts in id order
//! (`FOR UPDATE SKIP LOCKED`, so several workers share the work without publishing one alert
//! twice), publishes each to RabbitMQ with a confirm and to Redis, and only then sets
//! `published_at`. A crash between publishing and marking means the alert is published
//! again: consumers deduplicate on `alert_id` (the WebSocket replay does). It wakes when the
//! alert actor commits a new alert and sweeps every [`SWEEP_EVERY`] for anything left over
//! (a crash, a broker or Redis outage).

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use fred::{clients::Client, interfaces::PubsubInterface};
use lapin::{BasicProperties, Channel, Connection, options::BasicPublishOptions};
use serde::{Deserialize, Serialize};
use tokio::{sync::Notify, task::JoinHandle};
use tracing::Instrument;

use crate::{
    backoff,
    settings::{AmqpSettings, Settings},
    store::StoreError,
    topology::Topology,
};

/// Longest a pending alert waits when no commit wakes the publisher.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Alerts published per round at most.
const BATCH: i64 = 500;
/// Longest the broker may take to confirm one alert.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// What every alert consumer receives (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertEvent {
    /// Monotonic id: consumers deduplicate and resume on it.
    pub alert_id: i64,
    /// The transaction that raised it.
    pub transaction_id: String,
    /// Its account.
    pub account_id: String,
    /// Its merchant.
    pub merchant_id: String,
    /// Amount (decimal string).
    pub amount: String,
    /// ISO 4217.
    pub currency: String,
    /// LOW, MEDIUM or HIGH.
    pub risk_label: String,
    /// Final fraud probability.
    pub score: f64,
    /// Reason codes of the decision.
    pub reasons: Vec<String>,
    /// The threshold crossed.
    pub threshold: f64,
    /// When the alert was raised.
    pub created_at: DateTime<Utc>,
    /// The trace of the transaction, when tracing is on.
    pub trace_id: Option<String>,
}

impl AlertEvent {
    /// The routing key on the alerts exchange: `alert.high`, `alert.medium`, ...
    pub fn routing_key(&self) -> String {
        format!("alert.{}", self.risk_label.to_ascii_lowercase())
    }
}

/// The columns of an [`AlertEvent`], in [`event`]'s order.
const EVENT_COLUMNS: &str =
    "a.alert_id, a.transaction_id, a.account_id, t.merchant_id, trim_scale(t.amount)::text,
     t.currency, a.risk_label, a.score, a.reason, a.threshold, a.created_at, t.traceparent";

fn event(r: &tokio_postgres::Row) -> AlertEvent {
    AlertEvent {
        alert_id: r.get(0),
        transaction_id: r.get(1),
        account_id: r.get(2),
        merchant_id: r.get(3),
        amount: r.get(4),
        currency: r.get(5),
        risk_label: r.get(6),
        score: r.get(7),
        reasons: r.get::<_, &str>(8).split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
        threshold: r.get(9),
        created_at: r.get(10),
        trace_id: r.get::<_, Option<&str>>(11).and_then(crate::telemetry::propagation::trace_id_of),
    }
}

/// An alert with the `traceparent` of the span that decided its transaction.
fn traced(r: &tokio_postgres::Row) -> (AlertEvent, Option<String>) {
    (event(r), r.get(11))
}

/// Reads up to [`BATCH`] unpublished alerts, locking them for this publisher.
async fn pending(
    db: &deadpool_postgres::Transaction<'_>,
) -> Result<Vec<(AlertEvent, Option<String>)>, StoreError> {
    // Prepared once per connection: planning this join with its row lock took 0.7 ms, four
    // times its execution, on every round (docs/benchmarks.md). Its generic plan is the
    // partial index `alerts_unpublished`, then the transactions key, even on empty tables.
    static PENDING: LazyLock<String> = LazyLock::new(|| {
        format!(
            "SELECT {EVENT_COLUMNS} FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id
             WHERE a.published_at IS NULL ORDER BY a.alert_id LIMIT $1 FOR UPDATE OF a SKIP LOCKED"
        )
    });
    let statement = db.prepare_cached(&PENDING).await?;
    let rows = db.query(&statement, &[&BATCH]).await?;
    Ok(rows.iter().map(traced).collect())
}

/// Committed alerts with an id above `after`, oldest first, at most `limit`: what a
/// reconnecting consumer missed.
pub async fn events_after(pool: &Pool, after: i64, limit: i64) -> Result<Vec<AlertEvent>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!(
                "SELECT {EVENT_COLUMNS} FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id
                 WHERE a.alert_id > $1 ORDER BY a.alert_id LIMIT $2"
            ),
            &[&after, &limit],
        )
        .await?;
    Ok(rows.iter().map(event).collect())
}

/// Why a round of publishing failed (the alerts stay pending).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutboxError {
    /// PostgreSQL.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// RabbitMQ.
    #[error("broker: {0}")]
    Broker(String),
    /// Redis.
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
}

impl From<tokio_postgres::Error> for OutboxError {
    fn from(e: tokio_postgres::Error) -> Self {
        OutboxError::Store(e.into())
    }
}

impl From<deadpool_postgres::PoolError> for OutboxError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        OutboxError::Store(e.into())
    }
}

impl From<lapin::Error> for OutboxError {
    fn from(e: lapin::Error) -> Self {
        OutboxError::Broker(e.to_string())
    }
}

/// Publishes pending alerts until none is left; returns how many it published.
async fn publish_pending(
    pool: &Pool,
    channel: &Channel,
    redis: &Client,
    topology: &Topology,
    redis_channel: &str,
) -> Result<usize, OutboxError> {
    let mut total = 0;
    loop {
        let mut client = pool.get().await?;
        let db = client.transaction().await?;
        let alerts = pending(&db).await?;
        if alerts.is_empty() {
            return Ok(total);
        }
        // The whole batch goes out before any confirm is awaited, and the Redis fan-out is
        // sent concurrently (fred pipelines it): one round trip per batch, not per alert.
        let mut confirms = Vec::with_capacity(alerts.len());
        let mut fan_out = Vec::with_capacity(alerts.len());
        for (alert, traceparent) in &alerts {
            let span = publish_span(topology, alert, traceparent.as_deref());
            let mut headers = lapin::types::FieldTable::default();
            crate::telemetry::propagation::inject_amqp(&span, &mut headers);
            let body = serde_json::to_vec(alert).map_err(|e| OutboxError::Broker(e.to_string()))?;
            let properties = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(alert.alert_id.to_string().into())
                .with_type("alert.created".into())
                .with_headers(headers);
            let confirm = channel
                .basic_publish(
                    topology.alerts_exchange.as_str().into(),
                    alert.routing_key().as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    properties,
                )
                .instrument(span.clone())
                .await?;
            confirms.push(confirm);
            fan_out.push((body, span));
        }
        Topology::confirm_all(confirms, CONFIRM_TIMEOUT).await.map_err(OutboxError::Broker)?;
        let published = futures_util::future::join_all(
            fan_out
                .into_iter()
                .map(|(body, span)| redis.publish::<i64, _, _>(redis_channel, body).instrument(span)),
        )
        .await;
        for result in published {
            result?;
        }
        let ids: Vec<i64> = alerts.iter().map(|(a, _)| a.alert_id).collect();
        db.execute("UPDATE alerts SET published_at = now() WHERE alert_id = ANY($1)", &[&ids]).await?;
        db.commit().await?;
        metrics::counter!("alerts_published_total").increment(ids.len() as u64);
        total += ids.len();
    }
}

/// The span of one alert's publication: it joins the trace that decided the transaction
/// (from its stored `traceparent`) and is passed on in the message headers.
fn publish_span(topology: &Topology, alert: &AlertEvent, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        "publish alert",
        component = "outbox",
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.destination.name = %topology.alerts_exchange,
        alert_id = alert.alert_id,
        transaction_id = %alert.transaction_id,
    );
    if let Some(traceparent) = traceparent {
        let parent = crate::telemetry::propagation::context_of(traceparent);
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    span
}

/// The running publisher; stopped when dropped.
#[derive(Debug)]
pub struct AlertPublisher {
    wake: Arc<Notify>,
    task: JoinHandle<()>,
}

impl AlertPublisher {
    /// Starts publishing for this deployment (its own broker connection; reconnects with
    /// backoff).
    pub fn start(settings: &Settings, pool: Pool, redis: Client) -> Self {
        let wake = Arc::new(Notify::new());
        let topology = Topology::from_settings(&settings.amqp);
        let amqp = settings.amqp.clone();
        let redis_channel = format!("{}alerts", settings.redis.key_prefix);
        let task = tokio::spawn(run(amqp, topology, pool, redis, redis_channel, wake.clone()));
        Self { wake, task }
    }

    /// A handle the alert actor pokes after committing new alerts.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

impl Drop for AlertPublisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    amqp: AmqpSettings,
    topology: Topology,
    pool: Pool,
    redis: Client,
    redis_channel: String,
    wake: Arc<Notify>,
) {
    let mut failures = 0u32;
    let mut link: Option<(Connection, Channel)> = None;
    loop {
        if link.as_ref().is_none_or(|(c, _)| !c.status().connected()) {
            link = match topology.open_confirming(&amqp).await {
                Ok(l) => Some(l),
                Err(error) => {
                    tracing::warn!(component = "outbox", %error, "alerts exchange unreachable");
                    None
                }
            };
        }
        let outcome = match &link {
            Some((_, channel)) => publish_pending(&pool, channel, &redis, &topology, &redis_channel).await,
            None => Err(OutboxError::Broker("not connected".into())),
        };
        let pause = match outcome {
            Ok(_) => {
                failures = 0;
                SWEEP_EVERY
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(component = "outbox", %error, failures, "alerts not published yet; will retry");
                metrics::counter!("alert_publish_failures_total").increment(1);
                if matches!(error, OutboxError::Broker(_)) {
                    link = None;
                }
                backoff::exponential(Duration::from_millis(100), Duration::from_secs(5), failures)
            }
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

//! Publishing to RabbitMQ with publisher confirms: a `202` is only ever sent for a message
//! the broker has confirmed as persisted.
//!
//! Many publishes share one confirm-mode channel, so confirms are naturally pipelined.
//! A lost connection is re-established lazily by the next publish (single-flight, with a
//! short cool-down after a failed attempt so an outage answers 503 fast instead of making
//! every request wait for a connect timeout).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use fraudsense_actors::{
    events::TransactionCreated,
    settings::AmqpSettings,
    topology::{TRANSACTION_CREATED, Topology},
};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use secrecy::ExposeSecret;

/// Longest a (re)connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// After a failed connect, publishes fail fast for this long.
const COOL_DOWN: Duration = Duration::from_secs(1);

/// Why a message was not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No connection to the broker could be had.
    #[error("broker unreachable: {0}")]
    Unreachable(String),
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

/// Shared publisher, cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    settings: AmqpSettings,
    topology: Topology,
    link: Mutex<Option<Arc<Link>>>,
    last_failure: Mutex<Option<Instant>>,
    reconnect: tokio::sync::Mutex<()>,
}

impl Publisher {
    /// A publisher for `topology`; connects on first use (see [`Publisher::connect`]).
    pub fn new(settings: AmqpSettings, topology: Topology) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                topology,
                link: Mutex::new(None),
                last_failure: Mutex::new(None),
                reconnect: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Connects now and declares the topology; start-up calls this so messages route
    /// to the queue even before any worker has run.
    pub async fn connect(&self) -> Result<(), PublishError> {
        self.link().await.map(|_| ())
    }

    /// True if a confirm-mode channel is open (or could be opened now).
    pub async fn is_ready(&self) -> bool {
        self.link().await.is_ok()
    }

    /// Publishes a persistent `transaction.created` and waits for the broker's confirm.
    pub async fn publish(&self, event: &TransactionCreated) -> Result<(), PublishError> {
        let payload = serde_json::to_vec(event)?;
        let link = self.link().await?;
        let id = event.transaction.transaction_id.as_str();
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(id.into())
            .with_type(TRANSACTION_CREATED.into())
            .with_timestamp(u64::try_from(event.received_at.timestamp()).unwrap_or_default());
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let timeout = self.inner.settings.confirm_timeout;
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
            Err(_) => Err(PublishError::Timeout(timeout)),
            Ok(Err(error)) => {
                self.forget(&link);
                Err(PublishError::Unreachable(error.to_string()))
            }
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(PublishError::Rejected("unroutable")),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Rejected("nacked")),
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Rejected("confirms not enabled")),
        }
    }

    /// How long a publish waits for its confirm.
    pub fn confirm_timeout(&self) -> Duration {
        self.inner.settings.confirm_timeout
    }

    /// Closes the connection (shutdown).
    pub async fn close(&self) {
        let link = self.current();
        if let Some(link) = link {
            let _ = link.connection.close(200, "api stopping".into()).await;
        }
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

    /// The open link, reconnecting if it is gone.
    async fn link(&self) -> Result<Arc<Link>, PublishError> {
        let usable = |l: &Arc<Link>| l.channel.status().connected() && l.connection.status().connected();
        if let Some(link) = self.current().filter(usable) {
            return Ok(link);
        }
        let _single_flight = self.inner.reconnect.lock().await;
        if let Some(link) = self.current().filter(usable) {
            return Ok(link);
        }
        let cooling = self
            .inner
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < COOL_DOWN);
        if cooling {
            return Err(PublishError::Unreachable("reconnect cooling down".into()));
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, self.open()).await {
            Ok(Ok(link)) => {
                let link = Arc::new(link);
                *self.inner.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link.clone());
                *self.inner.last_failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
                tracing::info!(component = "publisher", "connected to broker");
                Ok(link)
            }
            failed => {
                *self.inner.last_failure.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Instant::now());
                let why = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("connect timed out after {CONNECT_TIMEOUT:?}"),
                };
                tracing::warn!(component = "publisher", error = %why, "broker connection failed");
                Err(PublishError::Unreachable(why))
            }
        }
    }

    async fn open(&self) -> Result<Link, lapin::Error> {
        let connection =
            Connection::connect(self.inner.settings.url.expose_secret(), ConnectionProperties::default())
                .await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        self.inner.topology.declare(&channel).await?;
        Ok(Link { connection, channel })
    }
}

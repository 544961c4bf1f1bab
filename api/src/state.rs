//! What every handler can reach.

use std::sync::Arc;

use deadpool_postgres::Pool;

use crate::{backstop::Backstop, gate::Gate, publisher::Publisher};

/// Shared handler state. axum clones it for every request, so it is one reference count:
/// the settings it carries (strings, the broker's addresses) were a dozen allocations per
/// request when it was cloned field by field (docs/benchmarks.md).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    /// The state every handler shares.
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    /// PostgreSQL, for queries.
    pub pool: Pool,
    /// Redis, for readiness.
    pub redis: fred::clients::Client,
    /// Idempotency and rate limits.
    pub gate: Gate,
    /// Batched lookups of stored bodies, for ids Redis no longer remembers.
    pub backstop: Backstop,
    /// The per-account windows (read-only here).
    pub windows: fraudsense_actors::features::WindowStore,
    /// The confirm-mode broker publisher.
    pub publisher: Publisher,
    /// Live alerts for `WS /alerts/stream`.
    pub alerts: crate::stream::AlertFeed,
    /// Checks bearer tokens.
    pub verifier: Arc<fraudsense_actors::auth::Verifier>,
    /// Largest message a stream client may send.
    pub ws_max_message_bytes: usize,
    /// The broker, for the dead-letter routes (which open their own short connection).
    pub amqp: fraudsense_actors::settings::AmqpSettings,
}

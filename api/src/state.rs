//! What every handler can reach.

use deadpool_postgres::Pool;

use crate::{backstop::Backstop, gate::Gate, publisher::Publisher};

/// Shared handler state; every field is a cheap handle.
#[derive(Clone)]
pub struct AppState {
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
    pub verifier: std::sync::Arc<fraudsense_actors::auth::Verifier>,
    /// Largest message a stream client may send.
    pub ws_max_message_bytes: usize,
    /// The broker, for the dead-letter routes (which open their own short connection).
    pub amqp: fraudsense_actors::settings::AmqpSettings,
}

//! What every handler can reach.

use deadpool_postgres::Pool;

use crate::publisher::Publisher;

/// Shared handler state; every field is a cheap handle.
#[derive(Clone)]
pub struct AppState {
    /// PostgreSQL, for queries.
    pub pool: Pool,
    /// Redis, for readiness (and soon idempotency and rate limits).
    pub redis: fred::clients::Client,
    /// The confirm-mode broker publisher.
    pub publisher: Publisher,
}

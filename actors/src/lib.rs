//! # FraudSense engine
//!
//! Domain types and the wire contract, feature windows, scoring, the PostgreSQL store and
//! the ractor actor tree that both binaries build on.
//!
//! ## The supervision tree (one per worker node)
//!
//! ```text
//!                       Supervisor  (root; one-for-all restart with exponential backoff)
//!              ┌────────────┼──────────────────────────┐
//!          AlertActor   ScorerActor                ConsumerActor ── owns the AMQP channel
//!   (commit tx+score+alert  (rules; CPU only)          │          and every unacked delivery
//!    in one PG transaction,                             │ spawns on demand, linked
//!    then ack)                                  AccountActor × N  (one per active account:
//!                                                                  Redis windows, in order)
//!
//! flow:  Consumer ─Observe(job)─▶ Account ─Score─▶ Scorer ─Record─▶ Alert ─▶ PostgreSQL, ack
//! ```
//!
//! Failure handling:
//! - a bad message body is dead-lettered at once (retrying cannot fix it);
//! - a transient Redis or PostgreSQL error on one delivery nacks it back to the queue; the
//!   quorum queue's `x-delivery-limit` dead-letters a message that keeps failing;
//! - an account actor that fails makes the consumer fail (it can no longer settle that
//!   actor's deliveries); any pipeline actor that fails makes the supervisor stop the rest
//!   and start a fresh pipeline after a backoff. The old channel closes, so every unacked
//!   delivery is redelivered, and because each effect is idempotent on `transaction_id`
//!   (one transaction row, one score, at most one alert, windows keyed by transaction id)
//!   reprocessing never double-counts.

pub mod account;
pub mod alert;
pub mod backoff;
pub mod balance;
pub mod consumer;
pub mod events;
pub mod features;
pub mod health;
pub mod job;
pub mod labels;
pub mod scorer;
pub mod scoring;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod topology;
pub mod transaction;

pub use events::TransactionCreated;
pub use settings::Settings;
pub use transaction::Transaction;

pub mod signal;

/// Connects a Redis client from settings and waits until it is usable. The client
/// reconnects by itself (exponential backoff) and no command waits longer than 2 s.
pub async fn connect_redis(
    settings: &settings::RedisSettings,
) -> Result<fred::clients::Client, fred::error::Error> {
    use fred::{
        interfaces::ClientLike,
        types::{
            Builder,
            config::{Config, ReconnectPolicy},
        },
    };
    use secrecy::ExposeSecret;
    use std::time::Duration;
    let config = Config::from_url(settings.url.expose_secret())?;
    let client = Builder::from_config(config)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .build()?;
    client.init().await?;
    Ok(client)
}

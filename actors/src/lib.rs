//! # FraudSense engine
//!
//! Domain types and the wire contract, feature windows, scoring, the PostgreSQL store and
//! the ractor actor tree that both binaries build on.
//!
//! ## The supervision tree (one per worker node)
//!
//! ```text
//!                        Supervisor  (root; one-for-all restart, backoff 100 ms … 10 s)
//!              ┌─────────────┼──────────────────────────────┐
//!          AlertActor    ScorerActor                   ConsumerActor ── owns the AMQP connection,
//!   group-commits tx +   rules (CPU only;              │   one consumer per shard queue, every
//!   score (+ alert) in   degraded when no features)    │   unacked delivery, multiple-acks,
//!   one PG transaction,                                 │   shard balancing, drain on stop
//!   then settles                                        │ spawns on demand, linked; evicts idle
//!                                               AccountActor × ≤ MAX_ACCOUNT_ACTORS
//!                                               (one per active account: Redis windows, in order)
//!
//! flow:  Consumer ─Observe─▶ Account ─Score─▶ Scorer ─Record─▶ Alert ─▶ PostgreSQL
//!           ▲                                                    │
//!           └──────────── Settle (ack after commit / retry) ◀────┘
//! ```
//!
//! ## What happens on each failure
//!
//! | failure | handling | outcome |
//! |---|---|---|
//! | undecodable body, unknown `schema_version` | consumer rejects it | dead-letter queue at once |
//! | Redis unavailable | circuit breaker (1 s); scorer uses transaction-level rules | decision stored with `degraded = true`, counted |
//! | PostgreSQL unreachable / restarting | alert actor keeps the batch and retries with backoff (100 ms … 5 s) | nothing acked, prefetch fills, broker holds the rest: back-pressure, no loss |
//! | PostgreSQL refuses a row | batch retried item by item; refused items go round the delayed-retry queue (`RETRY_DELAY_MS`) | after `RETRY_MAX` trips: dead-letter queue; the shard never blocks |
//! | account actor fails | consumer fails (it cannot settle that actor's deliveries) | supervisor restarts the pipeline |
//! | any pipeline actor fails, broker connection lost | supervisor stops the rest, waits the backoff, starts a fresh pipeline | the old channel's close returns every unacked delivery; idempotent writes make reprocessing harmless |
//! | message redelivered again and again | quorum queue `x-delivery-limit` | dead-letter queue |
//! | node killed (SIGKILL) | its connection drops | broker activates a standby consumer on each of its shards; unacked deliveries return to the front |
//! | node stopped (SIGTERM) | consumer cancels, in-flight work commits and is acked, then the channel closes (`SHUTDOWN_TIMEOUT_SECS`) | nothing lost, nothing left unacked |
//!
//! Memory stays bounded under any backlog: each shard consumer holds at most
//! `AMQP_PREFETCH` unacked deliveries, every mailbox only ever holds those, and account
//! actors are evicted when idle (`ACCOUNT_IDLE_SECS`) or beyond `MAX_ACCOUNT_ACTORS`. An
//! evicted actor's window is parked in the consumer (`WINDOW_PARK_SECS`, at most
//! `MAX_PARKED_WINDOWS`) for the account's next actor: a ractor actor costs about 9 KiB, a
//! parked window a few hundred bytes, so a worker keeps 100,000 accounts warm in well under
//! 512 MiB while only the recently busy ones have actors.
//! Every effect is idempotent on `transaction_id` (one transaction row, one score, at most
//! one alert, window members keyed by transaction id), so at-least-once delivery yields
//! effectively-once results.

pub mod account;
pub mod alert;
pub mod auth;
pub mod backlog;
pub mod backoff;
pub mod balance;
pub mod consumer;
pub mod dlq;
pub mod engine;
pub mod events;
pub mod features;
pub mod health;
pub mod iforest;
pub mod job;
pub mod labels;
pub mod model;
pub mod outbox;
pub mod rules;
pub mod scored;
pub mod scorer;
pub mod scoring;
pub mod settings;
pub mod store;
pub mod supervisor;
pub mod synth;
pub mod telemetry;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod topology;
pub mod training;
pub mod transaction;

pub use events::TransactionCreated;
pub use settings::Settings;
pub use transaction::Transaction;

pub mod signal;

/// The fred configuration of `REDIS_URL`. A TLS URL (`rediss://`) gets a rustls connector
/// (ring) trusting the system's CAs and `REDIS_CA_FILE`'s; a plain one stays plain.
pub fn redis_config(
    settings: &settings::RedisSettings,
) -> Result<fred::types::config::Config, fred::error::Error> {
    use fred::{
        error::{Error, ErrorKind},
        types::config::{Config, TlsConnector},
    };
    use secrecy::ExposeSecret;
    let url = settings.url.expose_secret();
    if !tls::redis_url_uses_tls(url) {
        return Config::from_url(url);
    }
    // Parsed as its plain twin (`rediss` → `redis`), so fred does not build its own connector
    // (which fails on any unreadable system certificate), then given ours.
    let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
    let scheme = scheme.to_ascii_lowercase().replacen("rediss", "redis", 1).replacen("valkeys", "valkey", 1);
    let mut config = Config::from_url(&format!("{scheme}://{rest}"))?;
    let client = tls::client_config(settings.ca_file.as_ref(), tls::Verify::Full)
        .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
    config.tls = Some(TlsConnector::from(client).into());
    Ok(config)
}

/// Connects a Redis client from settings and waits until it is usable. The client
/// reconnects by itself (exponential backoff) and no command waits longer than 2 s.
pub async fn connect_redis(
    settings: &settings::RedisSettings,
) -> Result<fred::clients::Client, fred::error::Error> {
    use fred::{
        interfaces::ClientLike,
        types::{Builder, config::ReconnectPolicy},
    };
    use std::time::Duration;
    let config = redis_config(settings)?;
    let client = Builder::from_config(config)
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
        .with_connection_config(|c| c.connection_timeout = Duration::from_secs(2))
        .with_performance_config(|p| p.default_command_timeout = Duration::from_secs(2))
        .build()?;
    client.init().await?;
    Ok(client)
}

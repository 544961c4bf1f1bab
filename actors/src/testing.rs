//! Test support (feature `testing`): an isolated slice of the real services per test.
//!
//! Each [`TestEnv`] gets its own PostgreSQL database (migrated), its own exchange and queue
//! names on the broker and its own Redis key prefix, so tests run in parallel and
//! repeatably against the one local PostgreSQL, Redis and RabbitMQ. [`TestEnv::cleanup`]
//! removes all three; databases left behind by a crashed run are swept by later runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use fred::interfaces::{ClientLike, KeysInterface};
use lapin::{
    Channel, Connection, ConnectionProperties,
    options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions},
    types::FieldTable,
};
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

use crate::{Settings, store, topology::Topology};

/// Databases older than this, left by crashed runs, are dropped by the next run.
const STALE_AFTER_SECS: u64 = 2 * 60 * 60;

/// Settings and resources owned by one test.
#[derive(Debug)]
pub struct TestEnv {
    /// Settings pointing at this test's database, names and prefix; defaults otherwise.
    pub settings: Settings,
    /// The test database's name.
    pub db_name: String,
    admin_url: String,
}

impl TestEnv {
    /// Creates and migrates a fresh database and picks fresh broker and Redis names.
    pub async fn new() -> anyhow::Result<Self> {
        let mut settings = Settings::from_env().context("reading settings")?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let id = uuid::Uuid::new_v4().simple().to_string();
        let short = &id[..12];
        let db_name = format!("fs_test_{now}_{short}");

        let base = url::Url::parse(settings.database_url()).context("DATABASE_URL")?;
        let mut admin = base.clone();
        admin.set_path("/postgres");
        let admin_url = admin.to_string();
        let (client, conn) = tokio_postgres::connect(&admin_url, NoTls)
            .await
            .context("connecting to PostgreSQL (is it running? try `make up`)")?;
        tokio::spawn(conn);
        sweep_stale(&client, now).await;
        client
            .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
            .await
            .context("creating the test database")?;

        let mut db_url = base;
        db_url.set_path(&format!("/{db_name}"));
        settings.database.url = SecretString::from(db_url.to_string());
        settings.database.pool_size = 4;
        settings.amqp.prefix = format!("fstest.{short}.");
        settings.redis.key_prefix = format!("fstest:{short}:");
        settings.api_addr = "127.0.0.1:0".parse()?;
        settings.worker_addr = "127.0.0.1:0".parse()?;

        let pool = store::connect(&settings.database)?;
        store::migrate(&pool)
            .await
            .context("migrating the test database")?;
        Ok(Self {
            settings,
            db_name,
            admin_url,
        })
    }

    /// This test's broker names.
    pub fn topology(&self) -> Topology {
        Topology::new(
            &self.settings.amqp.prefix,
            self.settings.amqp.delivery_limit,
        )
    }

    /// A fresh broker connection and channel, for inspecting queues.
    pub async fn amqp(&self) -> anyhow::Result<(Connection, Channel)> {
        let conn = Connection::connect(
            self.settings.amqp.url.expose_secret(),
            ConnectionProperties::default(),
        )
        .await?;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn ready_messages(&self, queue: &str) -> anyhow::Result<u32> {
        let (conn, channel) = self.amqp().await?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let count = match channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await
        {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        };
        let _ = conn.close(200, "done".into()).await;
        Ok(count)
    }

    /// A pool on this test's database.
    pub fn pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        Ok(store::connect(&self.settings.database)?)
    }

    /// Drops the database, deletes the queues and exchanges and the Redis keys.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.admin_url, NoTls).await?;
        tokio::spawn(conn);
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.db_name
            ))
            .await?;

        let topology = self.topology();
        let (amqp, channel) = self.amqp().await?;
        for queue in [&topology.created_queue, &topology.dead_letter_queue] {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            &topology.transactions_exchange,
            &topology.dead_letter_exchange,
            &topology.alerts_exchange,
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
        let _ = amqp.close(200, "done".into()).await;

        let redis = crate::connect_redis(&self.settings.redis).await?;
        let keys: Vec<String> = redis
            .custom(
                fred::cmd!("KEYS"),
                vec![format!("{}*", self.settings.redis.key_prefix)],
            )
            .await?;
        if !keys.is_empty() {
            let _: i64 = redis.del(keys).await?;
        }
        let _ = redis.quit().await;
        Ok(())
    }
}

/// Drops `fs_test_<epoch>_*` databases older than [`STALE_AFTER_SECS`]; best effort.
async fn sweep_stale(client: &tokio_postgres::Client, now: u64) {
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'fs\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER_SECS) {
            let _ = client
                .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
}

/// Polls `check` every 50 ms until it yields `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(
    deadline: Duration,
    what: &str,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= until {
            anyhow::bail!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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
    Channel, Connection,
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
        settings.redis.url = SecretString::from(test_redis_url(settings.redis.url.expose_secret())?);
        settings.api_addr = "127.0.0.1:0".parse()?;
        settings.worker_addr = "127.0.0.1:0".parse()?;
        // Each test signs its own tokens with its own secret.
        let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
        settings.auth.hs256_secret = Some(SecretString::from(secret));
        settings.auth.hs256_secret_file = None;
        settings.auth.jwks_file = None;
        // Activations show up in tests within a tenth of a second.
        settings.scoring.refresh = std::time::Duration::from_millis(100);

        let pool = store::connect(&settings.database)?;
        store::migrate(&pool).await.context("migrating the test database")?;
        Ok(Self { settings, db_name, admin_url })
    }

    /// A bearer token for `subject` holding `roles`, valid for an hour, signed with this
    /// test's secret.
    pub fn token(&self, subject: &str, roles: &[crate::auth::Role]) -> String {
        let claims = crate::auth::claims(&self.settings.auth, subject, roles, Duration::from_secs(3600));
        crate::auth::mint(&self.settings.auth, &claims)
            .unwrap_or_else(|e| panic!("minting a test token: {e}"))
    }

    /// An HTTP client that sends a token holding every role (as `test`) unless a request
    /// sets its own `Authorization`.
    pub fn http_client(&self) -> reqwest::Client {
        let token = self.token("test", &crate::auth::Role::ALL);
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        reqwest::Client::builder().default_headers(headers).build().unwrap_or_else(|e| panic!("{e}"))
    }

    /// This test's broker names.
    pub fn topology(&self) -> Topology {
        Topology::from_settings(&self.settings.amqp)
    }

    /// A fresh broker connection and channel, for inspecting queues.
    pub async fn amqp(&self) -> anyhow::Result<(Connection, Channel)> {
        let conn = crate::topology::connect_amqp(&self.settings.amqp).await?;
        let channel = conn.create_channel().await?;
        Ok((conn, channel))
    }

    /// Messages ready in `queue` (0 if it does not exist).
    pub async fn ready_messages(&self, queue: &str) -> anyhow::Result<u32> {
        let (conn, channel) = self.amqp().await?;
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let count = match channel.queue_declare(queue.into(), passive, FieldTable::default()).await {
            Ok(q) => q.message_count(),
            Err(_) => 0,
        };
        let _ = conn.close(200, "done".into()).await;
        Ok(count)
    }

    /// Starts a [`ChaosProxy`] in front of the broker; returns it with settings whose
    /// `AMQP_URL` goes through it (everything else as in [`Self::settings`]).
    pub async fn amqp_through_proxy(&self) -> anyhow::Result<(ChaosProxy, Settings)> {
        let mut settings = self.settings.clone();
        let proxy = proxy_in_front(&mut settings.amqp.url, 5672).await?;
        Ok((proxy, settings))
    }

    /// The same for Redis (`REDIS_URL`).
    pub async fn redis_through_proxy(&self) -> anyhow::Result<(ChaosProxy, Settings)> {
        let mut settings = self.settings.clone();
        let proxy = proxy_in_front(&mut settings.redis.url, 6379).await?;
        Ok((proxy, settings))
    }

    /// The same for PostgreSQL (`DATABASE_URL`).
    pub async fn postgres_through_proxy(&self) -> anyhow::Result<(ChaosProxy, Settings)> {
        let mut settings = self.settings.clone();
        let proxy = proxy_in_front(&mut settings.database.url, 5432).await?;
        Ok((proxy, settings))
    }

    /// Transactions waiting in the shard queues (ready, summed over all shards).
    pub async fn queued_transactions(&self) -> anyhow::Result<u32> {
        let mut total = 0;
        for queue in &self.topology().shard_queues {
            total += self.ready_messages(queue).await?;
        }
        Ok(total)
    }

    /// Consumes (and removes) one queued transaction from whichever shard holds it, waiting
    /// at most `deadline`. (Single-active-consumer queues refuse `basic.get`.)
    pub async fn take_one_transaction(
        &self,
        deadline: Duration,
    ) -> anyhow::Result<Option<lapin::message::Delivery>> {
        use futures_util::StreamExt;
        let (conn, channel) = self.amqp().await?;
        let options = lapin::options::BasicConsumeOptions { no_ack: true, ..Default::default() };
        let mut streams = Vec::new();
        for queue in &self.topology().shard_queues {
            streams.push(
                channel
                    .basic_consume(queue.as_str().into(), "".into(), options, FieldTable::default())
                    .await?,
            );
        }
        let mut all = futures_util::stream::select_all(streams);
        let got = match tokio::time::timeout(deadline, all.next()).await {
            Ok(Some(delivery)) => Some(delivery?),
            _ => None,
        };
        let _ = conn.close(200, "done".into()).await;
        Ok(got)
    }

    /// How many of this test's shards each node is active on, read from the management API
    /// the same way the workers' balancer reads it.
    pub async fn shard_owners(&self) -> anyhow::Result<std::collections::BTreeMap<String, usize>> {
        let balance =
            self.settings.amqp.balance.as_ref().ok_or_else(|| anyhow::anyhow!("balancing is off"))?;
        let views =
            crate::consumer::fetch_views(&reqwest::Client::new(), balance, &self.topology().shard_queues)
                .await?;
        let mut owners = std::collections::BTreeMap::new();
        for view in views {
            if let Some(node) = view.active {
                *owners.entry(node).or_insert(0) += 1;
            }
        }
        Ok(owners)
    }

    /// A pool on this test's database.
    pub fn pool(&self) -> anyhow::Result<deadpool_postgres::Pool> {
        Ok(store::connect(&self.settings.database)?)
    }

    /// Drops the database, deletes the queues and exchanges and the Redis keys.
    pub async fn cleanup(self) -> anyhow::Result<()> {
        let (client, conn) = tokio_postgres::connect(&self.admin_url, NoTls).await?;
        tokio::spawn(conn);
        client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.db_name)).await?;

        let topology = self.topology();
        let (amqp, channel) = self.amqp().await?;
        for queue in topology.shard_queues.iter().chain([&topology.dead_letter_queue, &topology.retry_queue])
        {
            channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await?;
        }
        for exchange in [
            &topology.transactions_exchange,
            &topology.shard_exchange,
            &topology.dead_letter_exchange,
            &topology.alerts_exchange,
            &topology.retry_exchange,
        ] {
            channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await?;
        }
        let _ = amqp.close(200, "done".into()).await;

        let redis = crate::connect_redis(&self.settings.redis).await?;
        let keys: Vec<String> =
            redis.custom(fred::cmd!("KEYS"), vec![format!("{}*", self.settings.redis.key_prefix)]).await?;
        if !keys.is_empty() {
            let _: i64 = redis.del(keys).await?;
        }
        let _ = redis.quit().await;
        Ok(())
    }
}

/// Starts a proxy to the service `url` names and rewrites `url` to go through it.
async fn proxy_in_front(url: &mut SecretString, default_port: u16) -> anyhow::Result<ChaosProxy> {
    let mut parsed = url::Url::parse(url.expose_secret())?;
    let host = parsed.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = parsed.port().unwrap_or(default_port);
    let upstream = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}:{port}"))?;
    let proxy = ChaosProxy::start(upstream).await?;
    parsed.set_ip_host(proxy.addr().ip()).map_err(|()| anyhow::anyhow!("cannot set host"))?;
    parsed.set_port(Some(proxy.addr().port())).map_err(|()| anyhow::anyhow!("cannot set port"))?;
    *url = SecretString::from(parsed.to_string());
    Ok(proxy)
}

/// Redis logical database the tests use when `REDIS_URL` names none: the tests' keys stay
/// apart from a local stack's (database 0), so a big development keyspace (a soak leaves
/// millions of keys) cannot slow the tests' own cleanup (`KEYS` of one test's prefix).
pub const TEST_REDIS_DB: u8 = 15;

/// `url` with [`TEST_REDIS_DB`] selected, unless it already selects a database.
fn test_redis_url(url: &str) -> anyhow::Result<String> {
    let mut parsed = url::Url::parse(url).context("REDIS_URL")?;
    if matches!(parsed.path(), "" | "/") {
        parsed.set_path(&format!("/{TEST_REDIS_DB}"));
    }
    Ok(parsed.to_string())
}

/// Drops `fs_test_<epoch>_*` databases older than [`STALE_AFTER_SECS`]; best effort.
async fn sweep_stale(client: &tokio_postgres::Client, now: u64) {
    let Ok(rows) =
        client.query("SELECT datname FROM pg_database WHERE datname LIKE 'fs\\_test\\_%'", &[]).await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let created = name.split('_').nth(2).and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > STALE_AFTER_SECS) {
            let _ = client.batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await;
        }
    }
}

/// Polls `check` every 50 ms until it yields `Some`, or fails after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> anyhow::Result<T>
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

/// A TCP proxy in front of a real service, for failure tests that must not disturb the
/// shared service itself: it can stall traffic (a broker that stops answering) or cut
/// every connection (a broker that goes away).
#[derive(Debug)]
pub struct ChaosProxy {
    addr: std::net::SocketAddr,
    stalled: tokio::sync::watch::Sender<bool>,
    cut: tokio::sync::watch::Sender<u64>,
    inject: tokio::sync::broadcast::Sender<Vec<u8>>,
    refusing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

impl ChaosProxy {
    /// Listens on a random loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: std::net::SocketAddr) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stalled, stalled_rx) = tokio::sync::watch::channel(false);
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let (inject, _) = tokio::sync::broadcast::channel::<Vec<u8>>(16);
        let injector = inject.clone();
        let refusing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refuse = refusing.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if refuse.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut cut_rx = cut_rx.clone();
                cut_rx.mark_unchanged();
                let up = pump(cr, sw, stalled_rx.clone(), None);
                let down = pump(sr, cw, stalled_rx.clone(), Some(injector.subscribe()));
                tokio::spawn(async move {
                    tokio::select! {
                        _ = async { tokio::join!(up, down) } => {},
                        _ = cut_rx.changed() => {},
                    }
                });
            }
        });
        Ok(Self { addr, stalled, cut, inject, refusing, accept })
    }

    /// Where clients should connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Holds every byte in both directions (connections stay open) until [`Self::resume`].
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Sends the broker's `connection.blocked` (resource alarm) to every current client, as
    /// if from the broker. Meant for idle connections, where it lands between frames.
    pub fn block(&self, reason: &str) {
        let mut args = vec![u8::try_from(reason.len()).unwrap_or(u8::MAX)];
        args.extend_from_slice(&reason.as_bytes()[..usize::from(args[0])]);
        let _ = self.inject.send(amqp_connection_method(60, &args));
    }

    /// Sends `connection.unblocked` to every current client.
    pub fn unblock(&self) {
        let _ = self.inject.send(amqp_connection_method(61, &[]));
    }

    /// The service goes away: every connection is cut and new ones are refused until [`Self::up`].
    pub fn down(&self) {
        self.refusing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.cut_connections();
    }

    /// The service is back: connections are accepted again.
    pub fn up(&self) {
        self.refusing.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes every current connection; new ones are accepted as before.
    pub fn cut_connections(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut_connections();
    }
}

/// An AMQP 0-9-1 method frame on channel 0 of class `connection` (10).
fn amqp_connection_method(method: u16, args: &[u8]) -> Vec<u8> {
    let mut payload = vec![0, 10];
    payload.extend_from_slice(&method.to_be_bytes());
    payload.extend_from_slice(args);
    let mut frame = vec![1, 0, 0];
    frame.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.push(0xCE);
    frame
}

/// Copies `from` to `to`, waiting while `stalled` is true; writes injected bytes between
/// chunks.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: tokio::sync::watch::Receiver<bool>,
    mut injected: Option<tokio::sync::broadcast::Receiver<Vec<u8>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let injection = async {
            match injected.as_mut() {
                Some(rx) => rx.recv().await.ok(),
                None => std::future::pending().await,
            }
        };
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            Some(bytes) = injection => {
                if to.write_all(&bytes).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if stalled.wait_for(|s| !*s).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

//! # The services' floor (`fraudsense-floor`, `make bench-floor`)
//!
//! What RabbitMQ, PostgreSQL and Redis cost per transaction when they do only what
//! FraudSense's promises require of them, driven at a fixed open-loop rate by this process
//! alone: no HTTP, no actors, no scoring, no JSON parsing. Whatever design keeps the promises
//! on this machine pays at least this much of the three servers' CPU per transaction, so the
//! figure says how much of the 2 cores is left for everything else (an HTTP edge, the
//! scoring, the load generator) at a given rate.
//!
//! Per transaction `n`, due at `start + n / rate` (the load generator's schedule):
//!
//! 1. **Redis**: claim the idempotency key, `SET key pending PX ttl NX` (promise 2).
//! 2. **RabbitMQ**: publish the event (persistent, the size of one serialised
//!    `transaction.created`) on a confirm-mode channel to a consistent-hash exchange over
//!    `shards` durable quorum queues, keyed on the account, and wait for its own confirm
//!    (promises 1 and 4). *Accepted* = scheduled → confirmed.
//! 3. **Redis**: for each delivery (one connection, one consumer per shard queue, prefetch
//!    500), one sliding-window script on the account's key: `ZREMRANGEBYSCORE` + `ZADD` +
//!    `PEXPIRE` + `ZCARD` (promise 5; the merchant's window is left out).
//! 4. **PostgreSQL**: group commit of whatever was delivered while the previous commit ran,
//!    one statement per batch inserting the transaction (raw body as JSONB) and its decision
//!    (score, 16 features and 16 contributions as bytes, reason codes), `ON CONFLICT DO
//!    NOTHING`, synchronous commit (promises 2, 3 and 6). *Decided* = scheduled → committed.
//! 5. **RabbitMQ**: one `transaction.scored` per committed transaction (same size as the
//!    event, to an exchange nobody binds), confirmed, then the batch is acked (`multiple`).
//!
//! Every name is unique to the run (exchange, queues, schema, key prefix) and removed at the
//! end, also when the run fails. CPU per process comes from [`crate::load::cpu`]: the
//! servers' figures include whatever else they serve meanwhile, so run it on an idle stack.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use anyhow::{Context, bail};
use deadpool_postgres::Pool;
use fred::{clients::Client, interfaces::KeysInterface, types::scripts::Script};
use futures_util::{StreamExt, stream::FuturesOrdered};
use lapin::{
    BasicProperties, Channel, Connection, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions,
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use tokio::{sync::mpsc, time::Instant};

use fraudsense_actors::{
    Settings,
    consumer::multiple_ack_upto,
    topology::{SHARD_KEY_HEADER, Topology},
};

use crate::load::{
    cpu,
    report::{Latency, LatencySummary},
    schedule::Schedule,
};

/// The consumer's prefetch (as the worker's default).
const PREFETCH: u16 = 500;
/// Largest group commit.
const BATCH_MAX: usize = 1000;
/// Features (and contributions) per decision, as the bootstrap model has.
const FEATURES: usize = 16;
/// Longest the run may take after its last transaction was due.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// The sliding window's span, ms: seven days, the longest window the features use.
const WINDOW_MS: &str = "604800000";
/// How long Redis keeps the run's keys if the cleanup cannot delete them.
const KEY_TTL_MS: u64 = 600_000;

/// The sliding window of step 3: one script, four commands.
const WINDOW_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[1]) - tonumber(ARGV[3]))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return redis.call('ZCARD', KEYS[1])
";

/// One floor run.
#[derive(Debug, Clone)]
pub struct FloorConfig {
    /// Transactions per second.
    pub rate: f64,
    /// Seconds of sending.
    pub duration: Duration,
    /// Accounts the transactions are spread over.
    pub accounts: u64,
    /// Shard queues.
    pub shards: u16,
    /// The shard queues' type.
    pub queue_type: QueueType,
    /// The message body (one serialised `transaction.created`).
    pub body: Vec<u8>,
}

/// The type of the shard queues: FraudSense declares quorum queues (replicated, with a
/// delivery limit); classic queues are the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum QueueType {
    /// `x-queue-type: quorum`, as the pipeline's shard queues.
    Quorum,
    /// A durable classic queue (persistent messages).
    Classic,
}

impl QueueType {
    fn name(self) -> &'static str {
        match self {
            Self::Quorum => "quorum",
            Self::Classic => "classic",
        }
    }
}

/// What one floor run measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FloorReport {
    /// Offered rate, tx/s.
    pub offered_rate: f64,
    /// Transactions scheduled.
    pub scheduled: u64,
    /// Transactions confirmed by the broker.
    pub accepted: u64,
    /// Transactions committed in PostgreSQL (and acked).
    pub decided: u64,
    /// `decided` over the time from the first due transaction to the last commit.
    pub decided_rate: f64,
    /// Group commits.
    pub commits: u64,
    /// Shard queues.
    pub shards: u16,
    /// Their type.
    pub queue_type: QueueType,
    /// Bytes per message.
    pub body_bytes: usize,
    /// Scheduled → confirmed.
    pub accepted_latency: LatencySummary,
    /// Scheduled → committed.
    pub decided_latency: LatencySummary,
    /// Each process's CPU per decided transaction (this driver is the "load generator").
    pub cpu: Option<cpu::CpuUse>,
    /// Rows in the run's `transactions` and `decisions` tables at the end, read back before
    /// they were dropped: both equal `decided` when every commit landed once.
    pub stored: (u64, u64),
    /// Messages still in the shard queues once the consumer's channel closed (which hands
    /// back whatever it had not acked): 0 when every delivery was acked.
    pub left_in_queues: u64,
    /// What the run created on the three servers (and removed again).
    pub objects: FloorObjects,
}

/// The names a run creates: unique to it, removed at its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FloorObjects {
    /// The consistent-hash exchange transactions are published to.
    pub exchange: String,
    /// The exchange `transaction.scored` goes to (nothing binds it).
    pub scored_exchange: String,
    /// The shard queues.
    pub queues: Vec<String>,
    /// The PostgreSQL schema holding the two tables.
    pub schema: String,
    /// The prefix of every Redis key.
    pub key_prefix: String,
}

impl FloorReport {
    /// CPU per transaction of the three servers together, ms.
    pub fn services_ms_per_tx(&self) -> Option<f64> {
        let cpu = self.cpu.as_ref()?;
        let services = ["RabbitMQ", "PostgreSQL", "Redis"];
        Some(cpu.processes.iter().filter(|p| services.contains(&p.name.as_str())).map(|p| p.ms_per_tx).sum())
    }

    /// The three servers together as a share of the machine, percent.
    pub fn services_busy_pct(&self) -> Option<f64> {
        let cpu = self.cpu.as_ref()?;
        let capacity = cpu.wall_secs * cpu.cores as f64;
        let secs = self.services_ms_per_tx()? * self.decided as f64 / 1000.0;
        (capacity > 0.0).then(|| 100.0 * secs / capacity)
    }
}

/// The run's names on the three servers.
#[derive(Debug, Clone)]
struct Names {
    exchange: String,
    scored: String,
    queues: Vec<String>,
    schema: String,
    keys: String,
    /// Accounts and transactions of the run, to delete its keys by name.
    accounts: u64,
    total: u64,
}

impl Names {
    fn new(shards: u16, accounts: u64, total: u64) -> Self {
        let id = super::run_suffix('_');
        Self {
            exchange: format!("fraudsense-floor-{id}.shards"),
            scored: format!("fraudsense-floor-{id}.scored"),
            queues: (0..shards).map(|i| format!("fraudsense-floor-{id}.shard.{i}")).collect(),
            schema: format!("fraudsense_floor_{id}"),
            keys: format!("fraudsense-floor:{id}:"),
            accounts,
            total,
        }
    }
}

/// Latencies and counts shared by the run's tasks.
#[derive(Default)]
struct Tally {
    accepted: Latency,
    decided: Latency,
    accepted_count: u64,
    decided_count: u64,
    commits: u64,
    last_commit: Option<Instant>,
}

/// Runs the floor once; every name it creates is removed afterwards, whatever happened.
pub async fn run(settings: &Settings, config: &FloorConfig) -> anyhow::Result<FloorReport> {
    if !(config.rate.is_finite() && config.rate > 0.0) || config.accounts == 0 || config.shards == 0 {
        bail!("rate, accounts and shards must be positive");
    }
    let total = Schedule::new(config.rate, config.duration).total();
    let names = Names::new(config.shards, config.accounts, total);
    let pool = fraudsense_actors::store::connect(&settings.database).context("PostgreSQL pool")?;
    let redis = fraudsense_actors::connect_redis(&settings.redis).await.context("connecting to Redis")?;
    let publisher =
        fraudsense_actors::topology::connect_amqp(&settings.amqp).await.context("connecting to RabbitMQ")?;
    let consumer = fraudsense_actors::topology::connect_amqp(&settings.amqp)
        .await
        .context("connecting the consumer to RabbitMQ")?;
    let result = async {
        declare(&publisher, &pool, &names, config.queue_type).await?;
        measure(&publisher, &consumer, &pool, &redis, &names, config).await
    }
    .await;
    let cleaned = cleanup(&publisher, &pool, &redis, &names).await;
    let _ = consumer.close(200, "floor done".into()).await;
    let _ = publisher.close(200, "floor done".into()).await;
    let report = result?;
    cleaned.context("removing the run's queues, schema and keys")?;
    Ok(report)
}

async fn declare(connection: &Connection, pool: &Pool, names: &Names, kind: QueueType) -> anyhow::Result<()> {
    let channel = connection.create_channel().await?;
    let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
    let mut hash = FieldTable::default();
    hash.insert("hash-header".into(), AMQPValue::LongString(SHARD_KEY_HEADER.into()));
    channel
        .exchange_declare(
            names.exchange.as_str().into(),
            ExchangeKind::Custom("x-consistent-hash".into()),
            durable,
            hash,
        )
        .await
        .context("declaring the consistent-hash exchange (is the plugin enabled?)")?;
    channel
        .exchange_declare(names.scored.as_str().into(), ExchangeKind::Topic, durable, FieldTable::default())
        .await?;
    for queue in &names.queues {
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), AMQPValue::LongString(kind.name().into()));
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(queue.as_str().into(), options, args).await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                names.exchange.as_str().into(),
                "1".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    let schema = &names.schema;
    pool.get()
        .await?
        .batch_execute(&format!(
            "CREATE SCHEMA {schema};
             CREATE TABLE {schema}.transactions (transaction_id text PRIMARY KEY, account_id text NOT NULL,
                 raw jsonb NOT NULL, processed_at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE {schema}.decisions (transaction_id text PRIMARY KEY, score float8 NOT NULL,
                 features bytea NOT NULL, contributions bytea NOT NULL, reasons text NOT NULL);"
        ))
        .await
        .context("creating the run's schema")?;
    Ok(())
}

async fn cleanup(connection: &Connection, pool: &Pool, redis: &Client, names: &Names) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    match connection.create_channel().await {
        Ok(channel) => {
            for queue in &names.queues {
                if let Err(e) =
                    channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await
                {
                    failures.push(format!("queue {queue}: {e}"));
                }
            }
            for exchange in [&names.exchange, &names.scored] {
                let deleted =
                    channel.exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default()).await;
                if let Err(e) = deleted {
                    failures.push(format!("exchange {exchange}: {e}"));
                }
            }
            let _ = channel.close(200, "cleaned".into()).await;
        }
        Err(e) => failures.push(format!("broker channel: {e}")),
    }
    let dropped = async {
        pool.get().await?.batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", names.schema)).await?;
        anyhow::Ok(())
    };
    if let Err(e) = dropped.await {
        failures.push(format!("schema {}: {e:#}", names.schema));
    }
    if let Err(e) = delete_keys(redis, names).await {
        failures.push(format!("keys {}*: {e}", names.keys));
    }
    if failures.is_empty() { Ok(()) } else { bail!(failures.join("; ")) }
}

/// Deletes the run's keys, by name (they also expire by themselves).
async fn delete_keys(redis: &Client, names: &Names) -> Result<(), fred::error::Error> {
    let windows = (0..names.accounts.min(names.total))
        .map(|a| format!("{}win:{}", names.keys, account_of(a, names.accounts)));
    let claims = (0..names.total).map(|n| format!("{}idem:{n}", names.keys));
    let keys: Vec<String> = windows.chain(claims).collect();
    for chunk in keys.chunks(1000) {
        let _: i64 = redis.unlink(chunk.to_vec()).await?;
    }
    Ok(())
}

async fn measure(
    publisher: &Connection,
    consumer: &Connection,
    pool: &Pool,
    redis: &Client,
    names: &Names,
    config: &FloorConfig,
) -> anyhow::Result<FloorReport> {
    let schedule = Schedule::new(config.rate, config.duration);
    let total = schedule.total();
    let tally = Arc::new(Mutex::new(Tally::default()));

    let publish = publisher.create_channel().await?;
    publish.confirm_select(ConfirmSelectOptions::default()).await?;
    let deliveries = consumer.create_channel().await?;
    deliveries.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    deliveries.confirm_select(ConfirmSelectOptions::default()).await?;
    let mut streams = Vec::new();
    for queue in &names.queues {
        let stream = deliveries
            .basic_consume(
                queue.as_str().into(),
                format!("floor-{queue}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        streams.push(stream);
    }
    let window = Script::from_lua(WINDOW_LUA);
    let before = cpu::Snapshot::take();
    let start = Instant::now();

    // The consumer side: windows in delivery order, then group commits.
    let (commit_tx, commit_rx) = mpsc::unbounded_channel::<Delivered>();
    let acks = Arc::new(Mutex::new(Acks::default()));
    let consume = consume(
        futures_util::stream::select_all(streams),
        redis.clone(),
        window,
        names,
        config.accounts,
        acks.clone(),
        commit_tx,
    );
    let committer = commit(
        commit_rx,
        pool.clone(),
        (deliveries.clone(), acks),
        names,
        config.body.clone(),
        Timing { start, schedule, total },
        tally.clone(),
    );
    // The ingest side: one task per transaction, sent on schedule whatever came before.
    let send = async {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..total {
            let due = start + schedule.offset(n);
            tokio::time::sleep_until(due).await;
            let ingest = Ingest {
                channel: publish.clone(),
                redis: redis.clone(),
                exchange: names.exchange.clone(),
                key: format!("{}idem:{n}", names.keys),
                account: account_of(n, config.accounts),
                body: config.body.clone(),
            };
            let tally = tally.clone();
            tasks.spawn(async move {
                let outcome = ingest.run(n).await;
                if outcome.is_ok() {
                    let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
                    t.accepted.record(due.elapsed());
                    t.accepted_count += 1;
                }
                outcome
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.context("an ingest task panicked")??;
        }
        anyhow::Ok(())
    };
    let deadline = start + schedule.offset(total) + DRAIN_TIMEOUT;
    let work = async {
        let rest = async { tokio::try_join!(send, committer).map(|_| ()) };
        tokio::pin!(rest);
        tokio::select! {
            biased;
            done = &mut rest => done,
            // The consumer only ends by itself once the committer has everything.
            consumed = consume => {
                consumed?;
                rest.await
            }
        }
    };
    match tokio::time::timeout_at(deadline, work).await {
        Ok(result) => result?,
        Err(_) => bail!("the run did not finish within {} s of its last send", DRAIN_TIMEOUT.as_secs()),
    }
    let after = cpu::Snapshot::take();
    let _ = deliveries.close(200, "floor done".into()).await;
    let _ = publish.close(200, "floor done".into()).await;

    let stored = stored_rows(pool, names).await?;
    let left_in_queues = queued_messages(publisher, names).await?;
    let t = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let elapsed = t.last_commit.map_or(Duration::ZERO, |at| at.saturating_duration_since(start));
    Ok(FloorReport {
        offered_rate: schedule.rate(),
        scheduled: total,
        accepted: t.accepted_count,
        decided: t.decided_count,
        decided_rate: t.decided_count as f64 / elapsed.as_secs_f64().max(1e-9),
        commits: t.commits,
        shards: config.shards,
        queue_type: config.queue_type,
        body_bytes: config.body.len(),
        accepted_latency: t.accepted.summary(),
        decided_latency: t.decided.summary(),
        cpu: before.zip(after).map(|(b, a)| b.until(&a, t.decided_count)),
        stored,
        left_in_queues,
        objects: FloorObjects {
            exchange: names.exchange.clone(),
            scored_exchange: names.scored.clone(),
            queues: names.queues.clone(),
            schema: names.schema.clone(),
            key_prefix: names.keys.clone(),
        },
    })
}

/// Messages in the run's shard queues (ready, after the consumer's channel closed).
async fn queued_messages(connection: &Connection, names: &Names) -> anyhow::Result<u64> {
    let channel = connection.create_channel().await?;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let mut total = 0u64;
    for queue in &names.queues {
        let declared = channel.queue_declare(queue.as_str().into(), passive, FieldTable::default()).await?;
        total += u64::from(declared.message_count());
    }
    let _ = channel.close(200, "counted".into()).await;
    Ok(total)
}

/// Rows in the run's two tables.
async fn stored_rows(pool: &Pool, names: &Names) -> anyhow::Result<(u64, u64)> {
    let schema = &names.schema;
    let row = pool
        .get()
        .await?
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {schema}.transactions), (SELECT count(*) FROM {schema}.decisions)"
            ),
            &[],
        )
        .await?;
    let count = |i: usize| u64::try_from(row.get::<_, i64>(i)).unwrap_or(0);
    Ok((count(0), count(1)))
}

/// The account transaction `n` pays from.
fn account_of(n: u64, accounts: u64) -> String {
    format!("acct-{}", n % accounts.max(1))
}

/// Steps 1 and 2 for one transaction.
struct Ingest {
    channel: Channel,
    redis: Client,
    exchange: String,
    key: String,
    account: String,
    body: Vec<u8>,
}

impl Ingest {
    async fn run(self, n: u64) -> anyhow::Result<()> {
        use fred::types::{Expiration, SetOptions};
        let ttl = Expiration::PX(i64::try_from(KEY_TTL_MS).unwrap_or(i64::MAX));
        let claimed: Option<String> =
            self.redis.set(&self.key, "pending", Some(ttl), Some(SetOptions::NX), false).await?;
        if claimed.is_none() {
            bail!("the idempotency key {} was already claimed", self.key);
        }
        let mut headers = FieldTable::default();
        headers.insert(SHARD_KEY_HEADER.into(), AMQPValue::LongString(self.account.as_str().into()));
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(n.to_string().as_str().into())
            .with_headers(headers);
        let options = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
        let confirm = self
            .channel
            .basic_publish(self.exchange.as_str().into(), "".into(), options, &self.body, properties)
            .await?
            .await?;
        match confirm {
            lapin::Confirmation::Ack(None) => Ok(()),
            other => bail!("the broker did not accept transaction {n}: {other:?}"),
        }
    }
}

/// Which deliveries may be acked: the consumer streams of several shard queues interleave,
/// so a batch's highest tag may lie above one still on its way. A `multiple` ack goes only up
/// to the highest committed tag below every outstanding one.
#[derive(Default)]
struct Acks {
    outstanding: BTreeSet<u64>,
    committed: BTreeSet<u64>,
}

impl Acks {
    fn delivered(&mut self, tag: u64) {
        self.outstanding.insert(tag);
    }

    /// Records `tags` as committed; the tag to ack up to (`multiple`), if any.
    fn committed(&mut self, tags: impl IntoIterator<Item = u64>) -> Option<u64> {
        for tag in tags {
            self.outstanding.remove(&tag);
            self.committed.insert(tag);
        }
        multiple_ack_upto(&mut self.committed, self.outstanding.first().copied())
    }
}

/// A delivery whose window was updated, on its way to the group commit.
struct Delivered {
    tag: u64,
    n: u64,
    account: String,
}

async fn consume(
    mut deliveries: impl futures_util::Stream<Item = lapin::Result<lapin::message::Delivery>> + Unpin,
    redis: Client,
    window: Script,
    names: &Names,
    accounts: u64,
    acks: Arc<Mutex<Acks>>,
    commits: mpsc::UnboundedSender<Delivered>,
) -> anyhow::Result<()> {
    let mut windows = FuturesOrdered::new();
    let mut open = true;
    while open || !windows.is_empty() {
        tokio::select! {
            delivery = deliveries.next(), if open => {
                let Some(delivery) = delivery else { open = false; continue };
                let delivery = delivery.context("consuming")?;
                let n = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .and_then(|id| id.as_str().parse::<u64>().ok())
                    .context("a delivery without its transaction number")?;
                let account = account_of(n, accounts);
                let key = format!("{}win:{account}", names.keys);
                let (redis, window) = (redis.clone(), window.clone());
                let tag = delivery.delivery_tag;
                acks.lock().unwrap_or_else(PoisonError::into_inner).delivered(tag);
                windows.push_back(async move {
                    let now = chrono::Utc::now().timestamp_millis();
                    let args = vec![now.to_string(), n.to_string(), WINDOW_MS.to_owned()];
                    let counted: Result<i64, _> = window.evalsha_with_reload(&redis, vec![key], args).await;
                    counted.map(|_| Delivered { tag, n, account })
                });
            }
            Some(done) = windows.next(), if !windows.is_empty() => {
                let delivered = done.context("sliding window")?;
                if commits.send(delivered).is_err() {
                    // The committer is done: every transaction was committed.
                    return Ok(());
                }
            }
            else => break,
        }
    }
    Ok(())
}

/// When transactions were due.
struct Timing {
    start: Instant,
    schedule: Schedule,
    total: u64,
}

async fn commit(
    mut delivered: mpsc::UnboundedReceiver<Delivered>,
    pool: Pool,
    (channel, acks): (Channel, Arc<Mutex<Acks>>),
    names: &Names,
    body: Vec<u8>,
    timing: Timing,
    tally: Arc<Mutex<Tally>>,
) -> anyhow::Result<()> {
    let schema = &names.schema;
    let sql = format!(
        "WITH t AS (
             INSERT INTO {schema}.transactions (transaction_id, account_id, raw)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::jsonb[])
             ON CONFLICT (transaction_id) DO NOTHING)
         INSERT INTO {schema}.decisions (transaction_id, score, features, contributions, reasons)
         SELECT * FROM UNNEST($1::text[], $4::float8[], $5::bytea[], $6::bytea[], $7::text[])
         ON CONFLICT (transaction_id) DO NOTHING"
    );
    let raw: serde_json::Value = serde_json::from_slice(&body).context("the body is not JSON")?;
    let features: Vec<u8> = (0..FEATURES).flat_map(|i| (i as f64 * 0.37).to_le_bytes()).collect();
    let mut batch: VecDeque<Delivered> = VecDeque::with_capacity(BATCH_MAX);
    let mut done = 0u64;
    while done < timing.total {
        let Some(first) = delivered.recv().await else {
            bail!("the consumer stopped after {done} of {} transactions", timing.total);
        };
        batch.push_back(first);
        while batch.len() < BATCH_MAX {
            match delivered.try_recv() {
                Ok(next) => batch.push_back(next),
                Err(_) => break,
            }
        }
        let ids: Vec<String> = batch.iter().map(|d| format!("{}{}", names.keys, d.n)).collect();
        let accounts: Vec<&str> = batch.iter().map(|d| d.account.as_str()).collect();
        let raws = vec![&raw; batch.len()];
        let scores = vec![0.01f64; batch.len()];
        let vectors = vec![&features; batch.len()];
        let reasons = vec![""; batch.len()];
        let client = pool.get().await?;
        let statement = client.prepare_cached(&sql).await?;
        client.execute(&statement, &[&ids, &accounts, &raws, &scores, &vectors, &vectors, &reasons]).await?;
        drop(client);
        let committed = Instant::now();
        {
            let mut t = tally.lock().unwrap_or_else(PoisonError::into_inner);
            for d in &batch {
                t.decided
                    .record(committed.saturating_duration_since(timing.start + timing.schedule.offset(d.n)));
            }
            t.decided_count += batch.len() as u64;
            t.commits += 1;
            t.last_commit = Some(committed);
        }
        let mut confirms = Vec::with_capacity(batch.len());
        for _ in &batch {
            let confirm = channel
                .basic_publish(
                    names.scored.as_str().into(),
                    "transaction.scored".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            confirms.push(confirm);
        }
        Topology::confirm_all(confirms, Duration::from_secs(10)).await.map_err(anyhow::Error::msg)?;
        let upto = acks.lock().unwrap_or_else(PoisonError::into_inner).committed(batch.iter().map(|d| d.tag));
        if let Some(upto) = upto {
            channel.basic_ack(upto, BasicAckOptions { multiple: true }).await?;
        }
        done += batch.len() as u64;
        batch.clear();
    }
    Ok(())
}

/// The report as a table: one line per run.
pub fn table(reports: &[FloorReport]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "queues | offered tx/s | decided tx/s | commits | accepted p50/p99 ms | decided p50/p99 ms | RabbitMQ | PostgreSQL | Redis | services ms/tx | services busy | driver ms/tx | machine busy\n",
    );
    for r in reports {
        let per = |name: &str| {
            r.cpu
                .as_ref()
                .and_then(|c| c.processes.iter().find(|p| p.name == name))
                .map_or("n/a".to_owned(), |p| format!("{:.3}", p.ms_per_tx))
        };
        let _ = writeln!(
            out,
            "{:>6} | {:>12.0} | {:>12.1} | {:>7} | {:>8.1} / {:>8.1} | {:>7.1} / {:>7.1} | {:>8} | {:>10} | {:>5} | {:>14} | {:>13} | {:>12} | {:>12}",
            r.queue_type.name(),
            r.offered_rate,
            r.decided_rate,
            r.commits,
            r.accepted_latency.p50_ms,
            r.accepted_latency.p99_ms,
            r.decided_latency.p50_ms,
            r.decided_latency.p99_ms,
            per("RabbitMQ"),
            per("PostgreSQL"),
            per("Redis"),
            r.services_ms_per_tx().map_or("n/a".into(), |v| format!("{v:.3}")),
            r.services_busy_pct().map_or("n/a".into(), |v| format!("{v:.0} %")),
            per(cpu::SELF),
            r.cpu.as_ref().map_or("n/a".into(), |c| format!("{:.0} %", c.machine_busy_pct)),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multiple_ack_never_covers_a_delivery_still_on_its_way() {
        let mut acks = Acks::default();
        for tag in 1..=5 {
            acks.delivered(tag);
        }
        // 4 and 5 committed first (another shard's stream was faster): 1..3 still pending.
        assert_eq!(acks.committed([4, 5]), None);
        assert_eq!(acks.committed([1]), Some(1));
        assert_eq!(acks.committed([3]), None);
        // 2 closes the gap: everything up to 5 at once, and nothing twice afterwards.
        assert_eq!(acks.committed([2]), Some(5));
        acks.delivered(6);
        assert_eq!(acks.committed([6]), Some(6));
        assert!(acks.committed.is_empty() && acks.outstanding.is_empty());
    }
}

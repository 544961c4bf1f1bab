//! # Load generator (`fraudsense-load`)
//!
//! Sends payments to a local api at a constant arrival rate for a bounded time and reports
//! what happened to them: how fast they were accepted, decided and alerted on, and the
//! latency of each step in HDR histograms (microsecond resolution, 3 significant digits).
//!
//! ## Open loop
//!
//! Request `n` is due at `start + n / rate` ([`schedule::Schedule`]). The scheduler sleeps
//! until each due instant and hands the request to its own task, never waiting for earlier
//! answers; every latency is measured from the *scheduled* instant, so a stalled api shows
//! up as latency instead of as fewer requests (no coordinated omission). How late the
//! scheduler itself ran is reported (`max_scheduler_lag_ms`). At most `max_in_flight`
//! requests are outstanding (default 10 × rate); a request due while the cap is reached is
//! not sent and counts as an error (`errors.not_sent`) instead of delaying the schedule.
//! Requests share `connections` HTTP connections: a request waiting for one is still on the
//! clock.
//!
//! ## What is measured
//!
//! - **POST**: scheduled send → response, per class (`202`, `4xx`, `5xx`, transport error).
//! - **Decision**: scheduled send → `transactions.processed_at` of the committed decision,
//!   read from PostgreSQL (`transaction_id = ANY($1)`) while the run goes and while it
//!   drains ([`decisions`]). `processed_at` is PostgreSQL's `now()` in the transaction that
//!   committed the decision; generator and database share this machine's clock.
//! - **Alert**: scheduled send → arrival of the alert on `WS /alerts/stream` ([`alerts`]),
//!   connected before the first request.
//!
//! After the last response the run drains: it waits (at most `drain_timeout`) until every
//! accepted transaction is decided and every HIGH decision's alert arrived. The run is
//! bounded: at most [`MAX_DURATION_SECS`] of sending plus the drain, and it only ever
//! targets `127.0.0.1`, `localhost` (sent to 127.0.0.1) or `::1` ([`ApiTarget::parse`]).
//!
//! Payments come from [`bodies`]: ids `<run_id>-<n>`, accounts and merchants drawn from the
//! configured pools with a seeded RNG (with `--account-churn-secs S`, the account pool moves
//! on to fresh ids every S seconds, for memory soaks), timestamps at the scheduled instant, and a
//! `fraud_mix` fraction built to be HIGH risk (an amount of 10,000–50,000, over the default
//! `HIGH_AMOUNT` rule). Keep `rate × RATE_LIMIT_WINDOW_SECS / accounts` well below
//! `RATE_LIMIT_PER_ACCOUNT` or the api answers `429` ([`warnings`] says so up front).
//!
//! ## The report ([`Report`]; `--json` writes exactly these fields)
//!
//! | field | meaning |
//! |---|---|
//! | `run_id`, `api`, `started_at` | the run: id prefix, target, when request 0 was due (RFC 3339) |
//! | `duration_secs`, `accounts`, `merchants`, `fraud_mix` | the configuration |
//! | `offered_rate` | requests per second asked for |
//! | `scheduled` | requests in the schedule, `floor(rate × duration)` |
//! | `sent`, `sent_high_risk` | requests handed to the HTTP client (`scheduled − errors.not_sent`); of those, built HIGH |
//! | `send_rate` | requests per second actually dispatched |
//! | `accepted`, `accepted_rate` | `202` answers, and per second of the send phase |
//! | `decided`, `decided_during_send`, `decided_high` | accepted transactions with a committed decision by the end; of those, committed by the scheduled end of the send phase (`started_at + duration_secs`, whenever the last answer came); labelled HIGH |
//! | `decided_rate` | `decided` over the time from the first due request to the last commit |
//! | `backlog_at_send_end`, `backlog_after_drain` | accepted minus decided, at the scheduled end of sending and after draining (a request the api answered late counts as backlog: it was not decided on time) |
//! | `alerts_received` | distinct alerts of the run that arrived on the WebSocket |
//! | `max_scheduler_lag_ms`, `drain_secs` | how late the scheduler ran at worst; how long the drain took |
//! | `errors` | `total` = `not_sent` + `status_4xx` (incl. `status_429`) + `status_5xx` + `status_other` + `timeout` + `transport`; `by_status` counts each non-202 code |
//! | `latency.{post_202,post_4xx,post_5xx,post_failed,decision,alert}` | each `{count, p50_ms, p95_ms, p99_ms, p999_ms, max_ms}`, from the scheduled send time |
//! | `cpu` | processor time of the local api, worker, RabbitMQ, PostgreSQL, Redis and this generator from the first request to the end of the drain: per process group `{name, cpu_secs, ms_per_tx}` (per decided transaction), `total_cpu_secs`, `total_ms_per_tx`, `machine_busy_pct` of `cores` over `wall_secs` ([`cpu`]); `null` without `/proc` |
//! | `worker_memory` | with `--watch-worker`: the worker's resident memory, live account actors and parked windows, sampled every second ([`memory`]); else `null` |
//! | `notes`, `warnings` | how to read the numbers; what makes them less trustworthy |
//!
//! Invariants: `scheduled = accepted + errors.total` and
//! `sent = accepted + errors.total − errors.not_sent`.

pub mod alerts;
pub mod bodies;
pub mod cpu;
pub mod decisions;
pub mod memory;
pub mod report;
pub mod schedule;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, TimeDelta, Utc};
use deadpool_postgres::Pool;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
    time::{Instant, MissedTickBehavior},
};

pub use report::Report;
use report::{Errors, Latencies, Latency};
use schedule::Schedule;

use self::{alerts::AlertListener, bodies::Bodies, decisions::DecisionWatch, memory::MemoryWatch};

/// Longest send phase a run may ask for.
pub const MAX_DURATION_SECS: u64 = 3600;
/// Highest rate a run may ask for, requests per second.
pub const MAX_RATE: f64 = 100_000.0;
/// Longest drain a run may ask for.
pub const MAX_DRAIN_SECS: u64 = 3600;
/// Time between building the schedule and request 0 (connections are warm by then).
const LEAD: Duration = Duration::from_millis(100);
/// How often decisions are looked up while sending.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often decisions are looked up while draining.
const DRAIN_POLL_EVERY: Duration = Duration::from_millis(200);
/// How often progress is logged.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// `--api` names a host other than the local machine.
    #[error("--api {0}: only http://127.0.0.1, http://localhost or http://[::1] may be targeted")]
    NotLocal(String),
    /// A setting is out of range or malformed.
    #[error("{flag}: {reason}")]
    Invalid {
        /// The flag (`--rate`, ...).
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The api did not answer `/health` or the alert stream before the run.
    #[error("the api at {api} is unreachable: {reason}")]
    Unreachable {
        /// The api's base URL.
        api: String,
        /// What failed.
        reason: String,
    },
    /// PostgreSQL could not be read before the run.
    #[error("PostgreSQL: {0}")]
    Database(String),
}

impl LoadError {
    /// The process exit code for a failed run: 2 misuse, 3 api unreachable at the start,
    /// 1 anything else (settings, PostgreSQL).
    pub fn exit_code(error: &anyhow::Error) -> u8 {
        match error.downcast_ref::<LoadError>() {
            Some(LoadError::NotLocal(_) | LoadError::Invalid { .. }) => 2,
            Some(LoadError::Unreachable { .. }) => 3,
            _ => 1,
        }
    }
}

/// The api to load: always on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiTarget {
    http: String,
    ws: String,
}

impl ApiTarget {
    /// Parses `http://HOST[:PORT]` where HOST is `127.0.0.1`, `localhost` (targeted as
    /// 127.0.0.1) or `[::1]`; anything else is refused.
    pub fn parse(s: &str) -> Result<Self, LoadError> {
        Self::parse_flag(s, "--api")
    }

    /// [`ApiTarget::parse`] for another local service, `flag` naming it in errors.
    pub fn parse_flag(s: &str, flag: &'static str) -> Result<Self, LoadError> {
        let invalid = |reason: &str| LoadError::Invalid { flag, reason: format!("{s}: {reason}") };
        let url = url::Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
        let ip = match url.host() {
            Some(url::Host::Ipv4(ip)) if ip == Ipv4Addr::LOCALHOST => IpAddr::V4(ip),
            Some(url::Host::Ipv6(ip)) if ip == Ipv6Addr::LOCALHOST => IpAddr::V6(ip),
            Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            Some(other) => return Err(LoadError::NotLocal(other.to_string())),
            None => return Err(invalid("no host")),
        };
        if url.scheme() != "http" {
            return Err(invalid("only http:// is supported (the api is local)"));
        }
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.path() != "/"
        {
            return Err(invalid("give only scheme, host and port"));
        }
        let port = url.port().unwrap_or(80);
        let host = match ip {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Ok(Self { http: format!("http://{host}:{port}"), ws: format!("ws://{host}:{port}") })
    }

    /// `http://host:port`.
    pub fn http_base(&self) -> &str {
        &self.http
    }

    /// `ws://host:port`.
    pub fn ws_base(&self) -> &str {
        &self.ws
    }
}

/// The api's per-account rate limit, to warn about `429`s before they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Transactions one account may submit per window (`RATE_LIMIT_PER_ACCOUNT`).
    pub per_account: u32,
    /// The window (`RATE_LIMIT_WINDOW_SECS`).
    pub window: Duration,
}

impl RateLimit {
    /// The limit the api enforces with these settings.
    pub fn of(http: &fraudsense_actors::settings::HttpSettings) -> Self {
        Self { per_account: http.rate_limit, window: http.rate_window }
    }
}

/// What a measuring tool (`fraudsense-load`, `fraudsense-bench`) starts with: the
/// environment's settings, `database_url` overriding `DATABASE_URL`, and logs on stderr
/// (stdout carries the report).
pub fn tool_setup(
    component: &'static str,
    database_url: Option<String>,
) -> anyhow::Result<(fraudsense_actors::Settings, fraudsense_actors::telemetry::Telemetry)> {
    use anyhow::Context;
    let mut settings = fraudsense_actors::Settings::from_env().context("invalid configuration")?;
    let telemetry = fraudsense_actors::telemetry::init_with_writer(
        component,
        fraudsense_actors::settings::LogFormat::Pretty,
        &settings.tracing,
        std::io::stderr,
    );
    if let Some(url) = database_url {
        settings.database.url = secrecy::SecretString::from(url);
    }
    Ok((settings, telemetry))
}

/// The token a measuring tool sends: `given` (`--token` / `FRAUDSENSE_TOKEN`), else one
/// minted with the configured HS256 secret for `tool` with the ingest and analyst roles,
/// valid for `ttl`.
pub fn tool_token(
    settings: &fraudsense_actors::Settings,
    tool: &str,
    given: Option<String>,
    ttl: Duration,
) -> anyhow::Result<secrecy::SecretString> {
    use anyhow::Context;
    use fraudsense_actors::auth::{self, Role};
    if let Some(token) = given.filter(|t| !t.is_empty()) {
        return Ok(secrecy::SecretString::from(token));
    }
    let claims = auth::claims(&settings.auth, tool, &[Role::Ingest, Role::Analyst], ttl);
    let token = auth::mint(&settings.auth, &claims)
        .context("no --token or FRAUDSENSE_TOKEN, and no HS256 secret to mint one (`make load` and `make bench` set AUTH_HS256_SECRET_FILE)")?;
    Ok(secrecy::SecretString::from(token))
}

/// One run's settings.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Where to send.
    pub api: ApiTarget,
    /// Requests per second.
    pub rate: f64,
    /// How long to send (1 s ..= [`MAX_DURATION_SECS`]).
    pub duration: Duration,
    /// Accounts payments are drawn from.
    pub accounts: usize,
    /// Merchants payments are drawn from.
    pub merchants: usize,
    /// Fraction of payments built to be HIGH risk, 0 ..= 1.
    pub fraud_mix: f64,
    /// HTTP connections the requests share.
    pub connections: usize,
    /// Most requests outstanding at once; `None` means 10 × rate (at least 100).
    pub max_in_flight: Option<usize>,
    /// Longest wait for one response.
    pub request_timeout: Duration,
    /// Longest wait, after the last response, for decisions and alerts.
    pub drain_timeout: Duration,
    /// Prefix of every transaction id of the run.
    pub run_id: String,
    /// Seed of the payment sequence.
    pub seed: u64,
    /// The api's per-account rate limit, if known (for [`warnings`]).
    pub rate_limit: Option<RateLimit>,
    /// A worker whose `/metrics` to sample for resident memory and live account actors.
    pub watch_worker: Option<ApiTarget>,
    /// Move the account pool on to fresh ids this often ([`Bodies::with_churn`]).
    pub account_churn: Option<Duration>,
    /// First account number ([`Bodies::with_account_base`]).
    pub account_base: usize,
    /// The bearer token sent with every request and on the alert stream (roles ingest and
    /// analyst); `None` sends none (the api then answers 401).
    pub token: Option<secrecy::SecretString>,
}

impl LoadConfig {
    /// Defaults for everything but the target, rate and duration.
    pub fn new(api: ApiTarget, rate: f64, duration: Duration) -> Self {
        Self {
            api,
            rate,
            duration,
            accounts: 10_000,
            merchants: 500,
            fraud_mix: 0.05,
            connections: 128,
            max_in_flight: None,
            request_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(60),
            run_id: default_run_id(Utc::now()),
            seed: 42,
            rate_limit: None,
            watch_worker: None,
            account_churn: None,
            account_base: 0,
            token: None,
        }
    }

    /// Checks every setting is in range.
    pub fn validate(&self) -> Result<(), LoadError> {
        let invalid = |flag, reason: String| Err(LoadError::Invalid { flag, reason });
        if !(self.rate.is_finite() && self.rate >= 0.001 && self.rate <= MAX_RATE) {
            return invalid("--rate", format!("{} is not between 0.001 and {MAX_RATE} tx/s", self.rate));
        }
        if self.duration < Duration::from_secs(1) || self.duration > Duration::from_secs(MAX_DURATION_SECS) {
            return invalid("--duration", format!("must be 1 to {MAX_DURATION_SECS} seconds"));
        }
        if Schedule::new(self.rate, self.duration).total() == 0 {
            return invalid("--rate", "rate × duration is less than one request".into());
        }
        if !(1..=10_000_000).contains(&self.accounts) {
            return invalid("--accounts", "must be 1 to 10,000,000".into());
        }
        if !(1..=1_000_000).contains(&self.merchants) {
            return invalid("--merchants", "must be 1 to 1,000,000".into());
        }
        if !(0.0..=1.0).contains(&self.fraud_mix) {
            return invalid("--fraud-mix", format!("{} is not a fraction between 0 and 1", self.fraud_mix));
        }
        if !(1..=4096).contains(&self.connections) {
            return invalid("--connections", "must be 1 to 4096".into());
        }
        if self.max_in_flight == Some(0) {
            return invalid("--max-in-flight", "must be at least 1".into());
        }
        if self.drain_timeout > Duration::from_secs(MAX_DRAIN_SECS) {
            return invalid("--drain-timeout", format!("must be at most {MAX_DRAIN_SECS} seconds"));
        }
        if self.account_churn.is_some_and(|d| d < Duration::from_secs(1)) {
            return invalid("--account-churn-secs", "must be at least 1 second".into());
        }
        if self.request_timeout.is_zero() {
            return invalid("--request-timeout", "must be positive".into());
        }
        let last = bodies::transaction_id(&self.run_id, Schedule::new(self.rate, self.duration).total());
        if let Some(problem) = fraudsense_actors::transaction::identifier_problem(&last) {
            return invalid("--run-id", format!("ids such as {last:?} would be refused: {problem}"));
        }
        Ok(())
    }

    fn in_flight_cap(&self) -> usize {
        self.max_in_flight.unwrap_or_else(|| ((self.rate * 10.0).ceil() as usize).max(100))
    }
}

/// The default run id: `load-` and the UTC time to the millisecond.
pub fn default_run_id(now: DateTime<Utc>) -> String {
    now.format("load-%Y%m%dT%H%M%S%3fZ").to_string()
}

/// What to know before a run starts: the api's rate limit would answer `429` to some
/// payments when one account is expected to submit more than its limit per window.
pub fn warnings(config: &LoadConfig) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(limit) = config.rate_limit {
        let window = limit.window.min(config.duration).as_secs_f64();
        let per_account = config.rate * window / config.accounts as f64;
        if per_account > f64::from(limit.per_account) * 0.8 {
            out.push(format!(
                "each account submits about {per_account:.1} payments per {}s rate-limit window \
                 (RATE_LIMIT_PER_ACCOUNT={}): expect 429s; raise --accounts above {}",
                limit.window.as_secs(),
                limit.per_account,
                (config.rate * limit.window.as_secs_f64() / (f64::from(limit.per_account) * 0.5)).ceil()
            ));
        }
    }
    out
}

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Accepted,
    Status(u16),
    Timeout,
    Transport,
}

#[derive(Debug)]
struct Outcome {
    n: u64,
    class: Class,
    latency: Duration,
}

/// What the scheduler did.
#[derive(Debug, Default)]
struct Dispatched {
    sent: u64,
    sent_high_risk: u64,
    not_sent: u64,
    max_lag: Duration,
    /// When the last request was handed over, after the start.
    last: Duration,
}

/// Everything the scheduler and its requests share.
struct Sender {
    client: reqwest::Client,
    url: Arc<str>,
    schedule: Schedule,
    start: Instant,
    start_wall: DateTime<Utc>,
    bodies: Bodies,
    in_flight: Arc<Semaphore>,
    connections: Arc<Semaphore>,
}

impl Sender {
    /// Dispatches every request at its due instant; returns once the last is handed over.
    async fn run(mut self, outcomes: mpsc::UnboundedSender<Outcome>) -> Dispatched {
        let mut done = Dispatched::default();
        for n in 0..self.schedule.total() {
            let offset = self.schedule.offset(n);
            let due = self.start + offset;
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            let now = Instant::now();
            done.max_lag = done.max_lag.max(now.saturating_duration_since(due));
            // The body is built whether or not it can be sent, so the sequence never changes.
            let payment = self.bodies.payment(n, self.start_wall + delta(offset));
            let Ok(slot) = Arc::clone(&self.in_flight).try_acquire_owned() else {
                done.not_sent += 1;
                continue;
            };
            done.sent += 1;
            done.sent_high_risk += u64::from(payment.high_risk);
            done.last = offset;
            let request = Request {
                client: self.client.clone(),
                url: Arc::clone(&self.url),
                connections: Arc::clone(&self.connections),
                n,
                due,
            };
            tokio::spawn(request.send(payment.body, slot, outcomes.clone()));
        }
        done
    }
}

struct Request {
    client: reqwest::Client,
    url: Arc<str>,
    connections: Arc<Semaphore>,
    n: u64,
    due: Instant,
}

impl Request {
    async fn send(self, body: Vec<u8>, slot: OwnedSemaphorePermit, outcomes: mpsc::UnboundedSender<Outcome>) {
        let class = {
            let _connection = self.connections.acquire().await;
            let sent = self
                .client
                .post(&*self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    // Read the (small) body so the connection goes back to the pool.
                    let _ = response.bytes().await;
                    if status == 202 { Class::Accepted } else { Class::Status(status) }
                }
                Err(e) if e.is_timeout() => Class::Timeout,
                Err(_) => Class::Transport,
            }
        };
        let latency = Instant::now().saturating_duration_since(self.due);
        drop(slot);
        let _ = outcomes.send(Outcome { n: self.n, class, latency });
    }
}

/// Counts and histograms gathered while the run goes.
#[derive(Default)]
struct Tally {
    accepted: u64,
    errors: Errors,
    post_202: Latency,
    post_4xx: Latency,
    post_5xx: Latency,
    post_failed: Latency,
    decision: Latency,
    decided: u64,
    decided_high: u64,
    decided_during_send: u64,
    last_commit: Option<DateTime<Utc>>,
    poll_failures: u64,
    last_poll_error: Option<String>,
}

impl Tally {
    fn response(&mut self, o: Outcome, watch: &mut DecisionWatch) {
        let e = &mut self.errors;
        match o.class {
            Class::Accepted => {
                self.accepted += 1;
                self.post_202.record(o.latency);
                watch.expect(o.n);
                return;
            }
            Class::Status(code) => {
                *e.by_status.entry(code.to_string()).or_default() += 1;
                match code {
                    400..=499 => {
                        e.status_4xx += 1;
                        e.status_429 += u64::from(code == 429);
                        self.post_4xx.record(o.latency);
                    }
                    500..=599 => {
                        e.status_5xx += 1;
                        self.post_5xx.record(o.latency);
                    }
                    _ => e.status_other += 1,
                }
            }
            Class::Timeout => {
                e.timeout += 1;
                self.post_failed.record(o.latency);
            }
            Class::Transport => {
                e.transport += 1;
                self.post_failed.record(o.latency);
            }
        }
        e.total += 1;
    }

    /// Looks decisions up and records the new ones; `send_end` is the scheduled end of the
    /// send phase.
    async fn poll(
        &mut self,
        watch: &mut DecisionWatch,
        schedule: Schedule,
        start_wall: DateTime<Utc>,
        send_end: DateTime<Utc>,
    ) {
        match watch.poll().await {
            Ok(decided) => {
                for d in decided {
                    let due = start_wall + delta(schedule.offset(d.n));
                    self.decision.record((d.processed_at - due).to_std().unwrap_or_default());
                    self.decided += 1;
                    self.decided_high += u64::from(d.risk_label.as_deref() == Some("HIGH"));
                    self.decided_during_send += u64::from(d.processed_at <= send_end);
                    self.last_commit = self.last_commit.max(Some(d.processed_at));
                }
            }
            Err(error) => {
                self.poll_failures += 1;
                tracing::warn!(component = "load", error = format!("{error:#}"), "decision lookup failed");
                self.last_poll_error = Some(format!("{error:#}"));
            }
        }
    }
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Runs one load test against `config.api`, reading decisions from `pool` (the api's
/// database). Returns the report of a completed run, whatever the api answered; fails only
/// on a bad configuration or when the api, its alert stream or PostgreSQL cannot be reached
/// before the first request.
pub async fn run(config: LoadConfig, pool: Pool) -> Result<Report, LoadError> {
    config.validate()?;
    let schedule = Schedule::new(config.rate, config.duration);
    let api = config.api.http_base().to_owned();
    let unreachable = |reason: String| LoadError::Unreachable { api: api.clone(), reason };
    let token = config.token.as_ref().map(|t| secrecy::ExposeSecret::expose_secret(t).to_owned());
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &token {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| LoadError::Invalid { flag: "--token", reason: "not a valid header value".into() })?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(config.connections)
        .timeout(config.request_timeout)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| unreachable(format!("building the HTTP client: {e}")))?;
    match client.get(format!("{api}/health")).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => return Err(unreachable(format!("GET /health answered {}", r.status()))),
        Err(e) => return Err(unreachable(format!("GET /health: {e}"))),
    }
    let since = decisions::newest_alert_id(&pool).await.map_err(|e| LoadError::Database(format!("{e:#}")))?;
    let listener = AlertListener::connect(config.api.ws_base(), since, &config.run_id, token)
        .await
        .map_err(|e| unreachable(format!("WS /alerts/stream: {e}")))?;
    let mut warnings = warnings(&config);
    let memory = match &config.watch_worker {
        Some(worker) => Some(
            MemoryWatch::start(worker, client.clone())
                .await
                .map_err(|reason| LoadError::Unreachable { api: worker.http_base().to_owned(), reason })?,
        ),
        None => None,
    };

    let start = Instant::now() + LEAD;
    let start_wall = Utc::now() + delta(LEAD);
    tracing::info!(
        component = "load",
        run_id = config.run_id,
        rate = schedule.rate(),
        requests = schedule.total(),
        "sending"
    );
    let (outcomes, mut responses) = mpsc::unbounded_channel();
    let sender = Sender {
        client,
        url: format!("{api}/transactions").into(),
        schedule,
        start,
        start_wall,
        bodies: Bodies::new(&config.run_id, config.accounts, config.merchants, config.fraud_mix, config.seed)
            .with_churn(start_wall, config.account_churn.unwrap_or_default())
            .with_account_base(config.account_base),
        in_flight: Arc::new(Semaphore::new(config.in_flight_cap())),
        connections: Arc::new(Semaphore::new(config.connections)),
    };
    let cpu_before = cpu::Snapshot::take();
    let scheduler = tokio::spawn(sender.run(outcomes));

    let mut tally = Tally::default();
    let mut watch = DecisionWatch::new(pool, &config.run_id);
    // The schedule's end, not the last answer's: a stalled api must not stretch the phase
    // its backlog and decided rate are measured over.
    let send_end = start_wall + delta(config.duration);
    let mut poll = tokio::time::interval_at(start + POLL_EVERY, POLL_EVERY);
    poll.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut progress = tokio::time::interval_at(start + PROGRESS_EVERY, PROGRESS_EVERY);
    progress.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // Every request task holds a sender: the channel closes after the last response.
    loop {
        tokio::select! {
            response = responses.recv() => match response {
                Some(outcome) => tally.response(outcome, &mut watch),
                None => break,
            },
            _ = poll.tick() => tally.poll(&mut watch, schedule, start_wall, send_end).await,
            _ = progress.tick() => tracing::info!(
                component = "load",
                accepted = tally.accepted,
                errors = tally.errors.total,
                decided = tally.decided,
                alerts = listener.received(),
                "progress"
            ),
        }
    }
    let dispatched = scheduler.await.unwrap_or_default();
    tally.errors.not_sent = dispatched.not_sent;
    tally.errors.total += dispatched.not_sent;

    // Drain: wait for the decisions and alerts still on their way.
    let drain_start = Instant::now();
    let deadline = drain_start + config.drain_timeout;
    loop {
        tally.poll(&mut watch, schedule, start_wall, send_end).await;
        let caught_up = watch.pending() == 0 && listener.received() >= tally.decided_high;
        if caught_up {
            break;
        }
        if Instant::now() >= deadline {
            warnings.push(format!(
                "drain timed out after {} s: {} decisions and {} alerts still missing",
                config.drain_timeout.as_secs(),
                watch.pending(),
                tally.decided_high.saturating_sub(listener.received())
            ));
            break;
        }
        tokio::time::sleep(DRAIN_POLL_EVERY).await;
    }
    let drain_secs = drain_start.elapsed().as_secs_f64();
    let cpu = cpu_before.and_then(|before| Some(before.until(&cpu::Snapshot::take()?, tally.decided)));
    let log = listener.finish().await;
    let worker_memory = match memory {
        Some(watch) => Some(watch.finish().await),
        None => None,
    };

    let mut alert = Latency::new();
    for (n, at) in &log.arrivals {
        alert.record(at.saturating_duration_since(start + schedule.offset(*n)));
    }
    if tally.poll_failures > 0 {
        warnings.push(format!(
            "{} decision lookups failed (last: {}); decision counts may be low",
            tally.poll_failures,
            tally.last_poll_error.as_deref().unwrap_or("?")
        ));
    }
    if log.lagged > 0 || log.reconnects > 0 {
        warnings.push(format!(
            "the alert stream reconnected {} times ({} lagged); alerts replayed on reconnect arrive late",
            log.reconnects, log.lagged
        ));
    }
    if tally.errors.not_sent > 0 {
        warnings.push(format!(
            "{} requests were not sent: {} were already in flight (--max-in-flight)",
            tally.errors.not_sent,
            config.in_flight_cap()
        ));
    }

    let send_secs = (dispatched.last + schedule.interval()).as_secs_f64().max(1e-9);
    let decide_secs = tally.last_commit.map_or(0.0, |t| (t - start_wall).as_seconds_f64());
    Ok(Report {
        run_id: config.run_id.clone(),
        api,
        started_at: start_wall.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        duration_secs: config.duration.as_secs_f64(),
        accounts: config.accounts,
        merchants: config.merchants,
        fraud_mix: config.fraud_mix,
        offered_rate: schedule.rate(),
        scheduled: schedule.total(),
        sent: dispatched.sent,
        sent_high_risk: dispatched.sent_high_risk,
        send_rate: if dispatched.sent == 0 { 0.0 } else { dispatched.sent as f64 / send_secs },
        accepted: tally.accepted,
        accepted_rate: if dispatched.sent == 0 { 0.0 } else { tally.accepted as f64 / send_secs },
        decided: tally.decided,
        decided_during_send: tally.decided_during_send,
        decided_rate: if decide_secs > 0.0 { tally.decided as f64 / decide_secs } else { 0.0 },
        decided_high: tally.decided_high,
        // Decisions committed before the end but seen by a later poll count as during.
        backlog_at_send_end: tally.accepted.saturating_sub(tally.decided_during_send),
        backlog_after_drain: watch.pending() as u64,
        alerts_received: log.arrivals.len() as u64,
        max_scheduler_lag_ms: dispatched.max_lag.as_secs_f64() * 1000.0,
        drain_secs,
        errors: tally.errors,
        latency: Latencies {
            post_202: tally.post_202.summary(),
            post_4xx: tally.post_4xx.summary(),
            post_5xx: tally.post_5xx.summary(),
            post_failed: tally.post_failed.summary(),
            decision: tally.decision.summary(),
            alert: alert.summary(),
        },
        cpu,
        worker_memory,
        notes: vec![
            "every latency starts at the request's scheduled send time (open loop: a slow answer \
             delays no later request, so nothing is hidden by coordinated omission)"
                .into(),
            "decision = transactions.processed_at, PostgreSQL now() in the transaction that \
             committed the decision (same machine clock as this generator)"
                .into(),
            "alert = arrival on WS /alerts/stream (live via Redis pub/sub, else the api's 2 s \
             PostgreSQL catch-up)"
                .into(),
        ],
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LoadConfig {
        let api = ApiTarget::parse("http://127.0.0.1:8080").unwrap_or_else(|e| panic!("{e}"));
        LoadConfig::new(api, 1000.0, Duration::from_secs(20))
    }

    #[test]
    fn load_refuses_hosts_other_than_this_machine() {
        for ok in ["http://127.0.0.1:8080", "http://localhost:8080/", "http://[::1]:9000", "http://LOCALHOST"]
        {
            let target = ApiTarget::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(
                target.http_base().starts_with("http://127.0.0.1:")
                    || target.http_base().starts_with("http://[::1]:")
            );
        }
        assert_eq!(
            ApiTarget::parse("http://localhost:8080").map(|t| t.ws_base().to_owned()).ok().as_deref(),
            Some("ws://127.0.0.1:8080")
        );
        for far in [
            "http://10.0.0.5:8080",
            "http://example.com",
            "http://127.0.0.2:8080",
            "http://0.0.0.0:8080",
            "http://localhost.example.com",
            "http://[::2]:8080",
        ] {
            match ApiTarget::parse(far) {
                Err(LoadError::NotLocal(host)) => assert!(far.contains(&host), "{far}: {host}"),
                other => panic!("{far} accepted: {other:?}"),
            }
        }
        for bad in ["https://127.0.0.1", "127.0.0.1:8080", "http://u:p@127.0.0.1", "http://127.0.0.1/api"] {
            assert!(ApiTarget::parse(bad).is_err(), "{bad} accepted");
        }
        let message = ApiTarget::parse("http://10.1.2.3").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("10.1.2.3") && message.contains("127.0.0.1"), "{message}");
    }

    #[test]
    fn load_config_bounds() {
        assert!(config().validate().is_ok());
        let flag = |c: LoadConfig| match c.validate() {
            Err(LoadError::Invalid { flag, .. }) => flag,
            other => panic!("{other:?}"),
        };
        assert_eq!(flag(LoadConfig { duration: Duration::from_secs(3601), ..config() }), "--duration");
        assert_eq!(flag(LoadConfig { duration: Duration::ZERO, ..config() }), "--duration");
        assert_eq!(flag(LoadConfig { rate: 0.0, ..config() }), "--rate");
        assert_eq!(flag(LoadConfig { rate: f64::NAN, ..config() }), "--rate");
        assert_eq!(flag(LoadConfig { rate: 1e6, ..config() }), "--rate");
        assert_eq!(flag(LoadConfig { fraud_mix: 1.5, ..config() }), "--fraud-mix");
        assert_eq!(flag(LoadConfig { accounts: 0, ..config() }), "--accounts");
        assert_eq!(flag(LoadConfig { run_id: "has space".into(), ..config() }), "--run-id");
        assert_eq!(flag(LoadConfig { run_id: "x".repeat(125), ..config() }), "--run-id");
        assert_eq!(config().in_flight_cap(), 10_000);
        assert_eq!(LoadConfig { rate: 2.0, ..config() }.in_flight_cap(), 100);
    }

    #[test]
    fn load_default_run_ids_are_valid_and_distinct() {
        let t = Utc::now();
        let a = default_run_id(t);
        let b = default_run_id(t + TimeDelta::milliseconds(1));
        assert_ne!(a, b);
        assert!(a.starts_with("load-"));
        assert!(LoadConfig { run_id: a, ..config() }.validate().is_ok());
    }

    #[test]
    fn load_warns_when_accounts_would_hit_the_rate_limit() {
        let limit = Some(RateLimit { per_account: 60, window: Duration::from_secs(60) });
        assert!(warnings(&LoadConfig { rate_limit: limit, ..config() }).is_empty());
        let crowded = LoadConfig { accounts: 300, rate_limit: limit, ..config() };
        let w = warnings(&crowded);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("429"), "{w:?}");
        // A short run only fills part of the window.
        let short = LoadConfig { duration: Duration::from_secs(2), ..crowded };
        assert!(warnings(&short).is_empty());
    }
}

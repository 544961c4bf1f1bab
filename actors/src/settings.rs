//! One typed configuration for both binaries, read from the environment in one place.
//!
//! Every variable has a default that works against the local services `make up` starts, so a
//! laptop needs no configuration at all; in Kubernetes each one comes from a ConfigMap or Secret.

use std::{fmt::Display, net::SocketAddr, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

use crate::tls::{CaFile, PgSslMode};

/// A setting that could not be parsed; names the variable so start-up errors are actionable.
#[derive(Debug, thiserror::Error)]
#[error("environment variable {var}={value:?} is invalid: {reason}")]
pub struct SettingsError {
    /// The variable's name.
    pub var: &'static str,
    /// What it was set to.
    pub value: String,
    /// Why that is not acceptable.
    pub reason: String,
}

/// Every environment variable the binaries read, with its default and meaning.
/// The README's configuration table is checked against this list by a test.
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("FRAUDSENSE_API_ADDR", "127.0.0.1:8080", "address the api listens on"),
    ("FRAUDSENSE_WORKER_ADDR", "127.0.0.1:9100", "address the worker serves /metrics, /health and /ready on"),
    (
        "DATABASE_URL",
        "postgres://postgres:postgres@127.0.0.1:5432/fraudsense",
        "PostgreSQL connection string",
    ),
    ("DATABASE_POOL_SIZE", "16", "maximum PostgreSQL connections per process"),
    (
        "DATABASE_CA_FILE",
        "",
        "PEM file of CA certificates trusted for PostgreSQL TLS (sslmode=require, verify-ca or verify-full), besides the system's",
    ),
    ("REDIS_URL", "redis://127.0.0.1:6379", "Redis connection string"),
    ("REDIS_KEY_PREFIX", "fraudsense:", "prefix of every Redis key this deployment writes"),
    ("REDIS_CA_FILE", "", "PEM file of CA certificates trusted for rediss:// URLs, besides the system's"),
    ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f", "RabbitMQ connection string (vhost URL-encoded)"),
    ("AMQP_CA_FILE", "", "PEM file of CA certificates trusted for amqps:// URLs, besides the system's"),
    ("AMQP_PREFIX", "fraudsense.", "prefix of every exchange and queue name"),
    ("AMQP_PREFETCH", "256", "unacknowledged deliveries a worker holds at once"),
    ("AMQP_SHARDS", "8", "shard queues transactions are hashed onto (most worker nodes sharing the work)"),
    (
        "SHARD_KEY",
        "account_id",
        "what transactions are sharded and ordered by: account_id, merchant_id or country",
    ),
    ("AMQP_DELIVERY_LIMIT", "5", "deliveries of one message before it is dead-lettered"),
    ("RETRY_DELAY_MS", "5000", "how long a message that failed on its own waits before it is tried again"),
    ("RETRY_MAX", "3", "delayed retries of such a message before it is dead-lettered"),
    (
        "PUBLISH_SCORED",
        "true",
        "publish a transaction.scored event (transaction + decision) for every committed decision",
    ),
    (
        "RABBITMQ_MANAGEMENT_URL",
        "http://127.0.0.1:15672",
        "management API workers read shard ownership from (off: no balancing)",
    ),
    ("BALANCE_INTERVAL_MS", "2000", "how often a worker rebalances shards across nodes"),
    (
        "PUBLISH_CONFIRM_TIMEOUT_MS",
        "5000",
        "how long the api waits for a broker confirm before answering 503",
    ),
    ("HTTP_MAX_IN_FLIGHT", "1024", "requests the api serves at once; more are shed with 503"),
    ("HTTP_REQUEST_TIMEOUT_MS", "10000", "longest the api works on one request before answering 503"),
    ("HTTP_MAX_HEADER_BYTES", "16384", "largest request header section the api accepts (431 beyond)"),
    (
        "WS_MAX_MESSAGE_BYTES",
        "4096",
        "largest message a client may send on the alert stream (the stream closes beyond)",
    ),
    (
        "CORS_ALLOWED_ORIGINS",
        "",
        "comma-separated origins allowed to call the api from a browser (empty: CORS closed)",
    ),
    ("AUTH_ISSUER", "fraudsense", "the iss every bearer token must carry"),
    ("AUTH_AUDIENCE", "fraudsense-api", "the aud every bearer token must carry"),
    ("AUTH_HS256_SECRET", "", "HS256 token secret, at least 32 bytes (development; prefer the _FILE form)"),
    (
        "AUTH_HS256_SECRET_FILE",
        "",
        "file holding the HS256 token secret (`make up` writes .run/auth-hs256.secret)",
    ),
    ("AUTH_JWKS_FILE", "", "JWKS file of the identity provider's RS256 public keys (production)"),
    ("AUTH_LEEWAY_SECS", "30", "clock skew tolerated on a token's exp and nbf"),
    ("RATE_LIMIT_PER_ACCOUNT", "60", "transactions one account may submit per window (429 beyond)"),
    ("RATE_LIMIT_WINDOW_SECS", "60", "length of the rate-limit window"),
    (
        "IDEMPOTENCY_TTL_SECS",
        "86400",
        "how long Redis remembers a transaction_id (the database is the backstop after)",
    ),
    ("COMMIT_BATCH_MAX", "256", "decisions the worker commits to PostgreSQL in one transaction at most"),
    (
        "COMMIT_BATCH_WAIT_MS",
        "0",
        "longest a decision waits for its commit batch to fill (0: a batch is whatever is queued)",
    ),
    (
        "ACCOUNT_IDLE_SECS",
        "30",
        "a per-account actor idle this long is stopped; its window is parked in memory (and stays in Redis)",
    ),
    (
        "MAX_ACCOUNT_ACTORS",
        "25000",
        "most per-account actors one worker keeps; the least recently used go first (about 9 KiB each)",
    ),
    (
        "WINDOW_PARK_SECS",
        "900",
        "how long a stopped account actor's window stays in memory for the account's next actor",
    ),
    ("MAX_PARKED_WINDOWS", "250000", "most parked account windows one worker keeps; the oldest go first"),
    ("SHUTDOWN_TIMEOUT_SECS", "30", "on SIGTERM, how long the worker may finish and commit in-flight work"),
    (
        "MERCHANT_LABEL_DELAY_SECS",
        "86400",
        "a label counts in a merchant's risk rate only this long after it arrived (no leakage)",
    ),
    ("MERCHANT_LABEL_DAYS", "90", "how far back labels count in a merchant's risk rate"),
    (
        "ENGINE_REFRESH_MS",
        "2000",
        "how often workers check for a newly activated rule set or model (hot reload)",
    ),
    ("MIGRATE_ON_START", "true", "apply database migrations when a binary starts"),
    ("LOG_FORMAT", "json", "json for machines, pretty for a terminal"),
    (
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "",
        "OTLP collector traces are exported to, e.g. http://127.0.0.1:4317 (empty: traces are not exported)",
    ),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTLP transport: grpc (port 4317) or http/protobuf (port 4318)"),
    (
        "OTEL_TRACES_SAMPLER_ARG",
        "1.0",
        "fraction of new traces exported, 0 to 1 (a request that arrives sampled stays sampled)",
    ),
    ("RUST_LOG", "info", "log filter (tracing-subscriber EnvFilter syntax)"),
];

/// PostgreSQL connection.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// Full connection string; secret because it usually carries a password. Its `sslmode`
    /// (see [`PgSslMode`]) decides whether connections use TLS.
    pub url: SecretString,
    /// Pool size per process: bounded so N replicas cannot exhaust `max_connections`.
    pub pool_size: usize,
    /// CAs trusted besides the system's for TLS (a private CA, e.g. an operator's).
    pub ca_file: Option<CaFile>,
}

/// Redis connection.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Connection string; secret because it may carry a password.
    pub url: SecretString,
    /// Prefix of every key, so deployments (and tests) can share one Redis.
    pub key_prefix: String,
    /// CAs trusted besides the system's for `rediss://`.
    pub ca_file: Option<CaFile>,
}

/// RabbitMQ connection and the shape of what we declare on it.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// Connection string; secret because it carries credentials.
    pub url: SecretString,
    /// CAs trusted besides the system's for `amqps://`.
    pub ca_file: Option<CaFile>,
    /// Prefix of every exchange and queue, so deployments (and tests) can share one broker.
    pub prefix: String,
    /// Deliveries in flight per consumer: bounds worker memory under any backlog.
    pub prefetch: u16,
    /// Deliveries of one message before the broker dead-letters it (poison message guard).
    pub delivery_limit: u32,
    /// Longest the api waits for a publisher confirm before it answers 503.
    pub confirm_timeout: Duration,
    /// Number of shard queues transactions are hashed onto (the most worker nodes that can
    /// share the work). Fixed for the life of a deployment: changing it re-maps keys.
    pub shards: u16,
    /// What transactions are sharded (and so ordered) by.
    pub shard_key: ShardKey,
    /// Shard balancing across worker nodes; `None` when `RABBITMQ_MANAGEMENT_URL=off`.
    pub balance: Option<BalanceSettings>,
    /// Delay before a message that failed on its own is tried again.
    pub retry_delay_ms: u32,
    /// Delayed retries before such a message is dead-lettered.
    pub retry_max: u32,
    /// Whether workers publish `transaction.scored` after every commit (downstream
    /// services bind to it; off saves one broker publish per transaction).
    pub publish_scored: bool,
}

/// Where and how often workers balance shards across nodes.
#[derive(Debug, Clone)]
pub struct BalanceSettings {
    /// Management API base URL, e.g. `http://127.0.0.1:15672`.
    pub url: String,
    /// Management API user (from `AMQP_URL`).
    pub user: String,
    /// Management API password (from `AMQP_URL`).
    pub password: SecretString,
    /// The virtual host of `AMQP_URL`.
    pub vhost: String,
    /// Time between rounds.
    pub every: Duration,
}

impl BalanceSettings {
    /// The vhost as a URL path segment (`/` is `%2F`).
    pub fn vhost_path(&self) -> String {
        url::form_urlencoded::byte_serialize(self.vhost.as_bytes()).collect()
    }
}

/// The transaction field that picks a transaction's shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKey {
    /// One owner per account: per-account order and windows hold across nodes (default).
    AccountId,
    /// One owner per merchant.
    MerchantId,
    /// One owner per country (as the first product brief partitioned); transactions
    /// without a country share one shard. Per-account order then holds only within a country.
    Country,
}

impl ShardKey {
    /// The value of this key for `tx`.
    pub fn value(self, tx: &crate::Transaction) -> String {
        match self {
            ShardKey::AccountId => tx.account_id.clone(),
            ShardKey::MerchantId => tx.merchant_id.clone(),
            ShardKey::Country => tx.country.clone().unwrap_or_else(|| "none".into()),
        }
    }
}

/// Limits that protect the api and its callers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Requests served at once; the rest are shed with 503 rather than queued.
    pub max_in_flight: usize,
    /// Longest one request may take (must exceed the confirm timeout).
    pub request_timeout: Duration,
    /// Transactions per account per window.
    pub rate_limit: u32,
    /// The rate-limit window.
    pub rate_window: Duration,
    /// How long a transaction_id is remembered in Redis for idempotency.
    pub idempotency_ttl: Duration,
    /// Largest header section (names + values) accepted; beyond it, `431`.
    pub max_header_bytes: usize,
    /// Largest message a WebSocket client may send.
    pub ws_max_message_bytes: usize,
    /// Origins allowed cross-origin; empty means no CORS headers at all.
    pub cors_origins: Vec<String>,
}

/// Group commit of decisions in the worker.
#[derive(Debug, Clone)]
pub struct CommitSettings {
    /// Most decisions per PostgreSQL transaction.
    pub batch_max: usize,
    /// Longest the first decision of a batch waits for more; zero takes what is queued.
    pub batch_wait: Duration,
}

/// Bounds on the per-account actors a worker keeps in memory.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    /// Idle time after which an account actor is stopped.
    pub idle: Duration,
    /// Most account actors alive at once.
    pub max: usize,
    /// How long the window of a stopped actor is kept for the account's next actor.
    pub park: Duration,
    /// Most parked windows kept at once.
    pub max_parked: usize,
}

/// Feature computation and model/rule hot reload. (Rule thresholds live in the database,
/// editable at run time: see `rules`.)
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringSettings {
    /// A label counts in its merchant's risk rate only once it is this old, so features
    /// never use feedback that would not have been there (and replay stays reproducible).
    pub label_delay: Duration,
    /// How far back (before the delay) labels count in a merchant's risk rate.
    pub label_window: Duration,
    /// How often workers look for a newly activated rule set or model.
    pub refresh: Duration,
}

impl Default for ScoringSettings {
    fn default() -> Self {
        Self {
            label_delay: Duration::from_secs(86_400),
            label_window: Duration::from_secs(90 * 86_400),
            refresh: Duration::from_secs(2),
        }
    }
}

/// Log output style.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// How traces leave the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (the collector's port 4317).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// Trace export. Spans and trace ids exist either way (logs and alerts carry the ids);
/// only the export is off without an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP collector, e.g. `http://jaeger:4317`; `None`: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The transport to it.
    pub otlp_protocol: OtlpProtocol,
    /// Fraction of new traces sampled; a caller's sampling decision is followed.
    pub sample_ratio: f64,
}

/// Everything both binaries need to start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the api listens.
    pub api_addr: SocketAddr,
    /// Where the worker serves its health endpoints.
    pub worker_addr: SocketAddr,
    /// PostgreSQL.
    pub database: DatabaseSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// RabbitMQ.
    pub amqp: AmqpSettings,
    /// HTTP limits, rate limits and idempotency.
    pub http: HttpSettings,
    /// Worker group commit.
    pub commit: CommitSettings,
    /// How long a worker drains on SIGTERM before it closes anyway.
    pub shutdown_timeout: Duration,
    /// Per-account actor bounds.
    pub accounts: AccountSettings,
    /// Feature and engine settings.
    pub scoring: ScoringSettings,
    /// Whether binaries apply migrations at start-up.
    pub migrate_on_start: bool,
    /// Log style.
    pub log_format: LogFormat,
    /// Trace export.
    pub tracing: TracingSettings,
    /// Bearer-token verification (api only).
    pub auth: crate::auth::AuthSettings,
}

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads settings through `lookup`, falling back to each variable's default.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let get = |var: &'static str| -> (&'static str, String) {
            let value = lookup(var).filter(|v| !v.is_empty()).unwrap_or_else(|| {
                VARIABLES
                    .iter()
                    .find(|(name, _, _)| *name == var)
                    .map(|(_, default, _)| (*default).to_owned())
                    .unwrap_or_default()
            });
            (var, value)
        };
        let secret = |var| -> Result<SecretString, SettingsError> {
            let (var, value) = get(var);
            if !value.contains("://") {
                return Err(SettingsError {
                    var,
                    value: String::from("<redacted>"),
                    reason: "must be a URL such as scheme://host:port/...".into(),
                });
            }
            Ok(SecretString::from(value))
        };
        let confirm_ms: u64 = parse(get("PUBLISH_CONFIRM_TIMEOUT_MS"))?;
        let timeout_ms: u64 = positive(get("HTTP_REQUEST_TIMEOUT_MS"))?;
        if timeout_ms <= confirm_ms {
            let (var, value) = get("HTTP_REQUEST_TIMEOUT_MS");
            return Err(SettingsError {
                var,
                value,
                reason: "must exceed PUBLISH_CONFIRM_TIMEOUT_MS".into(),
            });
        }
        let http = HttpSettings {
            max_in_flight: positive(get("HTTP_MAX_IN_FLIGHT"))?,
            request_timeout: Duration::from_millis(timeout_ms),
            rate_limit: positive(get("RATE_LIMIT_PER_ACCOUNT"))?,
            rate_window: Duration::from_secs(positive(get("RATE_LIMIT_WINDOW_SECS"))?),
            idempotency_ttl: Duration::from_secs(positive(get("IDEMPOTENCY_TTL_SECS"))?),
            max_header_bytes: positive(get("HTTP_MAX_HEADER_BYTES"))?,
            ws_max_message_bytes: positive(get("WS_MAX_MESSAGE_BYTES"))?,
            cors_origins: cors_origins(get("CORS_ALLOWED_ORIGINS"))?,
        };
        let optional = |var| Some(get(var).1).filter(|v| !v.is_empty());
        let auth = crate::auth::AuthSettings {
            issuer: get("AUTH_ISSUER").1,
            audience: get("AUTH_AUDIENCE").1,
            hs256_secret: optional("AUTH_HS256_SECRET").map(SecretString::from),
            hs256_secret_file: optional("AUTH_HS256_SECRET_FILE").map(Into::into),
            jwks_file: optional("AUTH_JWKS_FILE").map(Into::into),
            leeway: Duration::from_secs(parse(get("AUTH_LEEWAY_SECS"))?),
        };
        let scoring = ScoringSettings {
            label_delay: Duration::from_secs(parse(get("MERCHANT_LABEL_DELAY_SECS"))?),
            label_window: Duration::from_secs(86_400 * positive::<u64>(get("MERCHANT_LABEL_DAYS"))?),
            refresh: Duration::from_millis(positive(get("ENGINE_REFRESH_MS"))?),
        };
        let log_format = match get("LOG_FORMAT") {
            (_, v) if v == "json" => LogFormat::Json,
            (_, v) if v == "pretty" => LogFormat::Pretty,
            (var, value) => {
                return Err(SettingsError { var, value, reason: "must be json or pretty".into() });
            }
        };
        let otlp_endpoint = match get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            (_, v) if v.is_empty() => None,
            (_, v) if v.starts_with("http://") || v.starts_with("https://") => Some(v),
            (var, value) => {
                return Err(SettingsError { var, value, reason: "must be an http(s) URL or empty".into() });
            }
        };
        let otlp_protocol = match get("OTEL_EXPORTER_OTLP_PROTOCOL") {
            (_, v) if v == "grpc" => OtlpProtocol::Grpc,
            (_, v) if v == "http/protobuf" => OtlpProtocol::HttpProtobuf,
            (var, value) => {
                return Err(SettingsError { var, value, reason: "must be grpc or http/protobuf".into() });
            }
        };
        let (var, value) = get("OTEL_TRACES_SAMPLER_ARG");
        let sample_ratio = match value.parse::<f64>() {
            Ok(r) if (0.0..=1.0).contains(&r) => r,
            _ => return Err(SettingsError { var, value, reason: "must be a number from 0 to 1".into() }),
        };
        let tracing = TracingSettings { otlp_endpoint, otlp_protocol, sample_ratio };
        let database_url = secret("DATABASE_URL")?;
        let ssl_mode = PgSslMode::from_url(database_url.expose_secret())
            .map(|(mode, _)| mode)
            .map_err(|reason| SettingsError { var: "DATABASE_URL", value: "<redacted>".into(), reason })?;
        let redis_url = secret("REDIS_URL")?;
        let amqp_url = secret("AMQP_URL")?;
        let database_ca = ca_file(
            get("DATABASE_CA_FILE"),
            ssl_mode.uses_tls(),
            "DATABASE_URL has no sslmode=require, verify-ca or verify-full",
        )?;
        let redis_ca = ca_file(
            get("REDIS_CA_FILE"),
            crate::tls::redis_url_uses_tls(redis_url.expose_secret()),
            "REDIS_URL is not rediss://",
        )?;
        let amqp_ca = ca_file(
            get("AMQP_CA_FILE"),
            crate::tls::amqp_url_uses_tls(amqp_url.expose_secret()),
            "AMQP_URL is not amqps://",
        )?;
        Ok(Self {
            api_addr: parse(get("FRAUDSENSE_API_ADDR"))?,
            worker_addr: parse(get("FRAUDSENSE_WORKER_ADDR"))?,
            database: DatabaseSettings {
                url: database_url,
                pool_size: positive(get("DATABASE_POOL_SIZE"))?,
                ca_file: database_ca,
            },
            redis: RedisSettings { url: redis_url, key_prefix: get("REDIS_KEY_PREFIX").1, ca_file: redis_ca },
            amqp: AmqpSettings {
                url: amqp_url,
                ca_file: amqp_ca,
                prefix: get("AMQP_PREFIX").1,
                prefetch: positive(get("AMQP_PREFETCH"))?,
                delivery_limit: positive(get("AMQP_DELIVERY_LIMIT"))?,
                confirm_timeout: Duration::from_millis(confirm_ms.max(1)),
                shards: positive(get("AMQP_SHARDS"))?,
                retry_delay_ms: positive(get("RETRY_DELAY_MS"))?,
                retry_max: parse(get("RETRY_MAX"))?,
                publish_scored: parse(get("PUBLISH_SCORED"))?,
                balance: balance_settings(
                    get("RABBITMQ_MANAGEMENT_URL"),
                    get("BALANCE_INTERVAL_MS"),
                    get("AMQP_URL"),
                )?,
                shard_key: match get("SHARD_KEY") {
                    (_, v) if v == "account_id" => ShardKey::AccountId,
                    (_, v) if v == "merchant_id" => ShardKey::MerchantId,
                    (_, v) if v == "country" => ShardKey::Country,
                    (var, value) => {
                        return Err(SettingsError {
                            var,
                            value,
                            reason: "must be account_id, merchant_id or country".into(),
                        });
                    }
                },
            },
            http,
            commit: CommitSettings {
                batch_max: positive(get("COMMIT_BATCH_MAX"))?,
                batch_wait: Duration::from_millis(parse(get("COMMIT_BATCH_WAIT_MS"))?),
            },
            shutdown_timeout: Duration::from_secs(positive(get("SHUTDOWN_TIMEOUT_SECS"))?),
            accounts: AccountSettings {
                idle: Duration::from_secs(positive(get("ACCOUNT_IDLE_SECS"))?),
                max: positive(get("MAX_ACCOUNT_ACTORS"))?,
                park: Duration::from_secs(parse(get("WINDOW_PARK_SECS"))?),
                max_parked: parse(get("MAX_PARKED_WINDOWS"))?,
            },
            scoring,
            migrate_on_start: parse(get("MIGRATE_ON_START"))?,
            log_format,
            tracing,
            auth,
        })
    }

    /// The PostgreSQL URL, for the few places that must see it.
    pub fn database_url(&self) -> &str {
        self.database.url.expose_secret()
    }
}

/// Management API settings; credentials and vhost come from the AMQP URL.
fn balance_settings(
    (var, management): (&'static str, String),
    every: (&'static str, String),
    (amqp_var, amqp): (&'static str, String),
) -> Result<Option<BalanceSettings>, SettingsError> {
    if management == "off" {
        return Ok(None);
    }
    let bad = |var, value: String, reason: &str| SettingsError { var, value, reason: reason.into() };
    if !management.starts_with("http://") && !management.starts_with("https://") {
        return Err(bad(var, management, "must be an http(s) URL or off"));
    }
    let amqp = url::Url::parse(&amqp).map_err(|e| bad(amqp_var, "<redacted>".into(), &e.to_string()))?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned())
    };
    let vhost = match amqp.path().trim_start_matches('/') {
        "" => "/".to_owned(),
        path => decode(path).unwrap_or_else(|| "/".into()),
    };
    let user = match amqp.username() {
        "" => "guest".to_owned(),
        user => decode(user).unwrap_or_default(),
    };
    let password = amqp.password().and_then(decode).unwrap_or_else(|| "guest".into());
    Ok(Some(BalanceSettings {
        url: management,
        user,
        password: SecretString::from(password),
        vhost,
        every: Duration::from_millis(positive(every)?),
    }))
}

/// A CA file variable: unset, or a readable PEM file of CA certificates. Set while the
/// service's URL does not ask for TLS is an error too (`plain` says why): the operator
/// evidently expects TLS, and the connection would not use it.
fn ca_file(
    (var, value): (&'static str, String),
    uses_tls: bool,
    plain: &str,
) -> Result<Option<CaFile>, SettingsError> {
    if value.is_empty() {
        return Ok(None);
    }
    if !uses_tls {
        return Err(SettingsError {
            var,
            value,
            reason: format!("is set, but {plain}: the connection would not use TLS"),
        });
    }
    CaFile::load(&value).map(Some).map_err(|reason| SettingsError { var, value, reason })
}

/// `https://a.example, http://127.0.0.1:3000`: exact origins (scheme, host, optional port).
fn cors_origins((var, value): (&'static str, String)) -> Result<Vec<String>, SettingsError> {
    let mut origins = Vec::new();
    for origin in value.split(',').map(str::trim).filter(|o| !o.is_empty()) {
        let parsed = url::Url::parse(origin).ok().filter(|u| {
            matches!(u.scheme(), "http" | "https")
                && u.host().is_some()
                && u.path() == "/"
                && !origin.ends_with('/')
        });
        if parsed.is_none() || origin == "*" {
            return Err(SettingsError {
                var,
                value: value.clone(),
                reason: format!("{origin:?} is not an origin such as https://dashboard.example.com"),
            });
        }
        origins.push(origin.to_owned());
    }
    Ok(origins)
}

fn parse<T>((var, value): (&'static str, String)) -> Result<T, SettingsError>
where
    T: FromStr,
    T::Err: Display,
{
    value.trim().parse().map_err(|e: T::Err| SettingsError { var, reason: e.to_string(), value })
}

fn positive<T>((var, value): (&'static str, String)) -> Result<T, SettingsError>
where
    T: FromStr + Default + PartialOrd,
    T::Err: Display,
{
    let parsed: T = parse((var, value.clone()))?;
    if parsed <= T::default() {
        return Err(SettingsError { var, value, reason: "must be greater than 0".into() });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_work_without_any_environment() {
        let s = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.api_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(s.amqp.prefetch, 256);
        assert_eq!(s.log_format, LogFormat::Json);
        assert!(s.database_url().ends_with("/fraudsense"));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        let err =
            Settings::from_lookup(|k| (k == "AMQP_PREFETCH").then(|| "lots".into())).err().map(|e| e.var);
        assert_eq!(err, Some("AMQP_PREFETCH"));
        let err =
            Settings::from_lookup(|k| (k == "DATABASE_POOL_SIZE").then(|| "0".into())).err().map(|e| e.var);
        assert_eq!(err, Some("DATABASE_POOL_SIZE"));
    }

    #[test]
    fn balancing_reads_credentials_and_vhost_from_the_amqp_url() {
        let s = Settings::from_lookup(|k| (k == "AMQP_URL").then(|| "amqp://fs:p%40ss@h:5672/prod".into()))
            .unwrap_or_else(|e| panic!("{e}"));
        let b = s.amqp.balance.unwrap_or_else(|| panic!("balancing off"));
        assert_eq!((b.user.as_str(), b.password.expose_secret(), b.vhost.as_str()), ("fs", "p@ss", "prod"));
        let d = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}")).amqp.balance;
        assert_eq!(d.map(|b| (b.vhost_path(), b.user)), Some(("%2F".to_owned(), "guest".to_owned())));
        let off = Settings::from_lookup(|k| (k == "RABBITMQ_MANAGEMENT_URL").then(|| "off".into()));
        assert!(off.is_ok_and(|s| s.amqp.balance.is_none()));
    }

    #[test]
    fn tracing_is_off_by_default_and_reads_the_standard_otel_variables() {
        let off = Settings::from_lookup(|_| None).unwrap_or_else(|e| panic!("{e}")).tracing;
        assert_eq!((off.otlp_endpoint, off.otlp_protocol, off.sample_ratio), (None, OtlpProtocol::Grpc, 1.0));
        let on = Settings::from_lookup(|k| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://jaeger:4318".into()),
            "OTEL_EXPORTER_OTLP_PROTOCOL" => Some("http/protobuf".into()),
            "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".into()),
            _ => None,
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .tracing;
        assert_eq!(on.otlp_endpoint.as_deref(), Some("http://jaeger:4318"));
        assert_eq!((on.otlp_protocol, on.sample_ratio), (OtlpProtocol::HttpProtobuf, 0.25));
        for (var, bad) in [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ] {
            let err = Settings::from_lookup(|k| (k == var).then(|| bad.into())).err().map(|e| e.var);
            assert_eq!(err, Some(var));
        }
    }

    #[test]
    fn secrets_are_not_echoed() {
        let err = Settings::from_lookup(|k| (k == "DATABASE_URL").then(|| "hunter2".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("DATABASE_URL") && !err.contains("hunter2"), "{err}");
    }
}

#[cfg(test)]
mod readme {
    use super::VARIABLES;

    /// The README's configuration table lists exactly the variables we read, with their defaults.
    #[test]
    fn readme_configuration_table_matches_the_code() {
        let readme = include_str!("../../README.md");
        let section = readme.split("## Configuration").nth(1).unwrap_or_default();
        let section = section.split("\n## ").next().unwrap_or_default();
        let rows: Vec<&str> =
            section.lines().filter(|l| l.starts_with("| `") && l.matches('|').count() == 4).collect();
        for (var, default, _) in VARIABLES {
            let shown = if default.is_empty() { "(unset)".to_owned() } else { format!("`{default}`") };
            let row = format!("| `{var}` | {shown} |");
            assert!(rows.iter().any(|r| r.starts_with(&row)), "README lacks the row {row}");
        }
        assert_eq!(rows.len(), VARIABLES.len(), "README documents variables the code does not read");
    }
}

//! PostgreSQL: the pool, the embedded migrations, and every statement the system runs.

use std::collections::HashMap;

use deadpool_postgres::{Config, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::{NoTls, types::Json};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::Instrument;

use crate::{
    events::TransactionCreated,
    labels::{Label, LabelValue, NewLabel},
    scoring::{Decision, RiskLabel},
    settings::DatabaseSettings,
};

pub mod alerts;
pub mod audit;
pub mod catalog;
mod migrations;

pub use migrations::{MIGRATIONS, migrate};

/// A failure talking to PostgreSQL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The pool could not be built from the settings.
    #[error("invalid database configuration: {0}")]
    Config(#[from] deadpool_postgres::CreatePoolError),
    /// No connection could be had from the pool.
    #[error("no database connection available: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// `DATABASE_URL` asks for TLS and no TLS client could be set up (a bad `sslmode`, no
    /// trusted CA certificates).
    #[error("database TLS: {0}")]
    Tls(String),
    /// A statement failed. Shown as its SQLSTATE and message only: PostgreSQL's `DETAIL`
    /// can quote the failing row (payment data), so it never reaches a log line.
    #[error("database statement failed: {}", redact(.0))]
    Statement(tokio_postgres::Error),
    /// The change would break an invariant (e.g. leave no model active); nothing changed.
    #[error("refused: {0}")]
    Refused(String),
    /// A stored rule set or model cannot be used by this build.
    #[error("stored value unusable: {0}")]
    Corrupt(String),
    /// A value could not be encoded for storage.
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The serialiser's complaint.
        source: serde_json::Error,
    },
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(error: tokio_postgres::Error) -> Self {
        StoreError::Statement(error)
    }
}

/// A statement's failure without the parts that may quote data (`DETAIL`, `WHERE`, `HINT`).
fn redact(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} {}: {}", db.severity(), db.code().code(), db.message()),
        None => error.to_string(),
    }
}

impl StoreError {
    /// Whether trying again later can succeed: the connection or the server's state was the
    /// problem (unreachable, restarting, overloaded, serialization conflict), not the data.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Pool(_) => true,
            StoreError::Statement(e) => e.as_db_error().is_none_or(|db| {
                let code = db.code().code();
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(code, "40001" | "40P01" | "53300")
            }),
            StoreError::Config(_)
            | StoreError::Tls(_)
            | StoreError::Encode { .. }
            | StoreError::Corrupt(_)
            | StoreError::Refused(_) => false,
        }
    }
}

/// Builds a bounded connection pool. Connections are opened lazily.
///
/// The URL's `sslmode` ([`PgSslMode`](crate::tls::PgSslMode)) decides: none or `disable`,
/// plain TCP; `require`, `verify-ca` or `verify-full`, TLS (rustls, ring) trusting the
/// system's CAs and `DATABASE_CA_FILE`'s, and a connection fails rather than go on without
/// TLS (tokio-postgres `Require`: a server that refuses TLS is an error).
pub fn connect(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    build_pool(settings, None)
}

/// A pool like [`connect`]'s whose sessions plan every statement for its actual parameters
/// (`plan_cache_mode = force_custom_plan`): the api's, whose statements are lookups by key
/// and queries with optional filters, and the load tools' (their decision poll is a lookup).
///
/// A prepared statement otherwise may settle on a generic plan after its fifth execution and
/// keep it until the table's statistics change. The api prepares its lookups when the tables
/// are new and tiny, where a sequential scan is the cheapest generic plan; on a server that
/// never analyses them (autovacuum off, as on this project's CI machine) that plan stayed,
/// and the idempotency backstop read the whole `transactions` table for every batch: 3,732
/// scans and 19.6 million rows in a 15 s run at 1,000 tx/s on a fresh database, PostgreSQL's
/// CPU per transaction 0.49 ms instead of 0.30 (docs/benchmarks.md). Planning a keyed lookup
/// costs microseconds.
pub fn connect_for_lookups(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    build_pool(settings, Some("-c plan_cache_mode=force_custom_plan"))
}

fn build_pool(settings: &DatabaseSettings, options: Option<&str>) -> Result<Pool, StoreError> {
    use secrecy::ExposeSecret;
    let (mode, url) =
        crate::tls::PgSslMode::from_url(settings.url.expose_secret()).map_err(StoreError::Tls)?;
    let mut config = Config::new();
    config.url = Some(url);
    // When set, this replaces any `options` the URL carries.
    config.options = options.map(str::to_owned);
    config.manager = Some(ManagerConfig { recycling_method: RecyclingMethod::Fast });
    config.pool = Some(PoolConfig::new(settings.pool_size));
    let Some(verify) = mode.verify() else {
        config.ssl_mode = Some(deadpool_postgres::SslMode::Disable);
        return Ok(config.create_pool(Some(Runtime::Tokio1), NoTls)?);
    };
    config.ssl_mode = Some(deadpool_postgres::SslMode::Require);
    let mut tls = crate::tls::client_config(settings.ca_file.as_ref(), verify)
        .map_err(|e| StoreError::Tls(e.to_string()))?;
    // What libpq 17 sends; needed by servers that accept direct TLS (`sslnegotiation=direct`).
    tls.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(config.create_pool(Some(Runtime::Tokio1), MakeRustlsConnect::new(tls))?)
}

/// What recording a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// False when the transaction had already been recorded (a redelivery).
    pub new_transaction: bool,
    /// The alert raised, if this call created one.
    pub alert_id: Option<i64>,
}

/// One decision to record, with the trace it was made in.
#[derive(Debug, Clone, Copy)]
pub struct Decided<'a> {
    /// The transaction as it arrived.
    pub event: &'a TransactionCreated,
    /// What the engine decided.
    pub decision: &'a Decision,
    /// The W3C `traceparent` of the span that decided it, stored with the transaction.
    pub traceparent: Option<&'a str>,
}

/// The span of one SQL statement (OpenTelemetry database conventions); `rows` is how many
/// rows the statement carries.
pub fn sql_span(operation: &'static str, table: &'static str, rows: usize) -> tracing::Span {
    tracing::info_span!(
        "sql",
        otel.name = %if table.is_empty() { operation.to_owned() } else { format!("{operation} {table}") },
        otel.kind = "client",
        db.system = "postgresql",
        db.operation.name = operation,
        db.collection.name = table,
        db.batch.size = rows,
    )
}

/// Records a batch of decisions — transactions, scores and (for HIGH risk) alerts — in one
/// PostgreSQL transaction with one multi-row statement per table (group commit).
/// Idempotent on `transaction_id`: a redelivery, even within the same batch, changes
/// nothing. Returns one [`Recorded`] per input, in order.
pub async fn record_decisions(
    pool: &Pool,
    node: &str,
    batch: &[Decided<'_>],
) -> Result<Vec<Recorded>, StoreError> {
    let n = batch.len();
    let mut ids = Vec::with_capacity(n);
    let mut accounts = Vec::with_capacity(n);
    let mut amounts = Vec::with_capacity(n);
    let mut currencies = Vec::with_capacity(n);
    let mut times = Vec::with_capacity(n);
    let mut merchants = Vec::with_capacity(n);
    let mut lats = Vec::with_capacity(n);
    let mut lons = Vec::with_capacity(n);
    let mut countries = Vec::with_capacity(n);
    let mut channels = Vec::with_capacity(n);
    let mut metadata = Vec::with_capacity(n);
    let mut raws = Vec::with_capacity(n);
    let mut received = Vec::with_capacity(n);
    let mut models = Vec::with_capacity(n);
    let mut rule_sets = Vec::with_capacity(n);
    let mut scores = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut reasons = Vec::with_capacity(n);
    let mut features = Vec::with_capacity(n);
    let mut contributions = Vec::with_capacity(n);
    let mut degraded = Vec::with_capacity(n);
    let mut model_views = Vec::with_capacity(n);
    let mut threshold_sets = Vec::with_capacity(n);
    let (mut shadow_ids, mut shadow_models, mut shadow_scores, mut shadow_labels, mut shadow_views) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut thresholds = Vec::new();
    let (mut alert_ids, mut alert_accounts, mut alert_labels, mut alert_scores, mut alert_reasons) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut traceparents = Vec::with_capacity(n);
    for Decided { event, decision, traceparent } in batch {
        let tx = &event.transaction;
        traceparents.push(*traceparent);
        ids.push(tx.transaction_id.as_str());
        accounts.push(tx.account_id.as_str());
        amounts.push(tx.amount);
        currencies.push(tx.currency.as_str());
        times.push(tx.event_time());
        merchants.push(tx.merchant_id.as_str());
        lats.push(tx.geo_lat);
        lons.push(tx.geo_lon);
        countries.push(tx.country.as_deref());
        channels.push(tx.channel.map(|c| c.as_str()));
        metadata.push(tx.metadata.clone().map(Value::Object));
        raws.push(&event.raw);
        received.push(event.received_at);
        models.push(decision.model_version.as_str());
        rule_sets.push(decision.rules_version.as_str());
        scores.push(decision.score);
        labels.push(decision.risk_label.as_str());
        reasons.push(Json(&decision.reasons));
        features.push(Json(&decision.features));
        contributions.push(Json(&decision.contributions));
        degraded.push(decision.degraded);
        model_views.push(Json(decision.model));
        threshold_sets.push(Json(&decision.thresholds));
        if let Some(shadow) = &decision.shadow {
            shadow_ids.push(tx.transaction_id.as_str());
            shadow_models.push(shadow.model_version.as_str());
            shadow_scores.push(shadow.score);
            shadow_labels.push(shadow.risk_label.as_str());
            shadow_views.push(Json(shadow.model));
        }
        if decision.risk_label == RiskLabel::High {
            thresholds.push(decision.thresholds.high);
            alert_ids.push(tx.transaction_id.as_str());
            alert_accounts.push(tx.account_id.as_str());
            alert_labels.push(decision.risk_label.as_str());
            alert_scores.push(decision.score);
            alert_reasons
                .push(decision.reasons.iter().map(|r| r.code.as_str()).collect::<Vec<_>>().join(","));
        }
    }

    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let inserted: std::collections::HashSet<String> = db
        .query(
            &db.prepare_cached(
                "INSERT INTO transactions (transaction_id, account_id, amount, currency, occurred_at,
                 merchant_id, geo_lat, geo_lon, country, channel, metadata, raw, received_at, traceparent)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::numeric[], $4::text[], $5::timestamptz[],
                 $6::text[], $7::float8[], $8::float8[], $9::text[], $10::text[], $11::jsonb[], $12::jsonb[],
                 $13::timestamptz[], $14::text[])
             ON CONFLICT (transaction_id) DO NOTHING
             RETURNING transaction_id",
            )
            .await?,
            &[
                &ids,
                &accounts,
                &amounts,
                &currencies,
                &times,
                &merchants,
                &lats,
                &lons,
                &countries,
                &channels,
                &metadata,
                &raws,
                &received,
                &traceparents,
            ],
        )
        .instrument(sql_span("INSERT", "transactions", n))
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    db.execute(
        &db.prepare_cached(
            "INSERT INTO scores (transaction_id, model_version, rules_version, score, risk_label,
             reasons, features, contributions, degraded, model, thresholds, processed_by)
         SELECT *, $12 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::jsonb[],
             $7::jsonb[], $8::jsonb[], $9::bool[], $10::jsonb[], $11::jsonb[])
         ON CONFLICT (transaction_id) DO NOTHING",
        )
        .await?,
        &[
            &ids,
            &models,
            &rule_sets,
            &scores,
            &labels,
            &reasons,
            &features,
            &contributions,
            &degraded,
            &model_views,
            &threshold_sets,
            &node,
        ],
    )
    .instrument(sql_span("INSERT", "scores", n))
    .await?;
    if !shadow_ids.is_empty() {
        db.execute(
            &db.prepare_cached(
                "INSERT INTO shadow_scores (transaction_id, model_version, score, risk_label, model)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::float8[], $4::text[], $5::jsonb[])
             ON CONFLICT (transaction_id, model_version) DO NOTHING",
            )
            .await?,
            &[&shadow_ids, &shadow_models, &shadow_scores, &shadow_labels, &shadow_views],
        )
        .instrument(sql_span("INSERT", "shadow_scores", shadow_ids.len()))
        .await?;
    }
    let alerts: std::collections::HashMap<String, i64> = if alert_ids.is_empty() {
        std::collections::HashMap::new()
    } else {
        db.query(
            &db.prepare_cached(
                "INSERT INTO alerts (transaction_id, account_id, risk_label, score, reason, threshold)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::float8[], $5::text[], $6::float8[])
             ON CONFLICT (transaction_id) DO NOTHING
             RETURNING transaction_id, alert_id",
            )
            .await?,
            &[&alert_ids, &alert_accounts, &alert_labels, &alert_scores, &alert_reasons, &thresholds],
        )
        .instrument(sql_span("INSERT", "alerts", alert_ids.len()))
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    db.commit().instrument(sql_span("COMMIT", "", n)).await?;

    // Within a batch the first copy of an id is the one that inserted it.
    let mut seen = std::collections::HashSet::new();
    Ok(ids
        .iter()
        .map(|id| {
            let first = seen.insert(*id);
            Recorded {
                new_transaction: first && inserted.contains(*id),
                alert_id: if first { alerts.get(*id).copied() } else { None },
            }
        })
        .collect())
}

/// The transaction with its score and alerts, as the api returns it; `None` if unknown.
pub async fn transaction_view(pool: &Pool, transaction_id: &str) -> Result<Option<Value>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT json_build_object(
                'transaction_id', t.transaction_id,
                'account_id', t.account_id,
                'amount', trim_scale(t.amount)::text,
                'currency', t.currency,
                'timestamp', t.occurred_at,
                'merchant_id', t.merchant_id,
                'geo_lat', t.geo_lat,
                'geo_lon', t.geo_lon,
                'country', t.country,
                'channel', t.channel,
                'metadata', t.metadata,
                'received_at', t.received_at,
                'processed_at', t.processed_at,
                'trace_id', split_part(t.traceparent, '-', 2),
                'status', CASE WHEN s.transaction_id IS NULL THEN 'received' ELSE 'scored' END,
                'score', CASE WHEN s.transaction_id IS NULL THEN NULL ELSE json_build_object(
                    'model_version', s.model_version,
                    'rules_version', s.rules_version,
                    'score', s.score,
                    'risk_label', s.risk_label,
                    'reasons', s.reasons,
                    'features', s.features,
                    'contributions', s.contributions,
                    'degraded', s.degraded,
                    'model', s.model,
                    'thresholds', s.thresholds,
                    'shadow', (SELECT json_agg(json_build_object(
                        'model_version', h.model_version,
                        'score', h.score,
                        'risk_label', h.risk_label,
                        'model', h.model) ORDER BY h.model_version)
                      FROM shadow_scores h WHERE h.transaction_id = t.transaction_id),
                    'processed_by', s.processed_by,
                    'scored_at', s.scored_at) END,
                'alerts', COALESCE((SELECT json_agg(json_build_object(
                    'alert_id', a.alert_id,
                    'risk_label', a.risk_label,
                    'score', a.score,
                    'reason', a.reason,
                    'threshold', a.threshold,
                    'created_at', a.created_at,
                    'acknowledged_at', a.acknowledged_at) ORDER BY a.alert_id)
                  FROM alerts a WHERE a.transaction_id = t.transaction_id), '[]'::json))
             FROM transactions t
             LEFT JOIN scores s ON s.transaction_id = t.transaction_id
             WHERE t.transaction_id = $1",
            &[&transaction_id],
        )
        .await?;
    Ok(row.map(|r| r.get::<_, Value>(0)))
}

/// Cheap round trip used by readiness probes.
pub async fn ping(pool: &Pool) -> Result<(), StoreError> {
    pool.get().await?.simple_query("SELECT 1").await?;
    Ok(())
}

/// The raw payloads of those of `transaction_ids` that are stored, in one statement (the
/// api's idempotency backstop looks up every concurrent request's id at once).
pub async fn raw_payloads(
    pool: &Pool,
    transaction_ids: &[&str],
) -> Result<HashMap<String, Value>, StoreError> {
    let client = pool.get().await?;
    let statement = client
        .prepare_cached("SELECT transaction_id, raw FROM transactions WHERE transaction_id = ANY($1)")
        .await?;
    let rows = client.query(&statement, &[&transaction_ids]).await?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// The merchant of a stored transaction.
pub async fn merchant_of(pool: &Pool, transaction_id: &str) -> Result<Option<String>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT merchant_id FROM transactions WHERE transaction_id = $1", &[&transaction_id])
        .await?;
    Ok(row.map(|r| r.get(0)))
}

/// What recording a label did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOutcome {
    /// A new label was stored.
    Created(Label),
    /// The same label was already there (an idempotent retry).
    Unchanged(Label),
    /// A different label is already there; it was left as it is.
    Conflict(Label),
    /// No such (processed) transaction.
    UnknownTransaction,
}

/// Records a label, idempotently: the first label of a transaction wins.
pub async fn record_label(
    pool: &Pool,
    transaction_id: &str,
    new: &NewLabel,
    actor: &crate::auth::Principal,
) -> Result<LabelOutcome, StoreError> {
    let mut client = pool.get().await?;
    let client = client.transaction().await?;
    let label_of = |row: &tokio_postgres::Row| -> Option<Label> {
        let value = match row.get::<_, &str>(1) {
            "fraud" => LabelValue::Fraud,
            "legit" => LabelValue::Legit,
            _ => return None,
        };
        Some(Label {
            transaction_id: row.get(0),
            label: value,
            source: row.get(2),
            note: row.get(3),
            labeled_at: row.get(4),
        })
    };
    let inserted = client
        .query_opt(
            "INSERT INTO labels (transaction_id, label, source, note)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM transactions WHERE transaction_id = $1)
             ON CONFLICT (transaction_id) DO NOTHING
             RETURNING transaction_id, label, source, note, labeled_at",
            &[&transaction_id, &new.label.as_str(), &new.source, &new.note],
        )
        .await?;
    if let Some(label) = inserted.as_ref().and_then(label_of) {
        let entry = audit::Entry {
            actor,
            action: "transaction.label",
            subject: transaction_id.to_owned(),
            before: None,
            after: Some(
                serde_json::json!({"label": label.label, "source": label.source, "note": label.note}),
            ),
        };
        audit::record(&client, &entry).await?;
        client.commit().await?;
        return Ok(LabelOutcome::Created(label));
    }
    let existing = client
        .query_opt(
            "SELECT transaction_id, label, source, note, labeled_at FROM labels WHERE transaction_id = $1",
            &[&transaction_id],
        )
        .await?;
    Ok(match existing.as_ref().and_then(label_of) {
        Some(label) if label.label == new.label => LabelOutcome::Unchanged(label),
        Some(label) => LabelOutcome::Conflict(label),
        None => LabelOutcome::UnknownTransaction,
    })
}

/// A stored, scored transaction as training and replay read it back.
#[derive(Debug, Clone)]
pub struct StoredDecision {
    /// The transaction, re-parsed from its raw body.
    pub transaction: crate::Transaction,
    /// The feature vector it was scored on (point-in-time: what scoring saw).
    pub features: crate::features::Features,
    /// Its label, if one arrived.
    pub fraud: Option<bool>,
    /// When the label arrived.
    pub labeled_at: Option<chrono::DateTime<chrono::Utc>>,
    /// Versions and outcome recorded at scoring time.
    pub model_version: String,
    /// Rule set recorded at scoring time.
    pub rules_version: String,
    /// Score recorded.
    pub score: f64,
    /// Bucket recorded.
    pub risk_label: String,
    /// Reason codes recorded, in order.
    pub reason_codes: Vec<String>,
    /// Whether it was scored without features.
    pub degraded: bool,
}

/// Scored transactions with event time in `[from, to)`, in event-time order, with their
/// labels. Rows whose stored body no longer parses are skipped and counted in the log.
pub async fn stored_decisions(
    pool: &Pool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<StoredDecision>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT t.raw, t.received_at, s.features, l.label, l.labeled_at, s.model_version, s.rules_version,
                    s.score, s.risk_label, s.reasons, s.degraded
             FROM transactions t
             JOIN scores s ON s.transaction_id = t.transaction_id
             LEFT JOIN labels l ON l.transaction_id = t.transaction_id
             WHERE t.occurred_at >= $1 AND t.occurred_at < $2
             ORDER BY t.occurred_at, t.transaction_id",
            &[&from, &to],
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    let mut skipped = 0usize;
    for row in rows {
        let Ok(transaction) = crate::Transaction::parse(&row.get::<_, Value>(0), row.get(1)) else {
            skipped += 1;
            continue;
        };
        let Ok(features) = serde_json::from_value(row.get::<_, Value>(2)) else {
            skipped += 1;
            continue;
        };
        let reasons: Value = row.get(9);
        out.push(StoredDecision {
            transaction,
            features,
            fraud: row.get::<_, Option<&str>>(3).map(|l| l == "fraud"),
            labeled_at: row.get(4),
            model_version: row.get(5),
            rules_version: row.get(6),
            score: row.get(7),
            risk_label: row.get(8),
            reason_codes: reasons
                .as_array()
                .map(|a| a.iter().filter_map(|r| r.get("code")?.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            degraded: row.get(10),
        });
    }
    if skipped > 0 {
        tracing::warn!(skipped, "stored decisions that could not be read back were skipped");
    }
    Ok(out)
}

/// Labels that arrived before `until`, with their transaction's merchant (to rebuild the
/// merchant risk sets for replay).
pub async fn labels_until(
    pool: &Pool,
    until: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::training::LabelEvent>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT t.merchant_id, l.transaction_id, l.label = 'fraud', l.labeled_at
             FROM labels l JOIN transactions t ON t.transaction_id = l.transaction_id
             WHERE l.labeled_at < $1 ORDER BY l.labeled_at",
            &[&until],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| crate::training::LabelEvent {
            merchant_id: r.get(0),
            transaction_id: r.get(1),
            fraud: r.get(2),
            labeled_at: r.get(3),
        })
        .collect())
}

/// Transactions (scored or not) with event time in `[from, to)`, in event-time order:
/// what replay feeds through fresh windows.
pub async fn transactions_between(
    pool: &Pool,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<crate::Transaction>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT raw, received_at FROM transactions WHERE occurred_at >= $1 AND occurred_at < $2
             ORDER BY occurred_at, transaction_id",
            &[&from, &to],
        )
        .await?;
    Ok(rows.iter().filter_map(|r| crate::Transaction::parse(&r.get::<_, Value>(0), r.get(1)).ok()).collect())
}

/// Pairs of (live score, shadow score, label) for labelled transactions the shadow model
/// `version` scored: how a challenger compares once labels arrive.
pub async fn shadow_comparison(pool: &Pool, version: &str) -> Result<Vec<(f64, f64, bool)>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT s.score, h.score, l.label = 'fraud'
             FROM shadow_scores h
             JOIN scores s ON s.transaction_id = h.transaction_id
             JOIN labels l ON l.transaction_id = h.transaction_id
             WHERE h.model_version = $1",
            &[&version],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

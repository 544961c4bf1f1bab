//! PostgreSQL: the pool, the embedded migrations, and every statement the system runs.

use deadpool_postgres::{Config, ManagerConfig, Pool, PoolConfig, RecyclingMethod, Runtime};
use serde_json::Value;
use tokio_postgres::NoTls;

use crate::{
    events::TransactionCreated,
    labels::{Label, LabelValue, NewLabel},
    scoring::{Decision, HIGH_THRESHOLD, RiskLabel},
    settings::DatabaseSettings,
};

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
    /// A statement failed.
    #[error("database statement failed: {0}")]
    Statement(#[from] tokio_postgres::Error),
    /// A value could not be encoded for storage.
    #[error("could not encode {what}: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The serialiser's complaint.
        source: serde_json::Error,
    },
}

/// Builds a bounded connection pool. Connections are opened lazily.
pub fn connect(settings: &DatabaseSettings) -> Result<Pool, StoreError> {
    use secrecy::ExposeSecret;
    let mut config = Config::new();
    config.url = Some(settings.url.expose_secret().to_owned());
    config.manager = Some(ManagerConfig { recycling_method: RecyclingMethod::Fast });
    config.pool = Some(PoolConfig::new(settings.pool_size));
    Ok(config.create_pool(Some(Runtime::Tokio1), NoTls)?)
}

/// What recording a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recorded {
    /// False when the transaction had already been recorded (a redelivery).
    pub new_transaction: bool,
    /// The alert raised, if this call created one.
    pub alert_id: Option<i64>,
}

/// Records the transaction, its score and (for HIGH risk) its alert in one database
/// transaction. Idempotent on `transaction_id`: a redelivery changes nothing.
pub async fn record_decision(
    pool: &Pool,
    event: &TransactionCreated,
    decision: &Decision,
) -> Result<Recorded, StoreError> {
    let encode =
        |what, v: Result<Value, serde_json::Error>| v.map_err(|source| StoreError::Encode { what, source });
    let reasons = encode("reasons", serde_json::to_value(&decision.reasons))?;
    let features = encode("features", serde_json::to_value(&decision.features))?;
    let contributions = encode("contributions", serde_json::to_value(&decision.contributions))?;
    let metadata = event.transaction.metadata.clone().map(Value::Object);
    let tx = &event.transaction;

    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let inserted = db
        .execute(
            "INSERT INTO transactions (transaction_id, account_id, amount, currency, occurred_at,
                 merchant_id, geo_lat, geo_lon, country, channel, metadata, raw, received_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
             ON CONFLICT (transaction_id) DO NOTHING",
            &[
                &tx.transaction_id,
                &tx.account_id,
                &tx.amount,
                &tx.currency,
                &tx.event_time(),
                &tx.merchant_id,
                &tx.geo_lat,
                &tx.geo_lon,
                &tx.country,
                &tx.channel.map(|c| c.as_str()),
                &metadata,
                &event.raw,
                &event.received_at,
            ],
        )
        .await?;
    db.execute(
        "INSERT INTO scores (transaction_id, model_version, rules_version, score, risk_label,
             reasons, features, contributions)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (transaction_id) DO NOTHING",
        &[
            &tx.transaction_id,
            &decision.model_version,
            &decision.rules_version,
            &decision.score,
            &decision.risk_label.as_str(),
            &reasons,
            &features,
            &contributions,
        ],
    )
    .await?;
    let alert_id = if decision.risk_label == RiskLabel::High {
        let reason = decision.reasons.iter().map(|r| r.code.as_str()).collect::<Vec<_>>().join(",");
        db.query_opt(
            "INSERT INTO alerts (transaction_id, account_id, risk_label, score, reason, threshold)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (transaction_id) DO NOTHING
             RETURNING alert_id",
            &[
                &tx.transaction_id,
                &tx.account_id,
                &decision.risk_label.as_str(),
                &decision.score,
                &reason,
                &HIGH_THRESHOLD,
            ],
        )
        .await?
        .map(|row| row.get::<_, i64>(0))
    } else {
        None
    };
    db.commit().await?;
    Ok(Recorded { new_transaction: inserted == 1, alert_id })
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
                'status', CASE WHEN s.transaction_id IS NULL THEN 'received' ELSE 'scored' END,
                'score', CASE WHEN s.transaction_id IS NULL THEN NULL ELSE json_build_object(
                    'model_version', s.model_version,
                    'rules_version', s.rules_version,
                    'score', s.score,
                    'risk_label', s.risk_label,
                    'reasons', s.reasons,
                    'features', s.features,
                    'contributions', s.contributions,
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

/// The raw body a transaction was recorded with, if it was recorded (idempotency backstop).
pub async fn raw_payload(pool: &Pool, transaction_id: &str) -> Result<Option<Value>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt("SELECT raw FROM transactions WHERE transaction_id = $1", &[&transaction_id])
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
) -> Result<LabelOutcome, StoreError> {
    let client = pool.get().await?;
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

//! Alerts as analysts work them: listing with filters and keyset pagination, and the
//! acknowledge / resolve workflow.
//!
//! Every state change is one `UPDATE … WHERE … RETURNING` statement, so concurrent analysts
//! cannot interleave: the first acknowledgement (time and actor) and the first resolution
//! stay, and a different resolution is refused rather than overwriting it.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::{labels::LabelValue, scoring::RiskLabel};

/// Where an alert is in the analysts' workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AlertStatus {
    /// Nobody has looked at it yet.
    Open,
    /// An analyst took it (`acknowledged_at`/`_by`), no verdict yet.
    Acknowledged,
    /// An analyst decided fraud or legit (which also labelled the transaction).
    Resolved,
}

impl AlertStatus {
    /// The name used in URLs and answers.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// The status named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        [AlertStatus::Open, AlertStatus::Acknowledged, AlertStatus::Resolved]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// An alert with its transaction's essentials and its workflow state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AlertRecord {
    /// Monotonic id (the pagination cursor).
    pub alert_id: i64,
    /// The transaction that raised it.
    pub transaction_id: String,
    /// The paying account.
    pub account_id: String,
    /// The merchant paid.
    pub merchant_id: String,
    /// Decimal amount as a string, without trailing zeros.
    #[cfg_attr(feature = "openapi", schema(example = "125.5"))]
    pub amount: String,
    /// ISO 4217 code.
    pub currency: String,
    /// Risk bucket at the time: `LOW`, `MEDIUM` or `HIGH`.
    #[cfg_attr(feature = "openapi", schema(example = "HIGH"))]
    pub risk_label: String,
    /// Score at the time, in [0, 1].
    pub score: f64,
    /// Reason codes of the decision, in order.
    pub reasons: Vec<String>,
    /// The threshold the score crossed.
    pub threshold: f64,
    /// When it was raised.
    pub created_at: DateTime<Utc>,
    /// Derived from the timestamps below.
    pub status: AlertStatus,
    /// When it was first acknowledged.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// Who first acknowledged it.
    pub acknowledged_by: Option<String>,
    /// When it was resolved.
    pub resolved_at: Option<DateTime<Utc>>,
    /// Who resolved it.
    pub resolved_by: Option<String>,
    /// The verdict.
    pub resolution: Option<LabelValue>,
}

/// Which alerts [`list`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertFilter {
    /// Only alerts in this state.
    pub status: Option<AlertStatus>,
    /// Only alerts of this risk bucket.
    pub risk: Option<RiskLabel>,
    /// Only this account's alerts.
    pub account_id: Option<String>,
    /// Raised at or after.
    pub from: Option<DateTime<Utc>>,
    /// Raised before.
    pub to: Option<DateTime<Utc>>,
    /// Only alerts with a smaller id (the previous page's last one).
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
}

/// What [`resolve`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolution {
    /// Resolved now, or already resolved the same way (unchanged).
    Resolved(AlertRecord),
    /// Already resolved the other way; left as it is.
    Conflict(AlertRecord),
    /// No such alert.
    Unknown,
}

/// The columns of [`AlertRecord`], in order, over `alerts a JOIN transactions t`.
const COLUMNS: &str = "a.alert_id, a.transaction_id, a.account_id, t.merchant_id,
    trim_scale(t.amount)::text, t.currency::text, a.risk_label, a.score,
    COALESCE(string_to_array(NULLIF(a.reason, ''), ','), '{}'::text[]), a.threshold, a.created_at,
    a.acknowledged_at, a.acknowledged_by, a.resolved_at, a.resolved_by, a.resolution";

fn record(row: &tokio_postgres::Row) -> Result<AlertRecord, StoreError> {
    let alert_id: i64 = row.get(0);
    let resolution = match row.get::<_, Option<&str>>(15) {
        None => None,
        Some("fraud") => Some(LabelValue::Fraud),
        Some("legit") => Some(LabelValue::Legit),
        Some(other) => return Err(StoreError::Corrupt(format!("alert {alert_id}: resolution {other}"))),
    };
    let acknowledged_at: Option<DateTime<Utc>> = row.get(11);
    let resolved_at: Option<DateTime<Utc>> = row.get(13);
    let status = match (acknowledged_at, resolved_at) {
        (_, Some(_)) => AlertStatus::Resolved,
        (Some(_), None) => AlertStatus::Acknowledged,
        (None, None) => AlertStatus::Open,
    };
    Ok(AlertRecord {
        alert_id,
        transaction_id: row.get(1),
        account_id: row.get(2),
        merchant_id: row.get(3),
        amount: row.get(4),
        currency: row.get(5),
        risk_label: row.get(6),
        score: row.get(7),
        reasons: row.get(8),
        threshold: row.get(9),
        created_at: row.get(10),
        status,
        acknowledged_at,
        acknowledged_by: row.get(12),
        resolved_at,
        resolved_by: row.get(14),
        resolution,
    })
}

/// Alerts matching `filter`, newest (highest id) first.
pub async fn list(pool: &Pool, filter: &AlertFilter) -> Result<Vec<AlertRecord>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id
         WHERE ($1::bigint IS NULL OR a.alert_id < $1)
           AND ($2::text IS NULL OR a.risk_label = $2)
           AND ($3::text IS NULL OR a.account_id = $3)
           AND ($4::timestamptz IS NULL OR a.created_at >= $4)
           AND ($5::timestamptz IS NULL OR a.created_at < $5)
           AND CASE $6::text
                 WHEN 'open' THEN a.acknowledged_at IS NULL AND a.resolved_at IS NULL
                 WHEN 'acknowledged' THEN a.acknowledged_at IS NOT NULL AND a.resolved_at IS NULL
                 WHEN 'resolved' THEN a.resolved_at IS NOT NULL
                 ELSE true END
         ORDER BY a.alert_id DESC
         LIMIT $7"
    );
    let rows = client
        .query(
            &sql,
            &[
                &filter.before,
                &filter.risk.map(RiskLabel::as_str),
                &filter.account_id,
                &filter.from,
                &filter.to,
                &filter.status.map(AlertStatus::as_str),
                &i64::from(filter.limit),
            ],
        )
        .await?;
    rows.iter().map(record).collect()
}

/// One alert; `None` if unknown.
pub async fn get(pool: &Pool, alert_id: i64) -> Result<Option<AlertRecord>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id
         WHERE a.alert_id = $1"
    );
    client.query_opt(&sql, &[&alert_id]).await?.as_ref().map(record).transpose()
}

/// Acknowledges an alert as `actor`; idempotent: an acknowledged alert keeps its first time
/// and actor. `None` if unknown.
pub async fn acknowledge(pool: &Pool, alert_id: i64, actor: &str) -> Result<Option<AlertRecord>, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "WITH a AS (
             UPDATE alerts SET
                 acknowledged_at = COALESCE(acknowledged_at, now()),
                 acknowledged_by = CASE WHEN acknowledged_at IS NULL THEN $2 ELSE acknowledged_by END
             WHERE alert_id = $1
             RETURNING *)
         SELECT {COLUMNS} FROM a JOIN transactions t ON t.transaction_id = a.transaction_id"
    );
    client.query_opt(&sql, &[&alert_id, &actor]).await?.as_ref().map(record).transpose()
}

/// Resolves an alert as `actor` with `verdict`, acknowledging it too if nobody had. The
/// same verdict again changes nothing; a different one is refused
/// ([`Resolution::Conflict`]). Labelling the transaction is the caller's business.
pub async fn resolve(
    pool: &Pool,
    alert_id: i64,
    verdict: LabelValue,
    actor: &str,
) -> Result<Resolution, StoreError> {
    let client = pool.get().await?;
    let sql = format!(
        "WITH a AS (
             UPDATE alerts SET
                 resolution = $2,
                 resolved_at = COALESCE(resolved_at, now()),
                 resolved_by = CASE WHEN resolved_at IS NULL THEN $3 ELSE resolved_by END,
                 acknowledged_at = COALESCE(acknowledged_at, now()),
                 acknowledged_by = CASE WHEN acknowledged_at IS NULL THEN $3 ELSE acknowledged_by END
             WHERE alert_id = $1 AND (resolution IS NULL OR resolution = $2)
             RETURNING *)
         SELECT {COLUMNS} FROM a JOIN transactions t ON t.transaction_id = a.transaction_id"
    );
    if let Some(row) = client.query_opt(&sql, &[&alert_id, &verdict.as_str(), &actor]).await? {
        return Ok(Resolution::Resolved(record(&row)?));
    }
    drop(client);
    Ok(match get(pool, alert_id).await? {
        Some(existing) => Resolution::Conflict(existing),
        None => Resolution::Unknown,
    })
}

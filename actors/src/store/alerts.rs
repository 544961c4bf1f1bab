//! Alerts as analysts work them: listing with filters and keyset pagination, and the
//! acknowledge / resolve workflow.
//!
//! Every state change locks the alert's row, changes it and records the change in the audit
//! trail in one transaction, so concurrent analysts cannot interleave: the first
//! acknowledgement (time and actor) and the first resolution stay, and a different
//! resolution is refused rather than overwriting it.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};

use deadpool_postgres::GenericClient;

use super::{
    StoreError,
    audit::{self, Entry},
};
use crate::{auth::Principal, labels::LabelValue, scoring::RiskLabel};

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

/// The alert, locked for the rest of `db`'s transaction.
async fn locked(db: &impl GenericClient, alert_id: i64) -> Result<Option<AlertRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM alerts a JOIN transactions t ON t.transaction_id = a.transaction_id
         WHERE a.alert_id = $1 FOR UPDATE OF a"
    );
    db.query_opt(&sql, &[&alert_id]).await?.as_ref().map(record).transpose()
}

/// The workflow part of an alert, as the audit trail keeps it before and after a change.
fn workflow(alert: &AlertRecord) -> serde_json::Value {
    serde_json::json!({
        "status": alert.status,
        "acknowledged_at": alert.acknowledged_at,
        "acknowledged_by": alert.acknowledged_by,
        "resolution": alert.resolution,
        "resolved_at": alert.resolved_at,
        "resolved_by": alert.resolved_by,
    })
}

/// Records the change from `before` to `after` and commits.
async fn commit_change(
    db: deadpool_postgres::Transaction<'_>,
    actor: &Principal,
    action: &'static str,
    before: &AlertRecord,
    after: &AlertRecord,
) -> Result<(), StoreError> {
    let entry = Entry {
        actor,
        action,
        subject: format!("alert:{}", after.alert_id),
        before: Some(workflow(before)),
        after: Some(workflow(after)),
    };
    audit::record(&db, &entry).await?;
    db.commit().await?;
    Ok(())
}

/// Acknowledges an alert as `actor`; idempotent: an acknowledged alert keeps its first time
/// and actor (and the audit trail records only the first). `None` if unknown.
pub async fn acknowledge(
    pool: &Pool,
    alert_id: i64,
    actor: &Principal,
) -> Result<Option<AlertRecord>, StoreError> {
    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let Some(before) = locked(&db, alert_id).await? else {
        return Ok(None);
    };
    if before.acknowledged_at.is_some() {
        return Ok(Some(before));
    }
    let sql = format!(
        "WITH a AS (
             UPDATE alerts SET acknowledged_at = now(), acknowledged_by = $2
             WHERE alert_id = $1
             RETURNING *)
         SELECT {COLUMNS} FROM a JOIN transactions t ON t.transaction_id = a.transaction_id"
    );
    let after = record(&db.query_one(&sql, &[&alert_id, &actor.subject]).await?)?;
    commit_change(db, actor, "alert.acknowledge", &before, &after).await?;
    Ok(Some(after))
}

/// Resolves an alert as `actor` with `verdict`, acknowledging it too if nobody had. The
/// same verdict again changes nothing; a different one is refused
/// ([`Resolution::Conflict`]). Labelling the transaction is the caller's business.
pub async fn resolve(
    pool: &Pool,
    alert_id: i64,
    verdict: LabelValue,
    actor: &Principal,
) -> Result<Resolution, StoreError> {
    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let Some(before) = locked(&db, alert_id).await? else {
        return Ok(Resolution::Unknown);
    };
    match before.resolution {
        Some(existing) if existing == verdict => return Ok(Resolution::Resolved(before)),
        Some(_) => return Ok(Resolution::Conflict(before)),
        None => {}
    }
    let sql = format!(
        "WITH a AS (
             UPDATE alerts SET
                 resolution = $2,
                 resolved_at = now(),
                 resolved_by = $3,
                 acknowledged_at = COALESCE(acknowledged_at, now()),
                 acknowledged_by = CASE WHEN acknowledged_at IS NULL THEN $3 ELSE acknowledged_by END
             WHERE alert_id = $1
             RETURNING *)
         SELECT {COLUMNS} FROM a JOIN transactions t ON t.transaction_id = a.transaction_id"
    );
    let after = record(&db.query_one(&sql, &[&alert_id, &verdict.as_str(), &actor.subject]).await?)?;
    commit_change(db, actor, "alert.resolve", &before, &after).await?;
    Ok(Resolution::Resolved(after))
}

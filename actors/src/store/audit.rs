//! The audit trail: who did what, when, with the state before and after.
//!
//! Every analyst and admin action writes one [`Entry`] with [`record`] inside the same
//! PostgreSQL transaction as the change itself, so a change and its entry commit together
//! or not at all. The table is append-only (a trigger refuses `UPDATE`, `DELETE` and
//! `TRUNCATE`); [`list`] reads it newest first with keyset pagination.

use chrono::{DateTime, Utc};
use deadpool_postgres::{GenericClient, Pool};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::StoreError;
use crate::auth::Principal;

/// Every action the trail records.
pub const ACTIONS: &[&str] = &[
    "alert.acknowledge",
    "alert.resolve",
    "transaction.label",
    "rules.create",
    "rules.activate",
    "model.activate",
    "model.shadow",
    "model.retire",
    "model.candidate",
    "dlq.replay",
    "dlq.purge",
];

/// One action about to be recorded.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// Who: the caller.
    pub actor: &'a Principal,
    /// One of [`ACTIONS`].
    pub action: &'static str,
    /// What it acted on (`alert:17`, `rules-4`, a model version, a queue).
    pub subject: String,
    /// The state before (`null` when there was none).
    pub before: Option<Value>,
    /// The state after.
    pub after: Option<Value>,
}

/// One recorded action, as `GET /audit` returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditRecord {
    /// Increasing id; pass the last one as `cursor` for older entries.
    pub audit_id: i64,
    /// When (the transaction's time).
    pub at: DateTime<Utc>,
    /// The token subject that acted.
    pub actor: String,
    /// The roles it held.
    pub roles: Vec<String>,
    /// What it did (`alert.acknowledge`, `rules.create`, …).
    pub action: String,
    /// What it acted on.
    pub subject: String,
    /// The state before.
    pub before: Option<Value>,
    /// The state after.
    pub after: Option<Value>,
    /// The trace of the request that acted, to find its logs and spans.
    pub trace_id: Option<String>,
}

/// `GET /audit` filters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only this actor's entries.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only entries about this subject.
    pub subject: Option<String>,
    /// Only entries at or after this moment.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with a smaller id (the previous page's cursor).
    pub before: Option<i64>,
    /// Page size.
    pub limit: u32,
}

/// Writes `entry` on `db` (a transaction: the caller's change commits with it).
pub async fn record(db: &impl GenericClient, entry: &Entry<'_>) -> Result<(), StoreError> {
    let roles = entry.actor.role_names();
    let trace_id = crate::telemetry::propagation::trace_id(&tracing::Span::current());
    db.execute(
        "INSERT INTO audit_log (actor, roles, action, subject, before, after, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &entry.actor.subject,
            &roles,
            &entry.action,
            &entry.subject,
            &entry.before,
            &entry.after,
            &trace_id,
        ],
    )
    .await?;
    Ok(())
}

/// Entries matching `filter`, newest first.
pub async fn list(pool: &Pool, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
    let client = pool.get().await?;
    let limit = i64::from(filter.limit);
    let rows = client
        .query(
            "SELECT audit_id, at, actor, roles, action, subject, before, after, trace_id FROM audit_log
             WHERE ($1::text IS NULL OR actor = $1)
               AND ($2::text IS NULL OR action = $2)
               AND ($3::text IS NULL OR subject = $3)
               AND ($4::timestamptz IS NULL OR at >= $4)
               AND ($5::bigint IS NULL OR audit_id < $5)
             ORDER BY audit_id DESC LIMIT $6",
            &[&filter.actor, &filter.action, &filter.subject, &filter.since, &filter.before, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| AuditRecord {
            audit_id: row.get(0),
            at: row.get(1),
            actor: row.get(2),
            roles: row.get(3),
            action: row.get(4),
            subject: row.get(5),
            before: row.get(6),
            after: row.get(7),
            trace_id: row.get(8),
        })
        .collect())
}

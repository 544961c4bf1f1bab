//! Schema migrations, embedded in the binary and applied in order.
//!
//! Every process may run [`migrate`] at start-up: an advisory lock serialises concurrent
//! runners, each migration runs in the same transaction as its bookkeeping row, and a
//! migration that was already applied is skipped, so running it twice changes nothing.

use deadpool_postgres::Pool;

use super::StoreError;

/// `(version, name, sql)`, in the order they must run. Append only: never edit a shipped one.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/0001_initial.sql")),
    (2, "labels", include_str!("../../migrations/0002_labels.sql")),
    (3, "degraded", include_str!("../../migrations/0003_degraded.sql")),
    (4, "processed_by", include_str!("../../migrations/0004_processed_by.sql")),
    (5, "models_rules", include_str!("../../migrations/0005_models_rules.sql")),
    (6, "alert_workflow", include_str!("../../migrations/0006_alert_workflow.sql")),
    (7, "trace_context", include_str!("../../migrations/0007_trace_context.sql")),
    (8, "outbox_vacuum", include_str!("../../migrations/0008_outbox_vacuum.sql")),
    (9, "audit_log", include_str!("../../migrations/0009_audit_log.sql")),
];

/// Arbitrary constant naming our advisory lock ("fraudsen" in ASCII).
const LOCK_KEY: i64 = 0x6672_6175_6473_656e;

/// Applies every migration not yet recorded; returns the versions it applied.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, StoreError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY]).await?;
    let exists: bool = tx.query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[]).await?.get(0);
    if !exists {
        tx.batch_execute(
            "CREATE TABLE schema_migrations (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    }
    let done: Vec<i32> =
        tx.query("SELECT version FROM schema_migrations", &[]).await?.iter().map(|r| r.get(0)).collect();
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if done.contains(version) {
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", &[version, name]).await?;
        tracing::info!(version, name, "applied migration");
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::MIGRATIONS;

    #[test]
    fn versions_are_strictly_increasing() {
        assert!(MIGRATIONS.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(MIGRATIONS.first().map(|m| m.0), Some(1));
    }
}

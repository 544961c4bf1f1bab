//! The store against the real PostgreSQL.

use fraudsense_actors::{store::StoreError, testing::TestEnv};

/// PostgreSQL quotes the failing row in an error's DETAIL; a logged StoreError must not
/// carry it (the row is payment data).
#[tokio::test]
async fn a_failed_statement_is_reported_without_the_row_it_quotes() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let pool = env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let db = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    db.batch_execute("CREATE TABLE pii_probe (email text CHECK (email NOT LIKE '%@%'))")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let failed = db
        .execute("INSERT INTO pii_probe VALUES ('jane@example.com')", &[])
        .await
        .err()
        .unwrap_or_else(|| panic!("the check constraint let the row in"));
    assert!(
        failed.as_db_error().and_then(|e| e.detail()).is_some_and(|d| d.contains("jane@example.com")),
        "PostgreSQL quotes the row: the premise of this test"
    );
    // As a log line shows it: `%error`, or the whole chain at the top (`{:#}`).
    let shown = format!("{:#}", anyhow::Error::new(StoreError::from(failed)).context("recording"));
    assert!(shown.contains("23514"), "the SQLSTATE stays: {shown}");
    assert!(!shown.contains("jane@example.com"), "{shown}");
    drop(db);
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

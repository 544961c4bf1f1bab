//! The decision watch: which accepted transactions have a committed decision, and when it
//! was committed, read from PostgreSQL.
//!
//! The commit time is `transactions.processed_at`, PostgreSQL's `now()` inside the
//! transaction that committed the decision (its start; the commit follows within
//! milliseconds). Because the time comes from the row, how often this module polls changes
//! only the load it puts on PostgreSQL, never the latencies.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

use super::bodies::transaction_id;

/// Most ids one poll asks about (the oldest pending first).
const POLL_LIMIT: usize = 20_000;
/// Ids per query.
const CHUNK: usize = 5_000;

/// One committed decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    /// Request number within the run.
    pub n: u64,
    /// `transactions.processed_at`.
    pub processed_at: DateTime<Utc>,
    /// `scores.risk_label` (`LOW`, `MEDIUM`, `HIGH`).
    pub risk_label: Option<String>,
}

/// Accepted transactions still waiting for their decision.
#[derive(Debug)]
pub struct DecisionWatch {
    pool: Pool,
    run_id: String,
    pending: BTreeSet<u64>,
}

impl DecisionWatch {
    /// Watches the run `run_id` on `pool`.
    pub fn new(pool: Pool, run_id: &str) -> Self {
        Self { pool, run_id: run_id.to_owned(), pending: BTreeSet::new() }
    }

    /// Request `n` was accepted: its decision is expected.
    pub fn expect(&mut self, n: u64) {
        self.pending.insert(n);
    }

    /// Accepted requests not decided yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Looks up (at most [`POLL_LIMIT`] of the oldest) pending transactions and returns
    /// those now decided, which stop being pending.
    pub async fn poll(&mut self) -> Result<Vec<Decided>, anyhow::Error> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT t.transaction_id, t.processed_at, s.risk_label
                   FROM transactions t LEFT JOIN scores s USING (transaction_id)
                  WHERE t.transaction_id = ANY($1)",
            )
            .await?;
        let wanted: Vec<u64> = self.pending.iter().take(POLL_LIMIT).copied().collect();
        let mut decided = Vec::new();
        for chunk in wanted.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(|&n| transaction_id(&self.run_id, n)).collect();
            for row in client.query(&statement, &[&ids]).await? {
                let id: String = row.get(0);
                let Some(n) = super::bodies::request_number(&self.run_id, &id) else { continue };
                if self.pending.remove(&n) {
                    decided.push(Decided { n, processed_at: row.get(1), risk_label: row.get(2) });
                }
            }
        }
        Ok(decided)
    }
}

/// The newest alert id stored (0 when there is none): where the alert stream starts.
pub async fn newest_alert_id(pool: &Pool) -> Result<i64, anyhow::Error> {
    let client = pool.get().await?;
    let row = client.query_one("SELECT coalesce(max(alert_id), 0)::bigint FROM alerts", &[]).await?;
    Ok(row.get(0))
}

//! Per-account sliding windows in Redis, on event time.
//!
//! One sorted set per account: member = `transaction_id`, score = event time in ms. A
//! redelivered transaction re-adds the same member, so it is never counted twice, and
//! counts are taken relative to the transaction's own timestamp, so replaying history
//! yields the same features as live traffic.

use fred::{clients::Client, prelude::Error as RedisError, types::scripts::Script};
use serde::{Deserialize, Serialize};

use crate::transaction::Transaction;

/// How long window entries are kept (the longest window).
pub const RETENTION_MS: i64 = 24 * 60 * 60 * 1000;
const HOUR_MS: i64 = 60 * 60 * 1000;

/// Atomic: add this transaction, trim what fell out of the longest window, refresh the TTL,
/// and count the entries in each window ending at this transaction's event time.
const WINDOW_LUA: &str = r"
local key, ts, member, retention = KEYS[1], tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
redis.call('ZADD', key, ts, member)
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. (ts - retention))
redis.call('PEXPIRE', key, retention)
local counts = {}
for i = 4, #ARGV do
  counts[#counts + 1] = redis.call('ZCOUNT', key, '(' .. (ts - tonumber(ARGV[i])), ts)
end
return counts
";

/// The feature vector scoring runs on.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Transactions of this account in the hour up to and including this one.
    pub tx_count_1h: u64,
    /// Transactions of this account in the 24 h up to and including this one.
    pub tx_count_24h: u64,
}

/// Updates and reads the windows of one Redis deployment.
#[derive(Clone)]
pub struct WindowStore {
    client: Client,
    script: Script,
    prefix: String,
}

impl std::fmt::Debug for WindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStore").field("prefix", &self.prefix).finish()
    }
}

impl WindowStore {
    /// Windows stored under keys starting with `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self { client, script: Script::from_lua(WINDOW_LUA), prefix: prefix.to_owned() }
    }

    /// The sorted-set key of one account.
    pub fn account_key(&self, account_id: &str) -> String {
        format!("{}acct:{account_id}:tx", self.prefix)
    }

    /// Records `tx` in its account's window and returns the features at its event time.
    pub async fn observe(&self, tx: &Transaction) -> Result<Features, RedisError> {
        let ts = tx.event_time().timestamp_millis();
        let counts: Vec<i64> = self
            .script
            .evalsha_with_reload(
                &self.client,
                vec![self.account_key(&tx.account_id)],
                vec![
                    ts.to_string(),
                    tx.transaction_id.clone(),
                    RETENTION_MS.to_string(),
                    HOUR_MS.to_string(),
                    RETENTION_MS.to_string(),
                ],
            )
            .await?;
        let count = |i: usize| counts.get(i).copied().unwrap_or(0).max(0).unsigned_abs();
        Ok(Features { tx_count_1h: count(0), tx_count_24h: count(1) })
    }
}

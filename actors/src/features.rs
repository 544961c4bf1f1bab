//! Per-account sliding windows in Redis, on event time.
//!
//! Three keys per account, sharing a hash tag so they live on one Redis Cluster slot:
//! - `{p}acct:{<id>}:tx`: sorted set, member = `transaction_id`, score = event time (ms);
//! - `{p}acct:{<id>}:amt`: hash `transaction_id → amount`, trimmed together with the set;
//! - `{p}acct:{<id>}:last`: hash with the latest event (time, location, merchant, id).
//!
//! A redelivered transaction re-adds the same member, so it is never counted twice; windows
//! end at the transaction's own timestamp, so replaying history yields the same features as
//! live traffic, and a late (out-of-order) transaction sees exactly the earlier ones.
//! Entries older than the longest window are trimmed and the keys expire, so memory is
//! bounded by the traffic of one window.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use fred::{clients::Client, prelude::Error as RedisError, types::scripts::Script};
use serde::{Deserialize, Serialize};

use crate::transaction::Transaction;

/// The windows every account keeps, as (name, length in ms), shortest first.
pub const WINDOWS: [(&str, i64); 4] = [
    ("5m", 5 * 60 * 1000),
    ("1h", 60 * 60 * 1000),
    ("24h", 24 * 60 * 60 * 1000),
    ("7d", 7 * 24 * 60 * 60 * 1000),
];
/// How long window entries are kept: the longest window.
pub const RETENTION_MS: i64 = WINDOWS[WINDOWS.len() - 1].1;

/// Shared by both scripts: count and sum (4-decimal string) of the window of `len` ms
/// ending at `at` (inclusive).
const WINDOW_FN_LUA: &str = r"
local function window(tx, amt, at, len)
  local members = redis.call('ZRANGEBYSCORE', tx, '(' .. (at - len), at)
  local sum = 0
  if #members > 0 then
    for _, a in ipairs(redis.call('HMGET', amt, unpack(members))) do sum = sum + (tonumber(a) or 0) end
  end
  return #members, string.format('%.4f', sum)
end
";

/// Atomic update + read for one transaction. Returns, per window, `count` and `sum` (as a
/// string: Redis would truncate a Lua float), then the previous event's time or -1.
const OBSERVE_LUA: &str = r"
local tx, amt, last = KEYS[1], KEYS[2], KEYS[3]
local ts, member, amount, retention = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
redis.call('ZADD', tx, ts, member)
redis.call('HSET', amt, member, amount)
local old = redis.call('ZRANGEBYSCORE', tx, '-inf', '(' .. (ts - retention))
if #old > 0 then
  redis.call('HDEL', amt, unpack(old))
  redis.call('ZREMRANGEBYSCORE', tx, '-inf', '(' .. (ts - retention))
end
local last_ts = tonumber(redis.call('HGET', last, 'ts'))
if (not last_ts) or ts >= last_ts then
  redis.call('HSET', last, 'ts', ts, 'id', member, 'lat', ARGV[5], 'lon', ARGV[6], 'merchant', ARGV[7])
end
for _, k in ipairs({tx, amt, last}) do redis.call('PEXPIRE', k, retention) end
local out = {}
for i = 8, #ARGV do
  local count, sum = window(tx, amt, ts, tonumber(ARGV[i]))
  out[#out + 1] = count
  out[#out + 1] = sum
end
local prev = redis.call('ZREVRANGEBYSCORE', tx, '(' .. ts, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
out[#out + 1] = prev[2] or '-1'
return out
";

/// Read-only view of an account's windows ending at ARGV[1] (or at its latest event if -1).
/// Returns the end time used, then count/sum per window, then the `last` hash fields.
const STATE_LUA: &str = r"
local tx, amt, last = KEYS[1], KEYS[2], KEYS[3]
local at = tonumber(ARGV[1])
local l = redis.call('HMGET', last, 'ts', 'id', 'lat', 'lon', 'merchant')
if at < 0 then at = tonumber(l[1]) or 0 end
local out = {tostring(at)}
for i = 2, #ARGV do
  local count, sum = window(tx, amt, at, tonumber(ARGV[i]))
  out[#out + 1] = tostring(count)
  out[#out + 1] = sum
end
for i = 1, 5 do out[#out + 1] = l[i] or '' end
return out
";

/// Everything scoring knows about a transaction beyond its own fields, all computed at the
/// transaction's event time (see `docs/features.md` for the definitions).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Features {
    /// The transaction's amount, as a float (models only; the decimal stays authoritative).
    pub amount: f64,
    /// Transactions of this account in the 5 minutes up to and including this one.
    pub tx_count_5m: u64,
    /// ... in the hour up to and including this one.
    pub tx_count_1h: u64,
    /// ... in the 24 hours up to and including this one.
    pub tx_count_24h: u64,
    /// ... in the 7 days up to and including this one.
    pub tx_count_7d: u64,
    /// Sum of amounts in the 5-minute window.
    pub amount_sum_5m: f64,
    /// Sum of amounts in the 1-hour window.
    pub amount_sum_1h: f64,
    /// Sum of amounts in the 24-hour window.
    pub amount_sum_24h: f64,
    /// Sum of amounts in the 7-day window.
    pub amount_sum_7d: f64,
    /// Mean amount in the 5-minute window.
    pub amount_mean_5m: f64,
    /// Mean amount in the 1-hour window.
    pub amount_mean_1h: f64,
    /// Mean amount in the 24-hour window.
    pub amount_mean_24h: f64,
    /// Mean amount in the 7-day window.
    pub amount_mean_7d: f64,
    /// This amount divided by the mean of the account's earlier transactions in 7 days;
    /// `None` without history.
    pub amount_ratio_7d: Option<f64>,
    /// Seconds since the account's previous transaction (by event time), if any in 7 days.
    pub seconds_since_prev: Option<f64>,
    /// Great-circle distance from the previous transaction's location, in km, when both
    /// have a location.
    pub distance_km: Option<f64>,
    /// `distance_km` over the time between the two, in km/h (time floored at one minute).
    pub speed_kmh: Option<f64>,
    /// Distinct merchants this account paid in 24 h, this one included.
    pub distinct_merchants_24h: u64,
    /// This merchant is absent from the account's earlier 7-day history.
    pub new_merchant: bool,
    /// Local hour of day (solar time from `geo_lon` when known, else UTC), 0–23.
    pub hour_of_day: u32,
    /// `hour_of_day` falls between 00:00 and 05:59.
    pub night: bool,
    /// Saturday or Sunday, same clock as `hour_of_day`.
    pub weekend: bool,
    /// Transactions at this merchant (all accounts) in the hour up to this one.
    pub merchant_tx_count_1h: u64,
    /// ... in the 24 hours up to this one.
    pub merchant_tx_count_24h: u64,
    /// Labels on this merchant's transactions recorded at least the label delay before
    /// this transaction (window: `MERCHANT_LABEL_DAYS`).
    pub merchant_labels: u64,
    /// How many of them say fraud.
    pub merchant_fraud_labels: u64,
    /// Smoothed fraud rate `(fraud + 1) / (labels + 50)`: a prior of 2 % that real labels
    /// overrule as they accumulate.
    pub merchant_risk_rate: f64,
}

/// Count and sum of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowState {
    /// Window name (`5m`, `1h`, `24h`, `7d`).
    pub window: String,
    /// Transactions in the window.
    pub count: u64,
    /// Sum of their amounts (decimal string, 4 places).
    pub sum: String,
}

/// An account's live window state, for analysts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountState {
    /// The account.
    pub account_id: String,
    /// The windows end here (the account's latest event unless asked otherwise).
    pub as_of: Option<DateTime<Utc>>,
    /// Count and sum per window.
    pub windows: Vec<WindowState>,
    /// Event time of the latest transaction.
    pub last_seen: Option<DateTime<Utc>>,
    /// Its id.
    pub last_transaction_id: Option<String>,
    /// Where it happened, if known.
    pub last_location: Option<Location>,
    /// Whom it paid.
    pub last_merchant_id: Option<String>,
}

/// A point on earth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Location {
    /// Latitude in degrees.
    pub lat: f64,
    /// Longitude in degrees.
    pub lon: f64,
}

/// After a Redis failure, window updates are skipped for this long (circuit breaker), so
/// an outage costs one timeout per second instead of one per transaction.
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(1);

/// Why the windows could not be updated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WindowError {
    /// Redis answered with an error or not at all.
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    /// A recent failure opened the circuit breaker; Redis was not tried.
    #[error("feature store unavailable (circuit open)")]
    CircuitOpen,
}

/// Updates and reads the windows of one Redis deployment.
#[derive(Clone)]
pub struct WindowStore {
    client: Client,
    observe: Script,
    state: Script,
    prefix: String,
    open_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for WindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStore").field("prefix", &self.prefix).finish()
    }
}

impl WindowStore {
    /// Windows stored under keys starting with `prefix`.
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            observe: Script::from_lua(format!("{WINDOW_FN_LUA}{OBSERVE_LUA}")),
            state: Script::from_lua(format!("{WINDOW_FN_LUA}{STATE_LUA}")),
            prefix: prefix.to_owned(),
            open_until: Arc::new(Mutex::new(None)),
        }
    }

    /// The three keys of one account.
    pub fn account_keys(&self, account_id: &str) -> Vec<String> {
        ["tx", "amt", "last"].iter().map(|k| format!("{}acct:{{{account_id}}}:{k}", self.prefix)).collect()
    }

    /// Records `tx` in its account's windows and returns the features at its event time.
    /// Fails fast while the circuit breaker is open after a Redis failure.
    pub async fn observe(&self, tx: &Transaction) -> Result<Features, WindowError> {
        let open = self
            .open_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| Instant::now() < t);
        if open {
            return Err(WindowError::CircuitOpen);
        }
        let result = self.observe_in_redis(tx).await;
        let mut open_until = self.open_until.lock().unwrap_or_else(PoisonError::into_inner);
        *open_until = result.is_err().then(|| Instant::now() + BREAKER_COOL_DOWN);
        Ok(result?)
    }

    async fn observe_in_redis(&self, tx: &Transaction) -> Result<Features, RedisError> {
        let ts = tx.event_time().timestamp_millis();
        let mut args = vec![
            ts.to_string(),
            tx.transaction_id.clone(),
            tx.amount.to_string(),
            RETENTION_MS.to_string(),
            tx.geo_lat.map(|v| v.to_string()).unwrap_or_default(),
            tx.geo_lon.map(|v| v.to_string()).unwrap_or_default(),
            tx.merchant_id.clone(),
        ];
        args.extend(WINDOWS.iter().map(|(_, ms)| ms.to_string()));
        let out: Vec<String> =
            self.observe.evalsha_with_reload(&self.client, self.account_keys(&tx.account_id), args).await?;
        let count = |i: usize| out.get(2 * i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let sum = |i: usize| out.get(2 * i + 1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        let prev = out.get(2 * WINDOWS.len()).and_then(|v| v.parse::<f64>().ok()).filter(|p| *p >= 0.0);
        Ok(Features {
            tx_count_5m: count(0),
            tx_count_1h: count(1),
            tx_count_24h: count(2),
            tx_count_7d: count(3),
            amount_sum_5m: sum(0),
            amount_sum_1h: sum(1),
            amount_sum_24h: sum(2),
            amount_sum_7d: sum(3),
            seconds_since_prev: prev.map(|p| (ts as f64 - p) / 1000.0),
            ..Features::default()
        })
    }

    /// The account's windows ending at `at` (default: its latest event). `None` if Redis
    /// holds nothing for it (unknown, or idle for longer than the longest window).
    pub async fn account_state(
        &self,
        account_id: &str,
        at: Option<DateTime<Utc>>,
    ) -> Result<Option<AccountState>, RedisError> {
        let mut args = vec![at.map_or(-1, |t| t.timestamp_millis()).to_string()];
        args.extend(WINDOWS.iter().map(|(_, ms)| ms.to_string()));
        let out: Vec<String> =
            self.state.evalsha_with_reload(&self.client, self.account_keys(account_id), args).await?;
        let field = |i: usize| out.get(i).map(String::as_str).filter(|s| !s.is_empty());
        let base = 1 + 2 * WINDOWS.len();
        let last_seen =
            field(base).and_then(|v| v.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis);
        let Some(last_seen) = last_seen else {
            return Ok(None);
        };
        let windows = WINDOWS
            .iter()
            .enumerate()
            .map(|(i, (name, _))| WindowState {
                window: (*name).to_owned(),
                count: field(1 + 2 * i).and_then(|v| v.parse().ok()).unwrap_or(0),
                sum: field(2 + 2 * i).unwrap_or("0.0000").to_owned(),
            })
            .collect();
        let coordinate = |i: usize| field(base + i).and_then(|v| v.parse::<f64>().ok());
        Ok(Some(AccountState {
            account_id: account_id.to_owned(),
            as_of: field(0).and_then(|v| v.parse::<i64>().ok()).and_then(DateTime::from_timestamp_millis),
            windows,
            last_seen: Some(last_seen),
            last_transaction_id: field(base + 1).map(str::to_owned),
            last_location: coordinate(2).zip(coordinate(3)).map(|(lat, lon)| Location { lat, lon }),
            last_merchant_id: field(base + 4).map(str::to_owned),
        }))
    }
}

//! Event-time features: per-account and per-merchant sliding windows in Redis.
//!
//! Per account, keys sharing one hash tag (one Redis Cluster slot):
//! - `{p}acct:{<id>}:tx`: sorted set, member = `transaction_id`, score = event time (ms);
//! - `{p}acct:{<id>}:amt`, `:geo`, `:mer`: hashes `transaction_id →` amount, `lat,lon`,
//!   merchant, trimmed together with the set;
//! - `{p}acct:{<id>}:last`: hash with the latest event (time, location, merchant, id).
//!
//! Per merchant (`{p}merch:{<id>}:…`): `tx` (sorted set of its transactions, 24 h), `lab`
//! and `fraud` (sorted sets of labelled transaction ids, score = when the label arrived).
//!
//! Each side is updated and read by one Lua script (atomic); the two scripts run
//! concurrently on the one multiplexed connection, so they share a round trip. A
//! redelivered transaction re-adds the same member, so it is never counted twice; windows
//! end at the transaction's own timestamp, so replaying history yields the same features as
//! live traffic, and a late (out-of-order) transaction sees exactly the earlier ones that
//! are still within the retention (7 days per account, 24 h per merchant, counted from the
//! newest event seen).
//! Entries older than the longest window are trimmed and every key has a TTL, so memory is
//! bounded by the traffic of one window. The merchant risk rate only counts labels that
//! arrived at least `MERCHANT_LABEL_DELAY_SECS` before the transaction: point-in-time
//! correct, so training on stored feature vectors cannot leak later knowledge.
//!
//! [`derive`] turns the raw window answers into [`Features`]; it is the one code path for
//! live scoring, training and replay.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use fred::{clients::Client, prelude::Error as RedisError, types::scripts::Script};
use serde::{Deserialize, Serialize};

use crate::{settings::ScoringSettings, transaction::Transaction};

pub mod account_window;

pub use account_window::{AccountWindow, Entry};

/// The windows every account keeps, as (name, length in ms), shortest first.
pub const WINDOWS: [(&str, i64); 4] = [
    ("5m", 5 * 60 * 1000),
    ("1h", 60 * 60 * 1000),
    ("24h", 24 * 60 * 60 * 1000),
    ("7d", 7 * 24 * 60 * 60 * 1000),
];
/// How long window entries are kept: the longest window.
pub const RETENTION_MS: i64 = WINDOWS[WINDOWS.len() - 1].1;

/// Shared by the account scripts: the members of the window of `len` ms ending at `at`
/// (inclusive), and their count and sum (4-decimal string: Redis would truncate a Lua float).
/// Hash reads and deletes go in chunks: Lua's `unpack` fails beyond about 8000 values,
/// and a busy account can hold more than that in 7 days.
const WINDOW_FN_LUA: &str = r"
local function chunked(cmd, hash, keys)
  local out = {}
  for i = 1, #keys, 1000 do
    local part = redis.call(cmd, hash, unpack(keys, i, math.min(i + 999, #keys)))
    if type(part) == 'table' then
      for j = 1, #part do out[#out + 1] = part[j] end
    end
  end
  return out
end
local function members(tx, at, len)
  return redis.call('ZRANGEBYSCORE', tx, '(' .. (at - len), at)
end
local function window(tx, amt, at, len)
  local m = members(tx, at, len)
  local sum = 0
  for _, a in ipairs(chunked('HMGET', amt, m)) do sum = sum + (tonumber(a) or 0) end
  return #m, string.format('%.4f', sum)
end
";

/// Atomic update of one account with one transaction. ARGV: time, id, amount, retention,
/// lat, lon, merchant, and the version the caller's in-memory copy has ('' if none).
/// Every write bumps the account's version (`v` in `last`). Returns the new version alone
/// when the caller's copy was current, else the version and then the whole window, five
/// values per entry in (time, id) order: id, time, amount, merchant, 'lat,lon' (or '').
const RECORD_LUA: &str = r"
local tx, amt, last, geo, mer = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ts, member, amount, retention = tonumber(ARGV[1]), ARGV[2], ARGV[3], tonumber(ARGV[4])
local lat, lon, merchant, known = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
redis.call('ZADD', tx, ts, member)
redis.call('HSET', amt, member, amount)
redis.call('HSET', mer, member, merchant)
if lat ~= '' then redis.call('HSET', geo, member, lat .. ',' .. lon) end
local old = redis.call('ZRANGEBYSCORE', tx, '-inf', '(' .. (ts - retention))
if #old > 0 then
  for _, h in ipairs({amt, geo, mer}) do chunked('HDEL', h, old) end
  redis.call('ZREMRANGEBYSCORE', tx, '-inf', '(' .. (ts - retention))
end
local last_ts = tonumber(redis.call('HGET', last, 'ts'))
if (not last_ts) or ts >= last_ts then
  redis.call('HSET', last, 'ts', ts, 'id', member, 'lat', lat, 'lon', lon, 'merchant', merchant)
end
local version = redis.call('HINCRBY', last, 'v', 1)
for _, k in ipairs({tx, amt, last, geo, mer}) do redis.call('PEXPIRE', k, retention) end
if known ~= '' and tonumber(known) == version - 1 then return {version} end
local all = redis.call('ZRANGE', tx, 0, -1, 'WITHSCORES')
local ids = {}
for i = 1, #all, 2 do ids[#ids + 1] = all[i] end
local amounts, merchants, places = chunked('HMGET', amt, ids), chunked('HMGET', mer, ids), chunked('HMGET', geo, ids)
local out = {version}
for i, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = all[2 * i]
  out[#out + 1] = amounts[i] or ''
  out[#out + 1] = merchants[i] or ''
  out[#out + 1] = places[i] or ''
end
return out
";

/// Atomic update + read for one transaction of a merchant. ARGV: time, id, retention,
/// label cut-off (time minus the label delay), start of the label window. Returns the
/// merchant's transactions in 1 h and 24 h, and its labels and fraud labels in the window.
const MERCHANT_LUA: &str = r"
local tx, lab, fraud = KEYS[1], KEYS[2], KEYS[3]
local ts, member, retention = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
local cutoff, from = ARGV[4], '(' .. ARGV[5]
redis.call('ZADD', tx, ts, member)
redis.call('ZREMRANGEBYSCORE', tx, '-inf', '(' .. (ts - retention))
redis.call('PEXPIRE', tx, retention)
return {
  redis.call('ZCOUNT', tx, '(' .. (ts - 3600000), ts),
  redis.call('ZCOUNT', tx, '(' .. (ts - retention), ts),
  redis.call('ZCOUNT', lab, from, cutoff),
  redis.call('ZCOUNT', fraud, from, cutoff),
}
";

/// Records a label on a merchant's transaction. ARGV: labelled-at time, id, fraud (1/0),
/// trim-before time ('' keeps everything), TTL.
const LABEL_LUA: &str = r"
local lab, fraud = KEYS[1], KEYS[2]
local at, member, is_fraud, trim, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
redis.call('ZADD', lab, 'NX', at, member)
if is_fraud == '1' then redis.call('ZADD', fraud, 'NX', at, member) end
for _, k in ipairs({lab, fraud}) do
  if trim ~= '' then redis.call('ZREMRANGEBYSCORE', k, '-inf', '(' .. trim) end
  redis.call('PEXPIRE', k, ttl)
end
return 1
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

/// The merchant windows' retention (their longest window).
pub const MERCHANT_RETENTION_MS: i64 = 24 * 60 * 60 * 1000;

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

/// What the two scripts answered for one transaction: the raw material of [`Features`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawWindows {
    /// Count and sum per entry of [`WINDOWS`].
    pub windows: [(u64, f64); 4],
    /// Event time (ms) of the account's previous transaction.
    pub prev_ms: Option<i64>,
    /// Its location.
    pub prev_location: Option<Location>,
    /// Distinct merchants of the account in 24 h.
    pub distinct_merchants_24h: u64,
    /// The merchant is absent from the account's earlier 7-day history.
    pub new_merchant: bool,
    /// The merchant's transactions in 1 h and 24 h.
    pub merchant_counts: (u64, u64),
    /// Labels and fraud labels on the merchant that count at this time.
    pub merchant_labels: (u64, u64),
}

/// Mean radius of the earth, km (IUGG).
const EARTH_RADIUS_KM: f64 = 6371.0088;

/// Great-circle distance in km between two points (haversine).
pub fn haversine_km(a: Location, b: Location) -> f64 {
    let (lat1, lat2) = (a.lat.to_radians(), b.lat.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.lon - a.lon).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_KM * h.sqrt().min(1.0).asin()
}

/// Local hour, night and weekend of an event: solar time from the longitude when known
/// (15° per hour), UTC otherwise, so a payment at 03:00 in Tokyo reads as night.
pub fn local_time(at: DateTime<Utc>, lon: Option<f64>) -> (u32, bool, bool) {
    use chrono::{Datelike, Timelike, Weekday};
    let offset_hours = lon.map_or(0, |lon| (lon / 15.0).round() as i64);
    let local = at + chrono::Duration::hours(offset_hours);
    let hour = local.hour();
    (hour, hour < 6, matches!(local.weekday(), Weekday::Sat | Weekday::Sun))
}

/// Prior of the merchant risk rate: `(fraud + PRIOR_FRAUD) / (labels + PRIOR_LABELS)`.
const PRIOR_FRAUD: f64 = 1.0;
const PRIOR_LABELS: f64 = 50.0;

/// Builds the feature vector from a transaction and its raw windows. Pure: training,
/// replay and live scoring all go through here.
pub fn derive(tx: &Transaction, raw: &RawWindows) -> Features {
    use rust_decimal::prelude::ToPrimitive;
    let amount = tx.amount.to_f64().unwrap_or(0.0);
    let at = tx.event_time();
    let mean = |(count, sum): (u64, f64)| if count == 0 { 0.0 } else { sum / count as f64 };
    let [w5m, w1h, w24h, w7d] = raw.windows;
    // The 7-day window includes this transaction: history is the rest of it.
    let (prior_count, prior_sum) = (w7d.0.saturating_sub(1), w7d.1 - amount);
    let amount_ratio_7d =
        (prior_count > 0 && prior_sum > 0.0).then(|| amount / (prior_sum / prior_count as f64));
    let seconds_since_prev = raw.prev_ms.map(|p| (at.timestamp_millis() - p) as f64 / 1000.0);
    let here = tx.geo_lat.zip(tx.geo_lon).map(|(lat, lon)| Location { lat, lon });
    let distance_km = here.zip(raw.prev_location).map(|(a, b)| haversine_km(a, b));
    let speed_kmh = distance_km.zip(seconds_since_prev).map(|(km, secs)| km / (secs.max(60.0) / 3600.0));
    let (hour_of_day, night, weekend) = local_time(at, tx.geo_lon);
    let (labels, fraud) = raw.merchant_labels;
    Features {
        amount,
        tx_count_5m: w5m.0,
        tx_count_1h: w1h.0,
        tx_count_24h: w24h.0,
        tx_count_7d: w7d.0,
        amount_sum_5m: w5m.1,
        amount_sum_1h: w1h.1,
        amount_sum_24h: w24h.1,
        amount_sum_7d: w7d.1,
        amount_mean_5m: mean(w5m),
        amount_mean_1h: mean(w1h),
        amount_mean_24h: mean(w24h),
        amount_mean_7d: mean(w7d),
        amount_ratio_7d,
        seconds_since_prev,
        distance_km,
        speed_kmh,
        distinct_merchants_24h: raw.distinct_merchants_24h,
        new_merchant: raw.new_merchant,
        hour_of_day,
        night,
        weekend,
        merchant_tx_count_1h: raw.merchant_counts.0,
        merchant_tx_count_24h: raw.merchant_counts.1,
        merchant_labels: labels,
        merchant_fraud_labels: fraud,
        merchant_risk_rate: (fraud as f64 + PRIOR_FRAUD) / (labels as f64 + PRIOR_LABELS),
    }
}

/// Names of the model inputs, in the order of [`Features::vector`].
pub const MODEL_INPUTS: [&str; 19] = [
    "log_amount",
    "tx_count_5m",
    "tx_count_1h",
    "tx_count_24h",
    "tx_count_7d",
    "log_amount_sum_1h",
    "log_amount_sum_24h",
    "log_amount_ratio_7d",
    "log_seconds_since_prev",
    "log_distance_km",
    "log_speed_kmh",
    "distinct_merchants_24h",
    "new_merchant",
    "hour_of_day",
    "night",
    "weekend",
    "merchant_tx_count_1h",
    "log_merchant_tx_count_24h",
    "merchant_risk_rate",
];

/// Width of the model input.
pub const MODEL_WIDTH: usize = MODEL_INPUTS.len();

impl Features {
    /// The numeric model input (see [`MODEL_INPUTS`]): heavy-tailed quantities on a log
    /// scale, absent history as its neutral value. Computed without allocating.
    pub fn vector(&self) -> [f64; MODEL_WIDTH] {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        let ln1p = |v: f64| v.max(0.0).ln_1p();
        [
            ln1p(self.amount),
            self.tx_count_5m as f64,
            self.tx_count_1h as f64,
            self.tx_count_24h as f64,
            self.tx_count_7d as f64,
            ln1p(self.amount_sum_1h),
            ln1p(self.amount_sum_24h),
            self.amount_ratio_7d.map_or(0.0, |r| r.max(1e-6).ln()),
            // No earlier transaction in 7 days reads as "7 days ago".
            ln1p(self.seconds_since_prev.unwrap_or(RETENTION_MS as f64 / 1000.0)),
            ln1p(self.distance_km.unwrap_or(0.0)),
            ln1p(self.speed_kmh.unwrap_or(0.0)),
            self.distinct_merchants_24h as f64,
            flag(self.new_merchant),
            f64::from(self.hour_of_day),
            flag(self.night),
            flag(self.weekend),
            self.merchant_tx_count_1h as f64,
            ln1p(self.merchant_tx_count_24h as f64),
            self.merchant_risk_rate,
        ]
    }
}

/// Updates and reads the windows of one Redis deployment.
#[derive(Clone)]
pub struct WindowStore {
    client: Client,
    record: Script,
    merchant: Script,
    label: Script,
    state: Script,
    prefix: String,
    settings: ScoringSettings,
    open_until: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for WindowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowStore").field("prefix", &self.prefix).finish()
    }
}

impl WindowStore {
    /// Windows stored under keys starting with `prefix`.
    pub fn new(client: Client, prefix: &str, settings: &ScoringSettings) -> Self {
        Self {
            client,
            record: Script::from_lua(format!("{WINDOW_FN_LUA}{RECORD_LUA}")),
            merchant: Script::from_lua(MERCHANT_LUA),
            label: Script::from_lua(LABEL_LUA),
            state: Script::from_lua(format!("{WINDOW_FN_LUA}{STATE_LUA}")),
            prefix: prefix.to_owned(),
            settings: settings.clone(),
            open_until: Arc::new(Mutex::new(None)),
        }
    }

    /// The keys of one account.
    pub fn account_keys(&self, account_id: &str) -> Vec<String> {
        ["tx", "amt", "last", "geo", "mer"]
            .iter()
            .map(|k| format!("{}acct:{{{account_id}}}:{k}", self.prefix))
            .collect()
    }

    /// The keys of one merchant.
    pub fn merchant_keys(&self, merchant_id: &str) -> Vec<String> {
        ["tx", "lab", "fraud"].iter().map(|k| format!("{}merch:{{{merchant_id}}}:{k}", self.prefix)).collect()
    }

    /// Records `tx` in its account's and merchant's windows and returns the features at its
    /// event time, reading the account's whole window from Redis (no in-memory copy: training
    /// and replay). Fails fast while the circuit breaker is open after a Redis failure.
    pub async fn observe(&self, tx: &Transaction) -> Result<Features, WindowError> {
        self.observe_with(&mut AccountWindow::default(), tx).await
    }

    /// [`Self::observe`] for an account actor holding `window`: when the copy is current,
    /// Redis only records the transaction and the features come from memory; otherwise
    /// the copy is reloaded in the same round trip. A failure leaves the copy cold.
    pub async fn observe_with(
        &self,
        window: &mut AccountWindow,
        tx: &Transaction,
    ) -> Result<Features, WindowError> {
        let open = self
            .open_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|t| Instant::now() < t);
        if open {
            // Nothing was written, so the copy still matches Redis: keep it.
            return Err(WindowError::CircuitOpen);
        }
        let result = self.record_in_redis(window, tx).await;
        let mut open_until = self.open_until.lock().unwrap_or_else(PoisonError::into_inner);
        *open_until = result.is_err().then(|| Instant::now() + BREAKER_COOL_DOWN);
        if result.is_err() {
            window.invalidate();
        }
        Ok(derive(tx, &result?))
    }

    async fn record_in_redis(
        &self,
        window: &mut AccountWindow,
        tx: &Transaction,
    ) -> Result<RawWindows, RedisError> {
        let entry = Entry::of(tx);
        let ts = entry.at_ms;
        let args = vec![
            ts.to_string(),
            tx.transaction_id.clone(),
            tx.amount.to_string(),
            RETENTION_MS.to_string(),
            tx.geo_lat.map(|v| v.to_string()).unwrap_or_default(),
            tx.geo_lon.map(|v| v.to_string()).unwrap_or_default(),
            tx.merchant_id.clone(),
            window.version().map(|v| v.to_string()).unwrap_or_default(),
        ];
        let cutoff = ts - self.settings.label_delay.as_millis() as i64;
        let merchant_args = vec![
            ts.to_string(),
            tx.transaction_id.clone(),
            MERCHANT_RETENTION_MS.to_string(),
            cutoff.to_string(),
            (cutoff - self.settings.label_window.as_millis() as i64).to_string(),
        ];
        // Two slots (account, merchant) cannot share one script in Redis Cluster; issued
        // together, the client pipelines them on its connection.
        let (account, merchant) = tokio::join!(
            self.record.evalsha_with_reload::<Vec<String>, _, _>(
                &self.client,
                self.account_keys(&tx.account_id),
                args
            ),
            self.merchant.evalsha_with_reload::<Vec<i64>, _, _>(
                &self.client,
                self.merchant_keys(&tx.merchant_id),
                merchant_args
            ),
        );
        let (out, merchant) = (account?, merchant?);
        let version = out.first().and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
            RedisError::new(fred::error::ErrorKind::Parse, "window script answered without a version")
        })?;
        if out.len() == 1 && window.version() == version.checked_sub(1) {
            window.apply(&entry, version);
        } else {
            window.load(parse_entries(&out[1..]), version);
        }
        let m = |i: usize| merchant.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(RawWindows {
            merchant_counts: (m(0), m(1)),
            merchant_labels: (m(2), m(3)),
            ..window.windows_at(ts, &entry.id, &entry.merchant)
        })
    }

    /// Records that the transaction `transaction_id` at `merchant_id` was labelled at
    /// `labeled_at`; from `labeled_at + MERCHANT_LABEL_DELAY_SECS` on it counts in the
    /// merchant's risk rate. Idempotent: the first label of a transaction wins.
    pub async fn record_label(
        &self,
        merchant_id: &str,
        transaction_id: &str,
        fraud: bool,
        labeled_at: DateTime<Utc>,
    ) -> Result<(), RedisError> {
        self.add_label(merchant_id, transaction_id, fraud, labeled_at, true).await
    }

    /// Like [`Self::record_label`] but never trims older labels: for rebuilding history
    /// (training, replay) where labels arrive far ahead of the transactions being replayed.
    pub async fn record_past_label(
        &self,
        merchant_id: &str,
        transaction_id: &str,
        fraud: bool,
        labeled_at: DateTime<Utc>,
    ) -> Result<(), RedisError> {
        self.add_label(merchant_id, transaction_id, fraud, labeled_at, false).await
    }

    async fn add_label(
        &self,
        merchant_id: &str,
        transaction_id: &str,
        fraud: bool,
        labeled_at: DateTime<Utc>,
        trim: bool,
    ) -> Result<(), RedisError> {
        let at = labeled_at.timestamp_millis();
        let keep = (self.settings.label_window + self.settings.label_delay).as_millis() as i64;
        let args = vec![
            at.to_string(),
            transaction_id.to_owned(),
            if fraud { "1" } else { "0" }.to_owned(),
            if trim { (at - keep).to_string() } else { String::new() },
            keep.to_string(),
        ];
        let keys = self.merchant_keys(merchant_id)[1..].to_vec();
        let _: i64 = self.label.evalsha_with_reload(&self.client, keys, args).await?;
        Ok(())
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

/// The entries of a window as [`RECORD_LUA`] lists them (id, time, amount, merchant,
/// location); a malformed group is skipped.
fn parse_entries(flat: &[String]) -> Vec<Entry> {
    flat.chunks_exact(5)
        .filter_map(|e| {
            let location = e[4]
                .split_once(',')
                .and_then(|(lat, lon)| Some(Location { lat: lat.parse().ok()?, lon: lon.parse().ok()? }));
            Some(Entry {
                id: e[0].as_str().into(),
                at_ms: e[1].parse::<f64>().ok()? as i64,
                amount: account_window::amount_of(&e[2]),
                merchant: e[3].as_str().into(),
                location,
            })
        })
        .collect()
}

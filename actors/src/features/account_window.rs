//! An account's window entries held in memory by its actor, so features are computed here
//! instead of by scanning Redis on every transaction.
//!
//! Redis stays the durable copy (it survives the worker, and another node takes over a
//! shard from it). Every transaction is still written there first; the write answers with
//! the account's version (a counter bumped by every write) and, only when that version is
//! not the one this copy last saw, with the whole window. So a warm actor pays one small
//! write per transaction, and a copy that is cold (new actor, restart, eviction) or stale
//! (another node wrote in between, keys expired) is replaced by what Redis holds. Features
//! therefore always describe exactly the entries Redis has, whichever path produced them.
//!
//! The computation mirrors what the windows mean (see the module above): windows `(at −
//! len, at]` by event time, the previous event strictly before `at`, entries older than the
//! retention trimmed relative to the transaction being recorded, a redelivered id replacing
//! its entry instead of adding one.

use std::collections::HashSet;

use super::{Location, RETENTION_MS, RawWindows, WINDOWS};
use crate::transaction::Transaction;

/// One transaction of the account, as the windows need it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Event time, ms since the epoch.
    pub at_ms: i64,
    /// The transaction id (the sorted set's member).
    pub id: Box<str>,
    /// Amount as a float, parsed from the same decimal string Redis stores.
    pub amount: f64,
    /// Whom it paid.
    pub merchant: Box<str>,
    /// Where, when known.
    pub location: Option<Location>,
}

impl Entry {
    /// The entry a transaction makes.
    pub fn of(tx: &Transaction) -> Self {
        Self {
            at_ms: tx.event_time().timestamp_millis(),
            id: tx.transaction_id.as_str().into(),
            amount: amount_of(&tx.amount.to_string()),
            merchant: tx.merchant_id.as_str().into(),
            location: tx.geo_lat.zip(tx.geo_lon).map(|(lat, lon)| Location { lat, lon }),
        }
    }

    fn key(&self) -> (i64, &str) {
        (self.at_ms, &self.id)
    }
}

/// A decimal amount string as the float the window sums use (what Redis' `tonumber` gives).
pub(crate) fn amount_of(decimal: &str) -> f64 {
    decimal.parse().unwrap_or(0.0)
}

/// A window sum as Redis reports it: rounded to 4 decimals.
fn round4(sum: f64) -> f64 {
    format!("{sum:.4}").parse().unwrap_or(sum)
}

/// The in-memory copy of one account's windows.
#[derive(Debug, Clone, Default)]
pub struct AccountWindow {
    /// Sorted by (event time, id): the order Redis returns the sorted set in.
    entries: Vec<Entry>,
    /// The Redis version this copy matches; `None` while cold.
    version: Option<u64>,
}

impl AccountWindow {
    /// The Redis version this copy is known to match, if it is warm.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets the copy (after a failed write nobody knows what Redis holds).
    pub fn invalidate(&mut self) {
        self.entries = Vec::new();
        self.version = None;
    }

    /// Replaces the copy with what Redis holds at `version` (the transaction being recorded
    /// is already among `entries`, and the trim already happened there).
    pub fn load(&mut self, mut entries: Vec<Entry>, version: u64) {
        entries.sort_by(|a, b| a.key().cmp(&b.key()));
        self.entries = entries;
        self.version = Some(version);
    }

    /// Applies the write Redis just acknowledged as `version` to the warm copy: upsert the
    /// entry, trim what fell out of the retention.
    pub fn apply(&mut self, entry: &Entry, version: u64) {
        self.record(entry.clone());
        self.version = Some(version);
    }

    /// Records `entry` in memory only and answers the account's part of its raw windows:
    /// what [`Self::apply`] then [`Self::windows_at`] do, minus the version (benchmarks and
    /// tests of the pure computation).
    pub fn observe(&mut self, entry: Entry) -> RawWindows {
        let (at, id, merchant) = (entry.at_ms, entry.id.clone(), entry.merchant.clone());
        self.record(entry);
        self.windows_at(at, &id, &merchant)
    }

    fn record(&mut self, mut entry: Entry) {
        if let Some(i) = self.entries.iter().position(|e| e.id == entry.id) {
            // Redis keeps the old location when the repeat has none (HSET only with one).
            let old = self.entries.remove(i);
            entry.location = entry.location.or(old.location);
        }
        let at = self.entries.partition_point(|e| e.key() < entry.key());
        let cutoff = entry.at_ms - RETENTION_MS;
        self.entries.insert(at, entry);
        self.entries.retain(|e| e.at_ms >= cutoff);
    }

    /// The account's part of the raw windows of the transaction `id` at `at_ms` paying
    /// `merchant` (merchant counts and labels are left at zero: they live in Redis).
    pub fn windows_at(&self, at_ms: i64, id: &str, merchant: &str) -> RawWindows {
        let upto = self.entries.partition_point(|e| e.at_ms <= at_ms);
        let since = |len: i64| self.entries.partition_point(|e| e.at_ms <= at_ms - len);
        let mut windows = [(0, 0.0); 4];
        for (w, (_, len)) in windows.iter_mut().zip(WINDOWS) {
            let part = &self.entries[since(len).min(upto)..upto];
            *w = (part.len() as u64, round4(part.iter().map(|e| e.amount).sum()));
        }
        let before = self.entries.partition_point(|e| e.at_ms < at_ms);
        let prev = before.checked_sub(1).map(|i| &self.entries[i]);
        let day = &self.entries[since(24 * 60 * 60 * 1000).min(upto)..upto];
        let distinct: HashSet<&str> = day.iter().map(|e| &*e.merchant).collect();
        let week = &self.entries[since(RETENTION_MS).min(upto)..upto];
        let seen = week.iter().any(|e| &*e.id != id && &*e.merchant == merchant);
        RawWindows {
            windows,
            prev_ms: prev.map(|p| p.at_ms),
            prev_location: prev.and_then(|p| p.location),
            distinct_merchants_24h: distinct.len() as u64,
            new_merchant: !seen,
            ..RawWindows::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1000;

    fn entry(id: &str, at_ms: i64, amount: f64, merchant: &str) -> Entry {
        Entry { at_ms, id: id.into(), amount, merchant: merchant.into(), location: None }
    }

    #[test]
    fn windows_count_and_sum_by_event_time() {
        let mut w = AccountWindow::default();
        let base = 1_000 * RETENTION_MS;
        w.observe(entry("a", base, 10.0, "m1"));
        w.observe(entry("b", base + 2 * MIN, 20.5, "m2"));
        let raw = w.observe(entry("c", base + 10 * MIN, 5.25, "m1"));
        // 5 min: only c; 1 h: all three.
        assert_eq!(raw.windows[0], (1, 5.25));
        assert_eq!(raw.windows[1], (3, 35.75));
        assert_eq!(raw.prev_ms, Some(base + 2 * MIN));
        assert_eq!(raw.distinct_merchants_24h, 2);
        assert!(!raw.new_merchant, "m1 was paid before");
    }

    #[test]
    fn a_redelivery_replaces_its_entry_and_a_late_one_sees_only_the_past() {
        let mut w = AccountWindow::default();
        let base = 1_000 * RETENTION_MS;
        w.observe(entry("a", base, 10.0, "m1"));
        w.observe(entry("b", base + 30 * MIN, 20.0, "m2"));
        let again = w.observe(entry("b", base + 30 * MIN, 20.0, "m2"));
        assert_eq!(again.windows[1], (2, 30.0), "b counted once");
        let late = w.observe(entry("l", base + 10 * MIN, 1.0, "m3"));
        assert_eq!(late.windows[1], (2, 11.0), "the late one sees a, not b");
        assert_eq!(late.prev_ms, Some(base));
        assert!(late.new_merchant);
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn entries_beyond_the_retention_are_trimmed() {
        let mut w = AccountWindow::default();
        let base = 1_000 * RETENTION_MS;
        w.observe(entry("old", base, 10.0, "m1"));
        let raw = w.observe(entry("new", base + RETENTION_MS + 1, 1.0, "m1"));
        assert_eq!(w.len(), 1);
        assert_eq!(raw.windows[3], (1, 1.0));
        assert!(raw.new_merchant, "the old payment to m1 is gone");
        assert_eq!(raw.prev_ms, None);
    }

    #[test]
    fn sums_are_rounded_like_redis_reports_them() {
        let mut w = AccountWindow::default();
        w.observe(entry("a", 0, 0.1, "m"));
        let raw = w.observe(entry("b", 1, 0.2, "m"));
        assert_eq!(raw.windows[0].1, 0.3, "0.1 + 0.2 is reported as 0.3000");
    }

    #[test]
    fn a_loaded_copy_is_sorted_and_versioned_and_invalidation_makes_it_cold() {
        let mut w = AccountWindow::default();
        w.load(vec![entry("b", 5, 1.0, "m"), entry("a", 5, 2.0, "m"), entry("c", 1, 3.0, "m")], 7);
        assert_eq!(w.version(), Some(7));
        let ids: Vec<&str> = w.entries.iter().map(|e| &*e.id).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        w.invalidate();
        assert_eq!((w.version(), w.is_empty()), (None, true));
    }
}

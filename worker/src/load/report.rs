//! What a run measured: latency histograms, counts, and the report as a table and as JSON
//! (field names in the [`crate::load`] module doc).

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram tells apart: one hour (larger values count as one hour).
const MAX_TRACKED_MICROS: u64 = 3_600_000_000;

/// A latency histogram: microsecond resolution, 3 significant digits, up to one hour.
#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts (low 1, high ≥ 2 × low, 3 digits).
        let histogram = Histogram::new_with_bounds(1, MAX_TRACKED_MICROS, 3)
            .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!("3 digits is valid")));
        Self(histogram)
    }

    /// Records one latency (clamped to [1 µs, 1 h]).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.clamp(1, MAX_TRACKED_MICROS));
    }

    /// Count and percentiles, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let h = &self.0;
        if h.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Count and percentiles of one latency, in milliseconds (all 0 when nothing was recorded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    /// Values recorded.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest value.
    pub max_ms: f64,
}

/// Every latency a run reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latencies {
    /// Scheduled send → `202` response.
    pub post_202: LatencySummary,
    /// Scheduled send → `4xx` response (`429` included).
    pub post_4xx: LatencySummary,
    /// Scheduled send → `5xx` response.
    pub post_5xx: LatencySummary,
    /// Scheduled send → transport error or timeout.
    pub post_failed: LatencySummary,
    /// Scheduled send → `transactions.processed_at` of the committed decision.
    pub decision: LatencySummary,
    /// Scheduled send → the alert arrived on the WebSocket.
    pub alert: LatencySummary,
}

/// Requests that were not accepted, by kind; the kinds are disjoint and add up to `total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Errors {
    /// Every request not accepted: the sum of the other counters (not `by_status`).
    pub total: u64,
    /// Not sent at all: too many requests were already in flight.
    pub not_sent: u64,
    /// Answered `4xx` (`429` included).
    pub status_4xx: u64,
    /// Of those, `429 Too Many Requests`.
    pub status_429: u64,
    /// Answered `5xx`.
    pub status_5xx: u64,
    /// Answered with another status that is not `202`.
    pub status_other: u64,
    /// No answer within the client timeout.
    pub timeout: u64,
    /// Connection refused or reset, or another transport failure.
    pub transport: u64,
    /// Every status that was not `202`, by code.
    pub by_status: BTreeMap<String, u64>,
}

/// The outcome of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Prefix of this run's transaction ids (`<run_id>-<n>`).
    pub run_id: String,
    /// The api the run targeted.
    pub api: String,
    /// When request 0 was due (RFC 3339, UTC).
    pub started_at: String,
    /// Configured length of the send phase, seconds.
    pub duration_secs: f64,
    /// Configured accounts and merchants, and the fraction built to be HIGH risk.
    pub accounts: usize,
    /// Merchants in the pool.
    pub merchants: usize,
    /// Fraction of payments built to be HIGH risk.
    pub fraud_mix: f64,
    /// Requests per second asked for.
    pub offered_rate: f64,
    /// Requests the schedule held (`floor(rate × duration)`).
    pub scheduled: u64,
    /// Requests handed to the HTTP client (`scheduled − errors.not_sent`).
    pub sent: u64,
    /// Of those, built to be HIGH risk.
    pub sent_high_risk: u64,
    /// Requests per second actually dispatched.
    pub send_rate: f64,
    /// Requests answered `202`.
    pub accepted: u64,
    /// `202` answers per second of the send phase.
    pub accepted_rate: f64,
    /// Accepted transactions whose decision was committed (seen in PostgreSQL) by the end.
    pub decided: u64,
    /// Of those, committed by the scheduled end of the send phase.
    pub decided_during_send: u64,
    /// Decisions per second: `decided` over the time from the first due request to the
    /// last commit.
    pub decided_rate: f64,
    /// Decisions labelled HIGH (the ones that raise an alert).
    pub decided_high: u64,
    /// Accepted but not decided at the scheduled end of the send phase.
    pub backlog_at_send_end: u64,
    /// Accepted but still not decided after draining (0 when the pipeline caught up).
    pub backlog_after_drain: u64,
    /// Distinct alerts of this run received on the WebSocket.
    pub alerts_received: u64,
    /// Latest the scheduler dispatched a request after it was due, milliseconds.
    pub max_scheduler_lag_ms: f64,
    /// Seconds spent waiting for decisions and alerts after the send phase.
    pub drain_secs: f64,
    /// Requests not accepted, by kind.
    pub errors: Errors,
    /// Latency summaries, all measured from each request's scheduled send time.
    pub latency: Latencies,
    /// Processor time of the local processes over the run (`/proc`), else null.
    pub cpu: Option<super::cpu::CpuUse>,
    /// The worker's resident memory and live account actors (`--watch-worker`), else null.
    pub worker_memory: Option<super::memory::WorkerMemory>,
    /// How to read the numbers.
    pub notes: Vec<String>,
    /// Anything that makes the numbers less trustworthy (rate limit, poll failures, ...).
    pub warnings: Vec<String>,
}

impl Report {
    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The report as a human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let pct = |part: u64, whole: u64| if whole == 0 { 0.0 } else { 100.0 * part as f64 / whole as f64 };
        let _ = writeln!(
            out,
            "run {}  api {}  started {}  {} s, {} accounts, {} merchants, fraud mix {}",
            self.run_id,
            self.api,
            self.started_at,
            self.duration_secs,
            self.accounts,
            self.merchants,
            self.fraud_mix
        );
        let _ = writeln!(out);
        let rows: [(&str, String); 8] = [
            ("offered rate", format!("{:.1} tx/s ({} scheduled)", self.offered_rate, self.scheduled)),
            (
                "achieved send rate",
                format!(
                    "{:.1} tx/s ({} sent, {} built HIGH)",
                    self.send_rate, self.sent, self.sent_high_risk
                ),
            ),
            (
                "accepted (202)",
                format!(
                    "{:.1} tx/s ({} = {:.2} % of scheduled)",
                    self.accepted_rate,
                    self.accepted,
                    pct(self.accepted, self.scheduled)
                ),
            ),
            (
                "decided",
                format!(
                    "{:.1} tx/s ({} in all, {} during the send phase, {} HIGH)",
                    self.decided_rate, self.decided, self.decided_during_send, self.decided_high
                ),
            ),
            (
                "backlog",
                format!(
                    "{} at the end of sending, {} after {:.1} s drain",
                    self.backlog_at_send_end, self.backlog_after_drain, self.drain_secs
                ),
            ),
            ("alerts received", format!("{} (HIGH decisions: {})", self.alerts_received, self.decided_high)),
            ("max scheduler lag", format!("{:.3} ms", self.max_scheduler_lag_ms)),
            ("errors", self.errors_line()),
        ];
        for (name, value) in &rows {
            let _ = writeln!(out, "{name:<20} {value}");
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency from scheduled send (ms)", "count", "p50", "p95", "p99", "p99.9", "max"
        );
        let l = &self.latency;
        let lines = [
            ("POST → 202", &l.post_202),
            ("POST → 4xx", &l.post_4xx),
            ("POST → 5xx", &l.post_5xx),
            ("POST → transport error/timeout", &l.post_failed),
            ("→ decision committed", &l.decision),
            ("→ alert on WebSocket", &l.alert),
        ];
        for (name, s) in lines {
            if s.count == 0 && name.starts_with("POST → ") && name != "POST → 202" {
                continue;
            }
            let _ = writeln!(
                out,
                "{name:<34} {:>8} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                s.count, s.p50_ms, s.p95_ms, s.p99_ms, s.p999_ms, s.max_ms
            );
        }
        if let Some(cpu) = &self.cpu {
            let _ = writeln!(out);
            for line in cpu.lines() {
                let _ = writeln!(out, "{line}");
            }
        }
        if let Some(m) = &self.worker_memory {
            let _ = writeln!(out);
            let _ = writeln!(
                out,
                "worker memory ({})  {} samples ({} failed)\n  resident MiB: start {:.1}, peak {:.1}, end {:.1}; \
                 drift over the second half {:+.2} MiB/min\n  account actors: peak {}, end {}; parked windows: \
                 peak {}; warm accounts (both): peak {}, {:.2} KiB resident each",
                m.url,
                m.samples,
                m.failed_samples,
                m.rss_start_mib,
                m.rss_peak_mib,
                m.rss_end_mib,
                m.drift_mib_per_min,
                m.account_actors_peak,
                m.account_actors_end,
                m.parked_windows_peak,
                m.warm_accounts_peak,
                m.kib_per_warm_account
            );
        }
        for note in &self.notes {
            let _ = writeln!(out, "note: {note}");
        }
        for warning in &self.warnings {
            let _ = writeln!(out, "warning: {warning}");
        }
        out
    }

    fn errors_line(&self) -> String {
        let e = &self.errors;
        if e.total == 0 {
            return "none".to_owned();
        }
        let mut parts = Vec::new();
        for (name, n) in [
            ("not sent (in-flight cap)", e.not_sent),
            ("4xx", e.status_4xx),
            ("of which 429", e.status_429),
            ("5xx", e.status_5xx),
            ("other status", e.status_other),
            ("timeout", e.timeout),
            ("transport", e.transport),
        ] {
            if n > 0 {
                parts.push(format!("{name} {n}"));
            }
        }
        let statuses: Vec<String> = e.by_status.iter().map(|(code, n)| format!("{code}×{n}")).collect();
        if statuses.is_empty() {
            format!("{}: {}", e.total, parts.join(", "))
        } else {
            format!("{}: {} [{}]", e.total, parts.join(", "), statuses.join(" "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample() -> Report {
        let mut post = Latency::new();
        for ms in 1..=1000 {
            post.record(Duration::from_millis(ms));
        }
        Report {
            run_id: "load-1".into(),
            api: "http://127.0.0.1:8080".into(),
            started_at: "2026-11-22T10:00:00Z".into(),
            duration_secs: 2.0,
            accounts: 10,
            merchants: 5,
            fraud_mix: 0.2,
            offered_rate: 50.0,
            scheduled: 100,
            sent: 99,
            sent_high_risk: 20,
            send_rate: 49.5,
            accepted: 97,
            accepted_rate: 48.5,
            decided: 97,
            decided_during_send: 90,
            decided_rate: 45.0,
            decided_high: 21,
            backlog_at_send_end: 7,
            backlog_after_drain: 0,
            alerts_received: 21,
            max_scheduler_lag_ms: 0.4,
            drain_secs: 0.5,
            errors: Errors {
                total: 3,
                not_sent: 1,
                status_4xx: 1,
                status_429: 1,
                status_5xx: 1,
                by_status: [("429".to_owned(), 1), ("503".to_owned(), 1)].into(),
                ..Errors::default()
            },
            latency: Latencies { post_202: post.summary(), ..Latencies::default() },
            cpu: None,
            worker_memory: None,
            notes: vec!["a note".into()],
            warnings: vec![],
        }
    }

    #[test]
    fn load_histogram_percentiles() {
        let s = sample().latency.post_202;
        assert_eq!(s.count, 1000);
        assert!((s.p50_ms - 500.0).abs() < 1.0, "{s:?}");
        assert!((s.p99_ms - 990.0).abs() < 1.0, "{s:?}");
        assert!((s.max_ms - 1000.0).abs() < 1.0, "{s:?}");
        assert_eq!(Latency::new().summary(), LatencySummary::default());
        let mut huge = Latency::new();
        huge.record(Duration::from_secs(10_000));
        huge.record(Duration::ZERO);
        assert_eq!(huge.summary().count, 2);
    }

    #[test]
    fn load_json_report_has_every_field() {
        let value: serde_json::Value =
            serde_json::from_str(&sample().to_json()).unwrap_or_else(|e| panic!("{e}"));
        for field in [
            "run_id",
            "api",
            "started_at",
            "duration_secs",
            "accounts",
            "merchants",
            "fraud_mix",
            "offered_rate",
            "scheduled",
            "sent",
            "sent_high_risk",
            "send_rate",
            "accepted",
            "accepted_rate",
            "decided",
            "decided_during_send",
            "decided_rate",
            "decided_high",
            "backlog_at_send_end",
            "backlog_after_drain",
            "alerts_received",
            "max_scheduler_lag_ms",
            "drain_secs",
            "errors",
            "latency",
            "cpu",
            "worker_memory",
            "notes",
            "warnings",
        ] {
            assert!(value.get(field).is_some(), "{field} missing");
        }
        for field in [
            "total",
            "not_sent",
            "status_4xx",
            "status_429",
            "status_5xx",
            "status_other",
            "timeout",
            "transport",
        ] {
            assert!(value["errors"][field].is_u64(), "errors.{field} missing");
        }
        assert_eq!(value["errors"]["by_status"]["503"], 1);
        for kind in ["post_202", "post_4xx", "post_5xx", "post_failed", "decision", "alert"] {
            for field in ["count", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "max_ms"] {
                assert!(value["latency"][kind][field].is_number(), "latency.{kind}.{field} missing");
            }
        }
    }

    #[test]
    fn load_table_shows_rates_errors_and_percentiles() {
        let table = sample().table();
        for needle in [
            "offered rate",
            "50.0 tx/s",
            "achieved send rate",
            "accepted (202)",
            "decided",
            "backlog",
            "max scheduler lag",
            "not sent (in-flight cap) 1",
            "503×1",
            "POST → 202",
            "→ decision committed",
            "→ alert on WebSocket",
            "p99.9",
            "note: a note",
        ] {
            assert!(table.contains(needle), "{needle:?} missing from\n{table}");
        }
        // Error classes with no requests stay out of the latency table.
        assert!(!table.contains("POST → 5xx"), "{table}");
    }
}

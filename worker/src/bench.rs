//! # Saturation benchmark (`fraudsense-bench`, `make bench`)
//!
//! Runs the standard scenario of the load generator ([`crate::load::run`]) against the
//! local stack at a rising offered rate until the pipeline saturates, and measures in the
//! same run the raw ceiling of the broker the pipeline sits on, so the result reads as a
//! ratio instead of an absolute number that depends on the machine.
//!
//! ## Steps
//!
//! The offered rates are `start, start + step, …` (or `start, start × factor, …`) up to
//! `max` ([`StepPlan::rates`]). The standard scenario: 100,000 accounts and 100,000
//! merchants, 1 % of payments built to be HIGH risk, and every step on accounts no step and
//! no earlier run used (an account base derived from the clock), so no step inherits the
//! windows and velocity of the one before. Each step is one open-loop run of `step_duration` seconds
//! followed by the load generator's drain; before the next step starts, the shard queues
//! must be empty (bounded wait, [`QUEUE_DRAIN_TIMEOUT`]). Stepping stops at the first step
//! that saturates ([`Thresholds::saturation`]):
//!
//! - errors above 0.1 % of the scheduled requests, or
//! - more than 5 % of the sent requests still undecided at the scheduled end of sending
//!   (a request the api answered late counts: a queueing api is saturated too), or
//! - the decided rate during the send phase below 95 % of the offered rate.
//!
//! The sustained rate is the offered rate of the highest step before that.
//!
//! ## Raw ceiling
//!
//! [`ceiling::measure`]: on the same broker, a temporary durable quorum queue with a unique
//! name (deleted afterwards, also when the measurement fails); persistent messages of the
//! size of one serialized `transaction.created` event are published with publisher confirms
//! (at most [`ceiling::CONFIRM_WINDOW`] outstanding) on one connection while another
//! connection consumes them with manual acks (prefetch [`ceiling::PREFETCH`]). The ceiling
//! is the lower of the publish and consume rates.

pub mod ceiling;
pub mod floor;
pub mod queues;

use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Report;

pub use ceiling::Ceiling;

/// A suffix no other run shares: this process's id and the clock's low 48 bits of
/// nanoseconds in hex, joined by `separator` (names on the broker, a schema in PostgreSQL).
fn run_suffix(separator: char) -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{}{separator}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// Longest wait between steps for the shard queues to empty.
pub const QUEUE_DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Most steps one run may plan.
pub const MAX_STEPS: usize = 200;

/// How the offered rate rises from one step to the next.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Increment {
    /// Add this many tx/s.
    Add(f64),
    /// Multiply by this factor (> 1).
    Factor(f64),
}

/// The offered rates to try.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepPlan {
    /// First offered rate, tx/s.
    pub start: f64,
    /// How the rate rises.
    pub increment: Increment,
    /// Highest offered rate, tx/s.
    pub max: f64,
}

impl StepPlan {
    /// The offered rates in order: from `start`, rising by the increment, none above `max`
    /// (a rate within 1e-6 of `max` counts as `max`). Empty when the plan is invalid
    /// ([`StepPlan::problem`]).
    pub fn rates(&self) -> Vec<f64> {
        if self.problem().is_some() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut rate = self.start;
        while rate <= self.max + 1e-6 && out.len() < MAX_STEPS {
            out.push(rate.min(self.max));
            rate = match self.increment {
                Increment::Add(step) => self.start + step * out.len() as f64,
                Increment::Factor(f) => rate * f,
            };
        }
        out
    }

    /// What is wrong with the plan, if anything.
    pub fn problem(&self) -> Option<String> {
        let max_rate = crate::load::MAX_RATE;
        if !(self.start.is_finite() && self.start > 0.0 && self.start <= max_rate) {
            return Some(format!("--start-rate {} is not between 0 and {max_rate}", self.start));
        }
        if !(self.max.is_finite() && self.max >= self.start && self.max <= max_rate) {
            return Some(format!("--max-rate {} is not between --start-rate and {max_rate}", self.max));
        }
        match self.increment {
            Increment::Add(step) if !(step.is_finite() && step > 0.0) => {
                Some(format!("--step {step} must be positive"))
            }
            Increment::Factor(f) if !(f.is_finite() && f > 1.0) => {
                Some(format!("--step-factor {f} must be greater than 1"))
            }
            Increment::Add(step) if (self.max - self.start) / step >= MAX_STEPS as f64 => {
                Some(format!("more than {MAX_STEPS} steps; use a larger --step"))
            }
            _ => None,
        }
    }
}

/// When a step counts as saturated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    /// Largest acceptable fraction of scheduled requests that failed.
    pub max_error_fraction: f64,
    /// Largest acceptable fraction of sent requests still undecided when sending ended.
    pub max_backlog_fraction: f64,
    /// Smallest acceptable decided rate during the send phase, as a fraction of offered.
    pub min_decided_fraction: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { max_error_fraction: 0.001, max_backlog_fraction: 0.05, min_decided_fraction: 0.95 }
    }
}

impl Thresholds {
    /// Why `step` saturated the system; empty when it did not.
    pub fn saturation(&self, step: &StepResult) -> Vec<String> {
        let mut why = Vec::new();
        let errors = fraction(step.errors, step.scheduled);
        if errors > self.max_error_fraction {
            why.push(format!("errors {:.2} % > {:.2} %", 100.0 * errors, 100.0 * self.max_error_fraction));
        }
        let backlog = fraction(step.backlog_at_send_end, step.sent);
        if backlog > self.max_backlog_fraction {
            why.push(format!(
                "backlog at send end {:.1} % of sent > {:.1} %",
                100.0 * backlog,
                100.0 * self.max_backlog_fraction
            ));
        }
        if step.decided_rate_during_send < self.min_decided_fraction * step.offered_rate {
            why.push(format!(
                "decided {:.0} tx/s < {:.0} % of offered",
                step.decided_rate_during_send,
                100.0 * self.min_decided_fraction
            ));
        }
        why
    }
}

fn fraction(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

/// What one step measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StepResult {
    /// The load generator's run id.
    pub run_id: String,
    /// Requests per second asked for.
    pub offered_rate: f64,
    /// Requests in the schedule.
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// `202` answers per second of the send phase.
    pub accepted_rate: f64,
    /// Decisions committed during the send phase, per second of it.
    pub decided_rate_during_send: f64,
    /// Accepted but undecided when sending ended.
    pub backlog_at_send_end: u64,
    /// Accepted but undecided after the drain.
    pub backlog_after_drain: u64,
    /// Failed requests (every class, including not sent).
    pub errors: u64,
    /// POST → 202, 99th percentile.
    pub post_p99_ms: f64,
    /// Scheduled send → decision committed, 99th percentile.
    pub decision_p99_ms: f64,
    /// Seconds the load generator's drain took.
    pub drain_secs: f64,
    /// Processor time of every local process of the pipeline and of the generator, ms per
    /// decided transaction (`null` without `/proc`).
    pub cpu_ms_per_tx: Option<f64>,
    /// The same as a share of the machine over the step, percent.
    pub machine_busy_pct: Option<f64>,
    /// Why the step saturated; empty when it did not.
    pub saturated_by: Vec<String>,
}

impl StepResult {
    /// The step's numbers from a load generator report (not yet judged).
    pub fn from_report(report: &Report) -> Self {
        let send_secs = report.duration_secs.max(1e-9);
        Self {
            run_id: report.run_id.clone(),
            offered_rate: report.offered_rate,
            scheduled: report.scheduled,
            sent: report.sent,
            accepted_rate: report.accepted_rate,
            decided_rate_during_send: report.decided_during_send as f64 / send_secs,
            backlog_at_send_end: report.backlog_at_send_end,
            backlog_after_drain: report.backlog_after_drain,
            errors: report.errors.total,
            post_p99_ms: report.latency.post_202.p99_ms,
            decision_p99_ms: report.latency.decision.p99_ms,
            drain_secs: report.drain_secs,
            cpu_ms_per_tx: report.cpu.as_ref().map(|c| c.total_ms_per_tx),
            machine_busy_pct: report.cpu.as_ref().map(|c| c.machine_busy_pct),
            saturated_by: Vec::new(),
        }
    }

    /// Whether the step saturated the system.
    pub fn saturated(&self) -> bool {
        !self.saturated_by.is_empty()
    }
}

/// The highest offered rate among the steps before the first saturated one (`None` when
/// the first step already saturated or nothing ran).
pub fn sustained_rate(steps: &[StepResult]) -> Option<f64> {
    steps.iter().take_while(|s| !s.saturated()).map(|s| s.offered_rate).reduce(f64::max)
}

/// Everything one `fraudsense-bench` run measured (`--json` writes exactly this).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// The api benchmarked.
    pub api: String,
    /// When the run started (RFC 3339).
    pub started_at: String,
    /// Seconds of sending per step.
    pub step_duration_secs: u64,
    /// Accounts payments are drawn from.
    pub accounts: usize,
    /// The planned rates.
    pub plan: StepPlan,
    /// The saturation rule.
    pub thresholds: Thresholds,
    /// The steps that ran, in order (the last one saturated unless the plan ran out).
    pub steps: Vec<StepResult>,
    /// Highest non-saturated offered rate, tx/s.
    pub sustained_rate: Option<f64>,
    /// The broker's raw ceiling, if it was measured.
    pub ceiling: Option<Ceiling>,
    /// `sustained_rate / ceiling.end_to_end_rate`.
    pub ratio_to_ceiling: Option<f64>,
    /// What makes the numbers less trustworthy.
    pub warnings: Vec<String>,
}

impl BenchReport {
    /// Fills in the sustained rate and the ratio from the steps and the ceiling.
    pub fn finish(&mut self) {
        self.sustained_rate = sustained_rate(&self.steps);
        self.ratio_to_ceiling = match (self.sustained_rate, &self.ceiling) {
            (Some(rate), Some(c)) if c.end_to_end_rate > 0.0 => Some(rate / c.end_to_end_rate),
            _ => None,
        };
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The steps as a table, then the ceiling and the final line.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "api {}  started {}  {} s per step, {} accounts",
            self.api, self.started_at, self.step_duration_secs, self.accounts
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "| offered tx/s | accepted tx/s | decided tx/s (send) | backlog at send end | errors | POST p99 ms | decision p99 ms | CPU ms/tx (machine busy) | verdict |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---|");
        for s in &self.steps {
            let verdict =
                if s.saturated() { format!("SATURATED: {}", s.saturated_by.join("; ")) } else { "ok".into() };
            let _ = writeln!(
                out,
                "| {:.0} | {:.1} | {:.1} | {} ({:.1} %) | {} | {:.1} | {:.1} | {} | {} |",
                s.offered_rate,
                s.accepted_rate,
                s.decided_rate_during_send,
                s.backlog_at_send_end,
                100.0 * fraction(s.backlog_at_send_end, s.sent),
                s.errors,
                s.post_p99_ms,
                s.decision_p99_ms,
                match (s.cpu_ms_per_tx, s.machine_busy_pct) {
                    (Some(ms), Some(busy)) => format!("{ms:.3} ({busy:.0} %)"),
                    _ => "n/a".into(),
                },
                verdict
            );
        }
        let _ = writeln!(out);
        match &self.ceiling {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "raw ceiling: {} persistent messages of {} B on a quorum queue, confirms (window {}), manual acks (prefetch {}): publish {:.0} msg/s, consume {:.0} msg/s",
                    c.messages, c.body_bytes, c.confirm_window, c.prefetch, c.publish_rate, c.consume_rate
                );
            }
            None => {
                let _ = writeln!(out, "raw ceiling: not measured");
            }
        }
        let sustained = self
            .sustained_rate
            .map_or_else(|| "none (the first step saturated)".into(), |r| format!("{r:.0} tx/s"));
        let ceiling =
            self.ceiling.as_ref().map_or_else(|| "n/a".into(), |c| format!("{:.0} msg/s", c.end_to_end_rate));
        let ratio =
            self.ratio_to_ceiling.map_or_else(|| "n/a".into(), |r| format!("{r:.3} ({:.1} %)", 100.0 * r));
        let plan_ran_out = self.steps.last().is_some_and(|s| !s.saturated());
        let _ = writeln!(
            out,
            "sustained pipeline rate {sustained}{}  raw ceiling (msg/s) {ceiling}  ratio {ratio}",
            if plan_ran_out { " (at least: no step saturated)" } else { "" }
        );
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64) -> StepResult {
        StepResult {
            run_id: "bench-test".into(),
            offered_rate: offered,
            scheduled: (offered * 10.0) as u64,
            sent: (offered * 10.0) as u64,
            accepted_rate: offered,
            decided_rate_during_send: offered,
            backlog_at_send_end: 0,
            backlog_after_drain: 0,
            errors: 0,
            post_p99_ms: 5.0,
            decision_p99_ms: 20.0,
            drain_secs: 0.1,
            cpu_ms_per_tx: Some(1.0),
            machine_busy_pct: Some(50.0),
            saturated_by: Vec::new(),
        }
    }

    #[test]
    fn bench_additive_steps_stop_at_max() {
        let plan = StepPlan { start: 250.0, increment: Increment::Add(250.0), max: 1000.0 };
        assert_eq!(plan.rates(), vec![250.0, 500.0, 750.0, 1000.0]);
        let plan = StepPlan { start: 500.0, increment: Increment::Add(500.0), max: 1800.0 };
        assert_eq!(plan.rates(), vec![500.0, 1000.0, 1500.0]);
        let one = StepPlan { start: 300.0, increment: Increment::Add(100.0), max: 300.0 };
        assert_eq!(one.rates(), vec![300.0]);
        // No drift from repeated addition.
        let fine = StepPlan { start: 0.1, increment: Increment::Add(0.1), max: 1.0 };
        assert_eq!(fine.rates().len(), 10);
    }

    #[test]
    fn bench_factor_steps_stop_at_max() {
        let plan = StepPlan { start: 250.0, increment: Increment::Factor(2.0), max: 5000.0 };
        assert_eq!(plan.rates(), vec![250.0, 500.0, 1000.0, 2000.0, 4000.0]);
        let plan = StepPlan { start: 100.0, increment: Increment::Factor(1.5), max: 300.0 };
        assert_eq!(plan.rates(), vec![100.0, 150.0, 225.0]);
    }

    #[test]
    fn bench_invalid_plans_have_no_steps() {
        let bad = [
            StepPlan { start: 0.0, increment: Increment::Add(1.0), max: 10.0 },
            StepPlan { start: 10.0, increment: Increment::Add(1.0), max: 5.0 },
            StepPlan { start: 10.0, increment: Increment::Add(0.0), max: 50.0 },
            StepPlan { start: 10.0, increment: Increment::Add(f64::NAN), max: 50.0 },
            StepPlan { start: 10.0, increment: Increment::Factor(1.0), max: 50.0 },
            StepPlan { start: 1.0, increment: Increment::Add(1.0), max: 1000.0 },
            StepPlan { start: 1.0, increment: Increment::Add(1.0), max: 1e9 },
        ];
        for plan in bad {
            assert!(plan.problem().is_some(), "{plan:?}");
            assert!(plan.rates().is_empty(), "{plan:?}");
        }
        // Factor plans are capped by MAX_STEPS through growth; small factors are bounded too.
        let slow = StepPlan { start: 1.0, increment: Increment::Factor(1.000_001), max: 100_000.0 };
        assert_eq!(slow.rates().len(), MAX_STEPS);
    }

    #[test]
    fn bench_healthy_step_is_not_saturated() {
        let t = Thresholds::default();
        assert!(t.saturation(&step(1000.0)).is_empty());
        // At the limits exactly: still fine.
        let edge = StepResult {
            errors: 10,               // 0.1 % of 10,000
            backlog_at_send_end: 500, // 5 % of 10,000
            decided_rate_during_send: 950.0,
            ..step(1000.0)
        };
        assert!(t.saturation(&edge).is_empty(), "{:?}", t.saturation(&edge));
    }

    #[test]
    fn bench_each_rule_saturates_on_its_own() {
        let t = Thresholds::default();
        let errors = StepResult { errors: 11, ..step(1000.0) };
        let why = t.saturation(&errors);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("errors"), "{why:?}");

        let backlog = StepResult { backlog_at_send_end: 501, ..step(1000.0) };
        let why = t.saturation(&backlog);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("backlog"), "{why:?}");

        let slow = StepResult { decided_rate_during_send: 949.0, ..step(1000.0) };
        let why = t.saturation(&slow);
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(why[0].starts_with("decided"), "{why:?}");

        let all = StepResult {
            errors: 5000,
            backlog_at_send_end: 5000,
            decided_rate_during_send: 10.0,
            ..step(1000.0)
        };
        assert_eq!(t.saturation(&all).len(), 3);
        // Nothing sent at all: every request failed, nothing decided.
        let dead = StepResult { sent: 0, errors: 10_000, decided_rate_during_send: 0.0, ..step(1000.0) };
        assert_eq!(t.saturation(&dead).len(), 2);
    }

    #[test]
    fn bench_sustained_rate_is_the_last_step_before_saturation() {
        let sat = |s: StepResult| StepResult { saturated_by: vec!["x".into()], ..s };
        assert_eq!(sustained_rate(&[]), None);
        assert_eq!(sustained_rate(&[sat(step(250.0))]), None);
        assert_eq!(sustained_rate(&[step(250.0), step(500.0), sat(step(750.0))]), Some(500.0));
        assert_eq!(sustained_rate(&[step(250.0), step(500.0)]), Some(500.0));
        // Steps after a saturated one (should not happen) do not count.
        assert_eq!(sustained_rate(&[step(250.0), sat(step(500.0)), step(750.0)]), Some(250.0));
    }

    #[test]
    fn bench_report_ratio_and_table() {
        let mut report = BenchReport {
            api: "http://127.0.0.1:8080".into(),
            started_at: "2026-11-22T00:00:00.000Z".into(),
            step_duration_secs: 10,
            accounts: 100_000,
            plan: StepPlan { start: 500.0, increment: Increment::Add(500.0), max: 1500.0 },
            thresholds: Thresholds::default(),
            steps: vec![step(500.0), StepResult { saturated_by: vec!["errors".into()], ..step(1000.0) }],
            sustained_rate: None,
            ceiling: Some(Ceiling {
                queue_type: "quorum".into(),
                messages: 1000,
                body_bytes: 900,
                confirm_window: 1000,
                prefetch: 500,
                publish_rate: 20_000.0,
                consume_rate: 10_000.0,
                end_to_end_rate: 10_000.0,
                seconds: 0.1,
            }),
            ratio_to_ceiling: None,
            warnings: Vec::new(),
        };
        report.finish();
        assert_eq!(report.sustained_rate, Some(500.0));
        assert_eq!(report.ratio_to_ceiling, Some(0.05));
        let table = report.table();
        assert!(table.contains("SATURATED: errors"), "{table}");
        assert!(table.contains("sustained pipeline rate 500 tx/s"), "{table}");
        assert!(table.contains("ratio 0.050"), "{table}");
        assert!(report.to_json().contains("\"ratio_to_ceiling\": 0.05"));
    }
}

//! Every metric the binaries export: name, kind, help text, and the label sets registered
//! at start-up so each series exists (at zero) before its first event.
//!
//! [`METRICS`] is the one list: [`describe`] gives the recorder each metric's help text
//! and unit, and [`register`] touches every series whose label values are known in advance
//! (counters at zero; gauges by adding zero, so a value another part already set is kept),
//! so `rate()` and `absent()` work from the first scrape instead of from the first event.
//! Histograms are registered empty (zero buckets, sum and count); gauges read
//! from the broker appear with their first reading (one balancing round after start-up),
//! since a zero before it would be a false reading. The tests
//! below read the crates' sources and fail if a metric is emitted but not listed here, or
//! listed but no longer emitted.

use metrics::Unit;

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution, exported as buckets, sum and count.
    Histogram,
}

/// Which binary exports a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `fraudsense-api`.
    Api,
    /// `fraudsense-worker`.
    Worker,
    /// Both binaries.
    Both,
}

impl Binary {
    /// Whether a process that is `self` exports a metric of `metric`'s binary.
    pub fn exports(self, metric: Binary) -> bool {
        self == Binary::Both || metric == Binary::Both || self == metric
    }
}

/// The values one label takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Values {
    /// A fixed set, every one registered at start-up.
    Fixed(&'static [&'static str]),
    /// The shard indexes `0` … `AMQP_SHARDS - 1`. Only gauges read from the broker carry
    /// it, so its series appear with their first reading.
    Shards,
    /// Bounded but known only at run time (an HTTP route template, method or status):
    /// such a series appears on first use.
    Open,
}

/// One label of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    /// The label name.
    pub name: &'static str,
    /// Its values; never an account, transaction or other unbounded id.
    pub values: Values,
}

/// One metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricInfo {
    /// The Prometheus name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The `# HELP` text.
    pub help: &'static str,
    /// What one unit of the value is.
    pub unit: Unit,
    /// Which binary exports it.
    pub binary: Binary,
    /// Its labels, in the order the code attaches them.
    pub labels: &'static [Label],
    /// Whether zero is a true reading before the first event, so [`register`] creates its
    /// series at start-up: true for counters and for gauges counting things in this process;
    /// false for histograms (there is no zero observation) and for gauges measured elsewhere.
    pub zero_at_start: bool,
}

impl MetricInfo {
    /// Marks a gauge read from elsewhere (the management API): unknown, not zero, until
    /// its first reading, so it is not registered ahead.
    const fn measured(self) -> Self {
        Self { zero_at_start: false, ..self }
    }
}

/// Risk buckets (`RiskLabel::as_str`).
const RISK_LABELS: &[&str] = &["LOW", "MEDIUM", "HIGH"];
/// A boolean label.
const BOOLEAN: &[&str] = &["true", "false"];
/// The risk bucket of a decision.
const RISK_LABEL: Label = Label { name: "risk_label", values: Values::Fixed(RISK_LABELS) };
/// A shard index.
const SHARD: Label = Label { name: "shard", values: Values::Shards };
/// The HTTP method (`GET`, `POST`, … or `OTHER`).
const METHOD: Label = Label { name: "method", values: Values::Open };
/// The matched route template (e.g. `/transactions/{transaction_id}`) or `unmatched`.
const ROUTE: Label = Label { name: "route", values: Values::Open };

/// Shorthand for a table row.
const fn metric(
    name: &'static str,
    kind: Kind,
    binary: Binary,
    unit: Unit,
    labels: &'static [Label],
    help: &'static str,
) -> MetricInfo {
    MetricInfo { name, kind, help, unit, binary, labels, zero_at_start: true }
}

use Binary::{Api, Worker};
use Kind::{Counter, Gauge, Histogram};

/// Every metric either binary emits.
pub const METRICS: &[MetricInfo] = &[
    // The api: ingestion, HTTP, alert stream.
    metric(
        "transactions_ingested_total",
        Counter,
        Api,
        Unit::Count,
        &[Label {
            name: "outcome",
            values: Values::Fixed(&[
                "accepted",
                "replayed",
                "conflict",
                "rate_limited",
                "unavailable",
                "rejected",
            ]),
        }],
        "Submissions to POST /transactions by outcome: accepted (queued), replayed (idempotent repeat), \
         conflict, rate_limited, unavailable (not queued; retry) or rejected (invalid).",
    ),
    metric(
        "idempotency_backstop_batch_size",
        Histogram,
        Api,
        Unit::Count,
        &[],
        "Transaction ids looked up in PostgreSQL per idempotency-backstop query (one query serves \
         every request queued at the time).",
    ),
    metric(
        "amqp_publish_confirm_seconds",
        Histogram,
        Api,
        Unit::Seconds,
        &[],
        "Time from publishing an accepted transaction to the broker's publisher confirm.",
    ),
    metric(
        "http_requests_total",
        Counter,
        Api,
        Unit::Count,
        &[METHOD, ROUTE, Label { name: "status", values: Values::Open }],
        "HTTP requests answered, by method, matched route template (or unmatched) and status code, \
         including those shed or timed out with 503.",
    ),
    metric(
        "http_request_duration_seconds",
        Histogram,
        Api,
        Unit::Seconds,
        &[METHOD, ROUTE],
        "Time to answer an HTTP request, by method and matched route template.",
    ),
    metric(
        "auth_refusals_total",
        Counter,
        Api,
        Unit::Count,
        &[Label {
            name: "reason",
            values: Values::Fixed(&[
                "missing",
                "malformed",
                "algorithm",
                "signature",
                "expired",
                "not_yet_valid",
                "claims",
                "forbidden",
            ]),
        }],
        "Requests refused by authentication (401: missing, malformed, algorithm, signature, expired, \
         not_yet_valid, claims) or authorisation (403: forbidden). A rise in signature or algorithm \
         refusals is someone trying tokens.",
    ),
    metric(
        "alert_stream_clients",
        Gauge,
        Api,
        Unit::Count,
        &[],
        "Alert stream (WebSocket) clients connected.",
    ),
    metric(
        "alert_stream_lagged_total",
        Counter,
        Api,
        Unit::Count,
        &[],
        "Alert stream clients dropped for falling behind (told where to resume).",
    ),
    // The worker: consuming and scoring.
    metric(
        "decisions_total",
        Counter,
        Worker,
        Unit::Count,
        &[RISK_LABEL, Label { name: "degraded", values: Values::Fixed(BOOLEAN) }],
        "Scoring decisions by risk label; degraded=true when account features were unavailable \
         (Redis down) and only transaction-level rules applied.",
    ),
    metric(
        "model_scoring_seconds",
        Histogram,
        Worker,
        Unit::Seconds,
        &[],
        "CPU time to score one transaction (rules and model).",
    ),
    metric(
        "transactions_processed_total",
        Counter,
        Worker,
        Unit::Count,
        &[RISK_LABEL],
        "Transactions scored and committed for the first time, by risk label.",
    ),
    metric(
        "transaction_processing_seconds",
        Histogram,
        Worker,
        Unit::Seconds,
        &[],
        "Time from acceptance by the api to the committed decision.",
    ),
    metric(
        "duplicate_deliveries_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Deliveries of transactions already committed (redeliveries; harmless, idempotent).",
    ),
    metric(
        "alerts_created_total",
        Counter,
        Worker,
        Unit::Count,
        &[RISK_LABEL],
        "Alerts raised for analysts, by risk label.",
    ),
    metric(
        "commit_batch_seconds",
        Histogram,
        Worker,
        Unit::Seconds,
        &[],
        "Time to commit one batch of decisions to PostgreSQL.",
    ),
    metric("commit_batch_size", Histogram, Worker, Unit::Count, &[], "Decisions per committed batch."),
    metric(
        "commit_failures_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Failed batch commits (retried with backoff, or split to isolate a refused row).",
    ),
    metric(
        "delayed_retries_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Deliveries sent round the delayed-retry queue after the database refused them.",
    ),
    metric(
        "dead_lettered_total",
        Counter,
        Worker,
        Unit::Count,
        &[Label { name: "reason", values: Values::Fixed(&["undecodable", "retries_exhausted"]) }],
        "Deliveries sent to the dead-letter queue by the worker, by reason (the broker's own \
         x-delivery-limit dead-lettering is not counted here).",
    ),
    metric(
        "engine_reloads_total",
        Counter,
        Worker,
        Unit::Count,
        &[Label { name: "outcome", values: Values::Fixed(&["ok", "error"]) }],
        "Reloads of the rules and model after an activation; error means the new ones were \
         unusable and the current ones were kept.",
    ),
    // The worker: account actors.
    metric(
        "process_resident_memory_bytes",
        Gauge,
        Binary::Both,
        Unit::Bytes,
        &[],
        "Resident memory of this process (VmRSS), read at every scrape.",
    ),
    metric("worker_account_actors", Gauge, Worker, Unit::Count, &[], "Account actors alive on this node."),
    metric(
        "worker_parked_windows",
        Gauge,
        Worker,
        Unit::Count,
        &[],
        "Windows of stopped account actors kept in memory for the account's next actor.",
    ),
    metric(
        "account_window_reuses_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Account actors started with a parked window (no Redis read of the whole window).",
    ),
    metric(
        "account_actor_evictions_total",
        Counter,
        Worker,
        Unit::Count,
        &[Label { name: "reason", values: Values::Fixed(&["idle", "cap"]) }],
        "Account actors stopped: idle past ACCOUNT_IDLE_SECS, or to stay under MAX_ACCOUNT_ACTORS.",
    ),
    // The worker: shards and the broker's backlog.
    metric(
        "worker_shard_active",
        Gauge,
        Worker,
        Unit::Count,
        &[SHARD],
        "1 while this node is the active consumer of the shard, else 0, as of the last balancing round.",
    )
    .measured(),
    metric(
        "worker_shards_owned",
        Gauge,
        Worker,
        Unit::Count,
        &[],
        "Shards this node is the active consumer of, as of the last balancing round.",
    )
    .measured(),
    metric(
        "shard_handovers_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Shards this node yielded to a less loaded node.",
    ),
    metric(
        "worker_shard_queue_depth",
        Gauge,
        Worker,
        Unit::Count,
        &[SHARD],
        "Messages in the shard queue (ready + unacknowledged), per the management API.",
    )
    .measured(),
    metric(
        "worker_dead_letter_queue_depth",
        Gauge,
        Worker,
        Unit::Count,
        &[],
        "Messages in the dead-letter queue, per the management API.",
    )
    .measured(),
    metric(
        "worker_retry_queue_depth",
        Gauge,
        Worker,
        Unit::Count,
        &[],
        "Messages waiting on the delayed-retry queue, per the management API.",
    )
    .measured(),
    metric(
        "worker_queue_depth_fetch_failures_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Failed reads of the queue depths from the management API (the depth gauges keep their last value).",
    ),
    // The worker: alert outbox.
    metric(
        "alerts_published_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Committed alerts published to Redis and the alerts exchange.",
    ),
    metric(
        "alert_publish_failures_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Failed alert publishing rounds (retried with backoff; alerts stay in the outbox).",
    ),
    // The worker: transaction.scored.
    metric(
        "transactions_scored_published_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "transaction.scored events the broker confirmed (their deliveries are acked after).",
    ),
    metric(
        "scored_publish_failures_total",
        Counter,
        Worker,
        Unit::Count,
        &[],
        "Failed attempts at publishing a batch of transaction.scored events (retried; then redelivered).",
    ),
];

/// The entry for `name`, if any.
pub fn find(name: &str) -> Option<&'static MetricInfo> {
    METRICS.iter().find(|m| m.name == name)
}

/// Gives the installed recorder every metric's help text and unit. Idempotent.
pub fn describe() {
    for m in METRICS {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.unit, m.help),
        }
    }
}

/// Makes every series of `binary` that is zero until its first event exist, for each
/// combination of its label values: counters are incremented by zero and gauges have zero
/// added, so neither changes a value already there (several apps in one test process share
/// the recorder, and a gauge may already be set). Idempotent.
pub fn register(binary: Binary) {
    for m in METRICS.iter().filter(|m| m.zero_at_start && binary.exports(m.binary)) {
        for labels in label_sets(m) {
            let labels: Vec<metrics::Label> =
                labels.into_iter().map(|(name, value)| metrics::Label::new(name, value)).collect();
            match m.kind {
                Kind::Counter => metrics::counter!(m.name, labels).increment(0),
                Kind::Gauge => metrics::gauge!(m.name, labels).increment(0.0),
                // Touching a histogram renders it with empty buckets.
                Kind::Histogram => drop(metrics::histogram!(m.name, labels)),
            }
        }
    }
}

/// Every combination of `m`'s label values, or none unless all of them are fixed.
fn label_sets(m: &MetricInfo) -> Vec<Vec<(&'static str, &'static str)>> {
    let mut sets = vec![Vec::new()];
    for label in m.labels {
        let values = match label.values {
            Values::Fixed(values) => values,
            Values::Shards | Values::Open => return Vec::new(),
        };
        sets = sets
            .into_iter()
            .flat_map(|set| {
                values.iter().map(move |value| {
                    let mut set = set.clone();
                    set.push((label.name, *value));
                    set
                })
            })
            .collect();
    }
    sets
}

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::{Path, PathBuf},
    };

    use super::*;

    /// One `counter!`/`gauge!`/`histogram!` call with a literal name found in the sources.
    #[derive(Debug)]
    struct Emission {
        kind: Kind,
        name: String,
        labels: BTreeSet<String>,
        at: String,
    }

    /// The `src` trees of the three crates: the catalogue covers both binaries.
    fn source_files() -> Vec<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        let mut dirs: Vec<PathBuf> =
            ["actors", "api", "worker"].iter().map(|c| root.join(c).join("src")).collect();
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            for entry in entries {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs")
                    && !path.ends_with("telemetry/catalog.rs")
                {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 10, "found only {files:?}");
        files
    }

    /// The text of one macro call's arguments, from just after `(` to its matching `)`.
    fn arguments(text: &str) -> &str {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (i, c) in text.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_string => escaped = true,
                '"' => in_string = !in_string,
                '(' | '[' | '{' if !in_string => depth += 1,
                ')' | ']' | '}' if !in_string => match depth.checked_sub(1) {
                    Some(d) => depth = d,
                    None => return &text[..i],
                },
                _ => {}
            }
        }
        text
    }

    /// Every metric emission with a literal name in `text`, and its literal label keys.
    fn emissions(text: &str, file: &str) -> Vec<Emission> {
        let mut found = Vec::new();
        for (kind, word) in
            [(Kind::Counter, "counter"), (Kind::Gauge, "gauge"), (Kind::Histogram, "histogram")]
        {
            let needle = format!("{word}!(");
            for (at, _) in text.match_indices(&needle) {
                let before = text[..at].chars().next_back();
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue; // describe_counter!, etc.
                }
                let args = arguments(&text[at + needle.len()..]);
                let Some(rest) = args.trim_start().strip_prefix('"') else { continue };
                let Some((name, labels)) = rest.split_once('"') else { continue };
                let labels = labels
                    .split('"')
                    .collect::<Vec<_>>()
                    .windows(2)
                    .filter(|w| w[1].trim_start().starts_with("=>"))
                    .map(|w| w[0].to_owned())
                    .collect();
                let line = text[..at].lines().count();
                found.push(Emission { kind, name: name.to_owned(), labels, at: format!("{file}:{line}") });
            }
        }
        found
    }

    fn all_emissions() -> Vec<Emission> {
        source_files()
            .iter()
            .flat_map(|path| {
                let text =
                    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                emissions(&text, &path.display().to_string())
            })
            .collect()
    }

    #[test]
    fn names_are_unique_and_follow_prometheus_conventions() {
        let mut seen = BTreeSet::new();
        for m in METRICS {
            assert!(seen.insert(m.name), "{} is listed twice", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{} is not snake_case",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: only counters end in _total",
                m.name
            );
            assert!(m.zero_at_start || m.kind != Kind::Counter, "{}: counters start at zero", m.name);
            if m.name.ends_with("_seconds") {
                assert_eq!((m.kind, m.unit), (Kind::Histogram, Unit::Seconds), "{}", m.name);
            }
            assert!(!m.help.is_empty(), "{} has no help text", m.name);
            let labels: BTreeSet<_> = m.labels.iter().map(|l| l.name).collect();
            assert_eq!(labels.len(), m.labels.len(), "{}: a label is listed twice", m.name);
        }
    }

    #[test]
    fn the_parser_finds_literal_names_and_label_keys() {
        let text = "metrics::counter!(\"a_total\", \"k\" => v.as_str(), \"j\" => \"x\").increment(1);\n\
                    metrics::describe_counter!(\"b_total\", \"help\");\n\
                    metrics::gauge!(\n    \"c\",\n).set(f(\"d\"));\n\
                    metrics::histogram!(name).record(1.0);";
        let found = emissions(text, "t.rs");
        let got: Vec<_> =
            found.iter().map(|e| (e.kind, e.name.as_str(), e.labels.len(), e.at.as_str())).collect();
        assert_eq!(got, [(Kind::Counter, "a_total", 2, "t.rs:1"), (Kind::Gauge, "c", 0, "t.rs:3")]);
        assert_eq!(found[0].labels, BTreeSet::from(["k".to_owned(), "j".to_owned()]));
    }

    #[test]
    fn every_emitted_metric_is_listed_with_its_kind_and_labels() {
        for e in all_emissions() {
            let m = find(&e.name).unwrap_or_else(|| panic!("{} ({}) is not in the catalogue", e.name, e.at));
            assert_eq!(m.kind, e.kind, "{} ({}): wrong kind", e.name, e.at);
            let listed: BTreeSet<String> = m.labels.iter().map(|l| l.name.to_owned()).collect();
            assert_eq!(listed, e.labels, "{} ({}): labels differ from the catalogue", e.name, e.at);
        }
    }

    #[test]
    fn every_listed_metric_is_emitted_somewhere() {
        let mut emitted: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in all_emissions() {
            emitted.entry(e.name).or_default().push(e.at);
        }
        let missing: Vec<_> = METRICS.iter().map(|m| m.name).filter(|n| !emitted.contains_key(*n)).collect();
        assert!(missing.is_empty(), "listed but never emitted: {missing:?}");
    }

    #[test]
    fn label_sets_are_the_product_of_known_values() {
        let decisions = find("decisions_total").unwrap_or_else(|| panic!("missing"));
        let sets = label_sets(decisions);
        assert_eq!(sets.len(), 6);
        assert!(sets.contains(&vec![("risk_label", "HIGH"), ("degraded", "true")]), "{sets:?}");
        let http = find("http_requests_total").unwrap_or_else(|| panic!("missing"));
        assert!(label_sets(http).is_empty(), "open labels are not registered");
        let depth = find("worker_shard_queue_depth").unwrap_or_else(|| panic!("missing"));
        assert!(!depth.zero_at_start && label_sets(depth).is_empty(), "measured, not registered");
        let plain = find("commit_failures_total").unwrap_or_else(|| panic!("missing"));
        assert_eq!(label_sets(plain), [Vec::new()]);
    }

    #[test]
    fn after_register_every_series_with_known_labels_is_rendered() {
        let handle = crate::telemetry::metrics();
        // A gauge someone already set keeps its value.
        metrics::gauge!("worker_account_actors").set(3.0);
        describe();
        register(Binary::Both);
        let text = handle.render();
        for m in METRICS.iter().filter(|m| m.zero_at_start) {
            let sets = label_sets(m);
            if sets.is_empty() {
                continue; // open labels: appears on first use
            }
            // Histograms without buckets configured (not `_seconds`) render as summaries.
            let kinds: &[&str] = match m.kind {
                Kind::Counter => &["counter"],
                Kind::Gauge => &["gauge"],
                Kind::Histogram => &["histogram", "summary"],
            };
            assert!(
                kinds.iter().any(|kind| text.contains(&format!("# TYPE {} {kind}\n", m.name))),
                "no TYPE for {}:\n{text}",
                m.name
            );
            assert!(text.contains(&format!("# HELP {} ", m.name)), "no HELP for {}:\n{text}", m.name);
            for set in sets {
                let labels: Vec<String> = set.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let name = match m.kind {
                    Kind::Histogram => format!("{}_count", m.name),
                    _ => m.name.to_owned(),
                };
                let series = if labels.is_empty() { name } else { format!("{name}{{{}}}", labels.join(",")) };
                assert!(text.lines().any(|l| l.starts_with(&format!("{series} "))), "no {series}:\n{text}");
            }
        }
        assert!(text.lines().any(|l| l == "worker_account_actors 3"), "register reset a gauge:\n{text}");
        // Measured gauges are not invented at zero.
        assert!(!text.contains("worker_shard_queue_depth"), "{text}");
    }
}

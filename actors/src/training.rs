//! Training, evaluation and replay support shared by the worker CLI and the tests.
//!
//! Features for training are computed by the live code path: transactions go through
//! [`WindowStore::observe`] (the same Lua scripts, the same [`crate::features::derive`])
//! under a scratch Redis key prefix, in event-time order, and labels go into the same
//! merchant label sets live labels go to. There is no second feature implementation to
//! drift from the first.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt, stream};
use serde::Serialize;

use crate::{
    features::{Features, WindowError, WindowStore},
    model::{Example, Metrics, Model, ModelScore},
    rules::RuleConfig,
    scoring::{RiskLabel, RuleSet, decide},
    synth::{Scenario, SynthTransaction},
    transaction::Transaction,
};

/// Window updates kept in flight at once while replaying history (order is preserved:
/// commands leave on one connection in the order given).
const IN_FLIGHT: usize = 64;

/// Computes the features of `transactions` (in event-time order) through `windows`, as
/// live scoring would have. Labels must already be recorded (see [`record_labels`]).
pub async fn features_of(
    windows: &WindowStore,
    transactions: &[&Transaction],
) -> Result<Vec<Features>, WindowError> {
    stream::iter(transactions.iter().map(|tx| windows.observe(tx))).buffered(IN_FLIGHT).try_collect().await
}

/// A label to feed into the merchant risk sets.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelEvent {
    /// The labelled transaction's merchant.
    pub merchant_id: String,
    /// The labelled transaction.
    pub transaction_id: String,
    /// Fraud or not.
    pub fraud: bool,
    /// When the label arrived.
    pub labeled_at: DateTime<Utc>,
}

/// Records labels (in arrival order) so that features see them from `labeled_at + delay`.
pub async fn record_labels(
    windows: &WindowStore,
    labels: &mut [LabelEvent],
) -> Result<(), fred::error::Error> {
    labels.sort_by_key(|l| l.labeled_at);
    stream::iter(
        labels
            .iter()
            .map(|l| windows.record_past_label(&l.merchant_id, &l.transaction_id, l.fraud, l.labeled_at)),
    )
    .buffered(IN_FLIGHT)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Deletes every key under `prefix` (a scratch prefix used for training or replay).
pub async fn purge_prefix(client: &fred::clients::Client, prefix: &str) -> Result<u64, fred::error::Error> {
    use fred::interfaces::{ClientLike, KeysInterface};
    let mut cursor = "0".to_owned();
    let mut deleted = 0;
    loop {
        let (next, keys): (String, Vec<String>) = client
            .custom(
                fred::cmd!("SCAN"),
                vec![cursor.clone(), "MATCH".into(), format!("{prefix}*"), "COUNT".into(), "1000".into()],
            )
            .await?;
        if !keys.is_empty() {
            let n: u64 = client.unlink(keys).await?;
            deleted += n;
        }
        if next == "0" {
            return Ok(deleted);
        }
        cursor = next;
    }
}

/// One transaction of a training or evaluation set.
#[derive(Debug, Clone)]
pub struct Row {
    /// The transaction.
    pub transaction: Transaction,
    /// Its features (computed at its event time).
    pub features: Features,
    /// Its label, if known.
    pub fraud: Option<bool>,
    /// When the label became known.
    pub labeled_at: Option<DateTime<Utc>>,
    /// Which fraud scenario it belongs to (generated data only).
    pub scenario: Option<Scenario>,
}

impl Row {
    /// The model example of this row.
    pub fn example(&self) -> Example {
        Example { x: self.features.vector(), fraud: self.fraud }
    }

    /// The model example as it looked at `at`: a label that arrived later is unknown, so
    /// training at `at` cannot learn from the future.
    pub fn example_at(&self, at: DateTime<Utc>) -> Example {
        let known = self.labeled_at.is_some_and(|l| l < at);
        Example { x: self.features.vector(), fraud: self.fraud.filter(|_| known) }
    }
}

/// Computes features for a generated history under a scratch prefix of `windows`.
pub async fn synthetic_rows(
    windows: &WindowStore,
    history: &[SynthTransaction],
) -> Result<Vec<Row>, WindowError> {
    let mut labels: Vec<LabelEvent> = history
        .iter()
        .map(|s| LabelEvent {
            merchant_id: s.transaction.merchant_id.clone(),
            transaction_id: s.transaction.transaction_id.clone(),
            fraud: s.fraud,
            labeled_at: s.labeled_at,
        })
        .collect();
    record_labels(windows, &mut labels).await?;
    let txs: Vec<&Transaction> = history.iter().map(|s| &s.transaction).collect();
    let features = features_of(windows, &txs).await?;
    Ok(history
        .iter()
        .zip(features)
        .map(|(s, features)| Row {
            transaction: s.transaction.clone(),
            features,
            fraud: Some(s.fraud),
            labeled_at: Some(s.labeled_at),
            scenario: s.scenario,
        })
        .collect())
}

/// Splits rows (in time order) at two instants: train before `calibrate_from`, calibrate
/// before `test_from`, test after.
pub fn split_at(rows: &[Row], calibrate_from: DateTime<Utc>, test_from: DateTime<Utc>) -> [&[Row]; 3] {
    let a = rows.partition_point(|r| r.transaction.event_time() < calibrate_from);
    let b = rows.partition_point(|r| r.transaction.event_time() < test_from).max(a);
    [&rows[..a], &rows[a..b], &rows[b..]]
}

/// The evaluation of one model version (and the rules) on a labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// Model evaluated.
    pub model_version: String,
    /// Rule set applied.
    pub rules_version: String,
    /// First and last event time of the set.
    pub period: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    /// Ranking by the Isolation Forest alone.
    pub anomaly: Metrics,
    /// Ranking by the supervised regression alone (if the model has one).
    pub supervised: Option<Metrics>,
    /// Ranking by the calibrated model probability.
    pub model: Metrics,
    /// Ranking by the rules alone (their floor).
    pub rules: Metrics,
    /// Ranking by the final decision (model and rules).
    pub decision: Metrics,
    /// Share of fraud the decision labels HIGH, and share of legit it labels HIGH.
    pub high: Rates,
    /// Same for MEDIUM or HIGH.
    pub medium_or_high: Rates,
    /// Fraud caught at HIGH per scenario (generated data).
    pub by_scenario: Vec<(String, usize, f64)>,
}

/// Detection and false-positive rates at one cut-off.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rates {
    /// Share of fraud at or above the cut-off (recall).
    pub recall: f64,
    /// Share of legit at or above it.
    pub false_positive_rate: f64,
    /// Share of flagged that is fraud.
    pub precision: f64,
}

fn rates(labels: &[bool], flagged: impl Fn(usize) -> bool) -> Rates {
    let (mut tp, mut fp, mut pos) = (0usize, 0usize, 0usize);
    for (i, &l) in labels.iter().enumerate() {
        pos += usize::from(l);
        if flagged(i) {
            if l {
                tp += 1;
            } else {
                fp += 1;
            }
        }
    }
    let neg = labels.len() - pos;
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Rates { recall: ratio(tp, pos), false_positive_rate: ratio(fp, neg), precision: ratio(tp, tp + fp) }
}

/// Evaluates `model` with `rules` on the labelled rows of `rows`.
pub fn evaluate(model: &Model, rules: &RuleSet, rows: &[Row]) -> Evaluation {
    let labelled: Vec<&Row> = rows.iter().filter(|r| r.fraud.is_some()).collect();
    let labels: Vec<bool> = labelled.iter().map(|r| r.fraud == Some(true)).collect();
    let mut views: Vec<ModelScore> = Vec::with_capacity(labelled.len());
    let mut floors = Vec::with_capacity(labelled.len());
    let mut finals = Vec::with_capacity(labelled.len());
    let mut buckets = Vec::with_capacity(labelled.len());
    for r in &labelled {
        let d = decide(model, rules, &r.transaction, Some(&r.features));
        views.push(d.model.unwrap_or(ModelScore { anomaly: 0.0, supervised: None, probability: 0.0 }));
        // The rules' floor is the highest severity among the reasons (model reasons and allow
        // lists carry 0), so the rules need not run a second time.
        floors.push(d.reasons.iter().map(|r| r.severity).fold(0.0, f64::max));
        finals.push(d.score);
        buckets.push(d.risk_label);
    }
    let of = |f: fn(&ModelScore) -> f64| views.iter().map(f).collect::<Vec<f64>>();
    let mut by_scenario: HashMap<&'static str, (usize, usize)> = HashMap::new();
    for (r, b) in labelled.iter().zip(&buckets) {
        if let Some(s) = r.scenario {
            let e = by_scenario.entry(s.as_str()).or_default();
            e.0 += 1;
            e.1 += usize::from(*b == RiskLabel::High);
        }
    }
    let mut by_scenario: Vec<(String, usize, f64)> = by_scenario
        .into_iter()
        .map(|(s, (n, caught))| (s.to_owned(), n, caught as f64 / n.max(1) as f64))
        .collect();
    by_scenario.sort_by(|a, b| a.0.cmp(&b.0));
    Evaluation {
        model_version: model.version.clone(),
        rules_version: rules.version.clone(),
        period: (
            labelled.first().map(|r| r.transaction.event_time()),
            labelled.last().map(|r| r.transaction.event_time()),
        ),
        anomaly: Metrics::compute(&of(|v| v.anomaly), &labels),
        supervised: model
            .supervised
            .as_ref()
            .map(|_| Metrics::compute(&of(|v| v.supervised.unwrap_or(0.0)), &labels)),
        model: Metrics::compute(&of(|v| v.probability), &labels),
        rules: Metrics::compute(&floors, &labels),
        decision: Metrics::compute(&finals, &labels),
        high: rates(&labels, |i| buckets[i] == RiskLabel::High),
        medium_or_high: rates(&labels, |i| buckets[i] >= RiskLabel::Medium),
        by_scenario,
    }
}

/// The default rule set, for evaluations on generated data.
pub fn default_rules() -> RuleSet {
    RuleSet { version: "rules-1".into(), config: RuleConfig::default() }
}

impl Evaluation {
    /// A plain-text report (a markdown table) of the evaluation.
    pub fn report(&self) -> String {
        let mut out = format!(
            "model {} with rule set {}, {} labelled transactions ({} fraud), {} to {}\n\n",
            self.model_version,
            self.rules_version,
            self.decision.rows,
            self.decision.fraud,
            self.period.0.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default(),
            self.period.1.map(|t| t.format("%Y-%m-%d").to_string()).unwrap_or_default(),
        );
        out.push_str(
            "| scorer | AUC-ROC | average precision | precision@k | k | Brier |\n|---|---|---|---|---|---|\n",
        );
        let mut line = |name: &str, m: &Metrics| {
            out.push_str(&format!(
                "| {name} | {:.4} | {:.4} | {:.4} | {} | {:.4} |\n",
                m.auc_roc, m.average_precision, m.precision_at_k, m.k, m.brier
            ));
        };
        line("Isolation Forest (anomaly)", &self.anomaly);
        if let Some(s) = &self.supervised {
            line("logistic regression (supervised)", s);
        }
        line("calibrated model probability", &self.model);
        line("rules alone (floor)", &self.rules);
        line("final decision (model + rules)", &self.decision);
        out.push_str(&format!(
            "\nHIGH: recall {:.3}, precision {:.3}, false-positive rate {:.4}\n\
             MEDIUM or HIGH: recall {:.3}, precision {:.3}, false-positive rate {:.4}\n",
            self.high.recall,
            self.high.precision,
            self.high.false_positive_rate,
            self.medium_or_high.recall,
            self.medium_or_high.precision,
            self.medium_or_high.false_positive_rate
        ));
        if !self.by_scenario.is_empty() {
            out.push_str("\n| scenario | fraud transactions | caught at HIGH |\n|---|---|---|\n");
            for (s, n, caught) in &self.by_scenario {
                out.push_str(&format!("| {s} | {n} | {:.1} % |\n", 100.0 * caught));
            }
        }
        out
    }
}

//! Turning features into a decision: the model's calibrated fraud probability, floored or
//! overridden by the analysts' rules, bucketed by the rule set's thresholds.
//!
//! ```text
//! final = 1.0                       deny list matched
//!       = 0.0                       allow list matched (and no deny)
//!       = max(model p, rule floor)  otherwise (model p = 0 when degraded)
//! label = HIGH if final ≥ thresholds.high, MEDIUM if ≥ thresholds.medium, else LOW
//! ```
//!
//! An [`Engine`] is one immutable (rule set, model, shadow model) triple; workers swap in a
//! new one when an analyst activates a rule set or model (see [`crate::engine`]).

use std::{collections::BTreeMap, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::{
    features::{Features, MODEL_INPUTS, MODEL_WIDTH},
    model::{Model, ModelScore},
    rules::{RuleConfig, Thresholds},
    transaction::Transaction,
};

/// Risk bucket shown to analysts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RiskLabel {
    /// Let it through.
    Low,
    /// Worth a look.
    Medium,
    /// Alert an analyst.
    High,
}

impl RiskLabel {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            RiskLabel::Low => "LOW",
            RiskLabel::Medium => "MEDIUM",
            RiskLabel::High => "HIGH",
        }
    }

    /// The bucket a score falls in under `thresholds`.
    pub fn from_score(score: f64, thresholds: &Thresholds) -> Self {
        if score >= thresholds.high {
            RiskLabel::High
        } else if score >= thresholds.medium {
            RiskLabel::Medium
        } else {
            RiskLabel::Low
        }
    }
}

/// A reason for the decision, with a stable code analysts and clients can key on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable machine-readable code, e.g. `HIGH_AMOUNT`, `MODEL_RISK`.
    pub code: String,
    /// Human explanation with the numbers that triggered it.
    pub detail: String,
    /// For rules, the risk floor it sets (0 for model reasons and allow lists).
    #[serde(default)]
    pub severity: f64,
}

/// The outcome of scoring one transaction, with everything needed to explain and replay it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Model that produced the probability.
    pub model_version: String,
    /// Rule set that produced the reasons and thresholds.
    pub rules_version: String,
    /// Final fraud probability in [0, 1].
    pub score: f64,
    /// Bucket of `score`.
    pub risk_label: RiskLabel,
    /// Rules that fired and model findings, each with its code.
    pub reasons: Vec<Reason>,
    /// The feature vector the decision was made on.
    pub features: Features,
    /// Each model input's share of the anomaly score (they sum to it).
    pub contributions: BTreeMap<String, f64>,
    /// What the model said before rules applied; `None` when degraded.
    pub model: Option<ModelScore>,
    /// The cut-offs the label was read with.
    pub thresholds: Thresholds,
    /// Made without the account's windows (feature store unavailable): rules on the
    /// transaction alone. Flagged so analysts and retraining can tell.
    #[serde(default)]
    pub degraded: bool,
    /// What the shadow (challenger) model decided; stored apart, never acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowScore>,
}

/// A challenger's verdict on a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowScore {
    /// The challenger.
    pub model_version: String,
    /// Its final probability (same rules).
    pub score: f64,
    /// Its bucket.
    pub risk_label: RiskLabel,
    /// Its model view.
    pub model: Option<ModelScore>,
}

/// A rule set as stored: its version and its document.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    /// Version tag recorded with every score.
    pub version: String,
    /// The rules.
    pub config: RuleConfig,
}

/// Anomaly score from which the top contributing inputs are named as a reason.
pub const ANOMALY_REASON_FROM: f64 = 0.6;

/// One immutable scoring configuration.
#[derive(Debug, Clone)]
pub struct Engine {
    /// Active rules.
    pub rules: Arc<RuleSet>,
    /// Active model.
    pub model: Arc<Model>,
    /// Challenger scored in shadow (stored, never acted on), if any.
    pub shadow: Option<Arc<Model>>,
}

impl Engine {
    /// Decides on one transaction with the active model, and with the shadow model if
    /// one is set (and features are available). Pure and deterministic.
    pub fn decide(&self, tx: &Transaction, features: Option<&Features>) -> Decision {
        let mut decision = decide(&self.model, &self.rules, tx, features);
        decision.shadow = self.shadow.as_ref().zip(features).map(|(shadow, f)| {
            let d = decide(shadow, &self.rules, tx, Some(f));
            ShadowScore {
                model_version: d.model_version,
                score: d.score,
                risk_label: d.risk_label,
                model: d.model,
            }
        });
        decision
    }
}

/// Decides on one transaction with `model` and `rules` (replay and evaluation use this
/// directly with historical versions).
pub fn decide(model: &Model, rules: &RuleSet, tx: &Transaction, features: Option<&Features>) -> Decision {
    let outcome = rules.config.evaluate(tx, features);
    let mut reasons: Vec<Reason> = outcome
        .fired
        .iter()
        .map(|r| Reason { code: r.code.clone(), detail: r.detail.clone(), severity: r.severity })
        .collect();
    let mut contributions = BTreeMap::new();
    let scored = features.and_then(|f| {
        let mut shares = [0.0; MODEL_WIDTH];
        match model.score(f, &mut shares) {
            Ok(s) => {
                contributions.extend(MODEL_INPUTS.iter().map(|n| (*n).to_owned()).zip(shares));
                Some((s, shares))
            }
            Err(error) => {
                tracing::error!(component = "scorer", model = %model.version, %error, "model failed to score");
                None
            }
        }
    });
    let model_p = scored.map_or(0.0, |(s, _)| s.probability);
    let score = if outcome.deny {
        1.0
    } else if outcome.allow {
        0.0
    } else {
        model_p.max(outcome.floor)
    }
    .clamp(0.0, 1.0);
    let thresholds = rules.config.thresholds.clone();
    if let Some((s, shares)) = scored {
        if s.probability >= thresholds.medium {
            reasons.push(Reason {
                code: "MODEL_RISK".into(),
                detail: format!(
                    "fraud probability {:.3} (anomaly {:.3}{})",
                    s.probability,
                    s.anomaly,
                    s.supervised.map(|p| format!(", supervised {p:.3}")).unwrap_or_default()
                ),
                severity: 0.0,
            });
        }
        if s.anomaly >= ANOMALY_REASON_FROM {
            let mut top: Vec<(usize, f64)> = shares.iter().copied().enumerate().collect();
            top.sort_by(|a, b| b.1.total_cmp(&a.1));
            let names: Vec<&str> = top.iter().take(3).map(|(i, _)| MODEL_INPUTS[*i]).collect();
            reasons.push(Reason {
                code: "ANOMALY".into(),
                detail: format!("anomaly score {:.3}, driven by {}", s.anomaly, names.join(", ")),
                severity: 0.0,
            });
        }
    }
    let degraded = features.is_none();
    if degraded {
        reasons.push(Reason {
            code: "FEATURES_UNAVAILABLE".into(),
            detail: "the feature store was unavailable; only transaction-level rules were evaluated".into(),
            severity: 0.0,
        });
    }
    Decision {
        model_version: model.version.clone(),
        rules_version: rules.version.clone(),
        score,
        risk_label: RiskLabel::from_score(score, &thresholds),
        reasons,
        features: features.cloned().unwrap_or_default(),
        contributions,
        model: scored.map(|(s, _)| s),
        thresholds,
        degraded,
        shadow: None,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::catalog::{BOOTSTRAP_MODEL, ModelPackage};
    use chrono::Utc;
    use proptest::prelude::*;
    use serde_json::json;

    fn model() -> Model {
        static SHIPPED: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        SHIPPED
            .get_or_init(|| {
                serde_json::from_str::<ModelPackage>(BOOTSTRAP_MODEL)
                    .map(|p| p.model)
                    .unwrap_or_else(|e| panic!("{e}"))
            })
            .clone()
    }

    fn rules(doc: serde_json::Value) -> RuleSet {
        RuleSet { version: "r".into(), config: RuleConfig::parse(&doc).unwrap_or_else(|e| panic!("{e:?}")) }
    }

    fn tx(account: &str, amount: &str) -> Transaction {
        let body = json!({
            "transaction_id": "t", "account_id": account, "merchant_id": "m", "amount": amount,
            "currency": "EUR", "timestamp": "2026-01-01T12:00:00Z"
        });
        Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn ordinary() -> Features {
        Features {
            amount: 25.0,
            tx_count_5m: 1,
            tx_count_1h: 1,
            tx_count_24h: 2,
            tx_count_7d: 9,
            amount_sum_1h: 25.0,
            amount_sum_24h: 60.0,
            amount_ratio_7d: Some(1.1),
            seconds_since_prev: Some(20_000.0),
            distance_km: Some(2.0),
            speed_kmh: Some(0.4),
            distinct_merchants_24h: 2,
            hour_of_day: 12,
            merchant_tx_count_1h: 3,
            merchant_tx_count_24h: 40,
            merchant_risk_rate: 0.02,
            ..Features::default()
        }
    }

    #[test]
    fn an_ordinary_payment_is_low_and_the_model_decides() {
        let d = decide(&model(), &rules(json!({})), &tx("a", "25"), Some(&ordinary()));
        assert_eq!(d.risk_label, RiskLabel::Low, "{d:?}");
        assert_eq!(Some(d.score), d.model.map(|m| m.probability));
        assert!(d.reasons.is_empty(), "{:?}", d.reasons);
        let total: f64 = d.contributions.values().sum();
        assert!((total - d.model.map_or(-1.0, |m| m.anomaly)).abs() < 1e-9);
    }

    #[test]
    fn rules_set_a_floor_and_lists_override() {
        let m = model();
        let high = decide(&m, &rules(json!({})), &tx("a", "20000"), Some(&ordinary()));
        assert_eq!(high.risk_label, RiskLabel::High);
        assert!(high.score >= 0.9 && high.reasons.iter().any(|r| r.code == "HIGH_AMOUNT"));
        let deny = rules(json!({"lists": {"deny_accounts": ["bad"], "allow_accounts": ["bad", "vip"]}}));
        let d = decide(&m, &deny, &tx("bad", "1"), Some(&ordinary()));
        assert_eq!((d.score, d.risk_label), (1.0, RiskLabel::High), "deny wins over allow");
        let d = decide(&m, &deny, &tx("vip", "20000"), Some(&ordinary()));
        assert_eq!((d.score, d.risk_label), (0.0, RiskLabel::Low), "allow-listed, rules still reported");
        assert!(d.reasons.iter().any(|r| r.code == "HIGH_AMOUNT"));
    }

    #[test]
    fn impossible_travel_at_night_is_high_and_explained() {
        let f = Features {
            distance_km: Some(1500.0),
            speed_kmh: Some(9000.0),
            new_merchant: true,
            night: true,
            hour_of_day: 3,
            ..ordinary()
        };
        let d = decide(&model(), &rules(json!({})), &tx("a", "900"), Some(&f));
        let codes: Vec<&str> = d.reasons.iter().map(|r| r.code.as_str()).collect();
        assert!(
            codes.contains(&"IMPOSSIBLE_TRAVEL") && codes.contains(&"NEW_MERCHANT_AT_NIGHT"),
            "{codes:?}"
        );
        assert_eq!(d.risk_label, RiskLabel::High);
    }

    #[test]
    fn without_features_the_decision_is_degraded_and_rules_only() {
        let d = decide(&model(), &rules(json!({})), &tx("a", "20000"), None);
        assert!(d.degraded && d.model.is_none() && d.contributions.is_empty());
        assert_eq!(d.risk_label, RiskLabel::High, "transaction-level rules still apply");
        assert!(d.reasons.iter().any(|r| r.code == "FEATURES_UNAVAILABLE"));
        let d = decide(&model(), &rules(json!({})), &tx("a", "20"), None);
        assert_eq!((d.score, d.risk_label), (0.0, RiskLabel::Low));
    }

    #[test]
    fn a_shadow_model_rides_along_without_changing_the_decision() {
        let m = Arc::new(model());
        let challenger = Arc::new(Model { version: "challenger".into(), ..(*m).clone() });
        let live = Engine { rules: Arc::new(rules(json!({}))), model: m.clone(), shadow: None };
        let both = Engine { shadow: Some(challenger), ..live.clone() };
        let (a, b) =
            (live.decide(&tx("a", "30"), Some(&ordinary())), both.decide(&tx("a", "30"), Some(&ordinary())));
        assert_eq!(b.shadow.as_ref().map(|s| s.model_version.as_str()), Some("challenger"));
        assert_eq!(Decision { shadow: None, ..b }, a);
        assert!(both.decide(&tx("a", "30"), None).shadow.is_none(), "no features, no shadow verdict");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the features, the decision is a probability bucketed by the thresholds,
        /// and the contributions explain the anomaly score.
        #[test]
        fn decisions_are_bounded_and_consistent(
            amount in 0.01f64..1e7,
            counts in proptest::array::uniform4(0u64..500),
            seconds in proptest::option::of(0.0f64..1e6),
            km in proptest::option::of(0.0f64..20_000.0),
            hour in 0u32..24,
            flags in proptest::array::uniform3(any::<bool>()),
            risk in 0.0f64..1.0,
        ) {
            let features = Features {
                amount,
                tx_count_5m: counts[0],
                tx_count_1h: counts[1],
                tx_count_24h: counts[2],
                tx_count_7d: counts[3],
                amount_sum_24h: amount * counts[2] as f64,
                amount_ratio_7d: Some(amount / 30.0),
                seconds_since_prev: seconds,
                distance_km: km,
                speed_kmh: km.zip(seconds).map(|(k, s)| k / (s.max(60.0) / 3600.0)),
                hour_of_day: hour,
                new_merchant: flags[0],
                night: flags[1],
                weekend: flags[2],
                merchant_risk_rate: risk,
                ..Features::default()
            };
            let set = rules(json!({}));
            let d = decide(&model(), &set, &tx("a", &format!("{amount:.2}")), Some(&features));
            prop_assert!((0.0..=1.0).contains(&d.score));
            prop_assert_eq!(d.risk_label, set.config.label(d.score));
            let m = d.model.unwrap_or(crate::model::ModelScore { anomaly: -1.0, supervised: None, probability: -1.0 });
            prop_assert!(d.score >= m.probability - 1e-12, "rules only ever raise the model's risk");
            let total: f64 = d.contributions.values().sum();
            prop_assert!((total - m.anomaly).abs() < 1e-9);
        }
    }
}

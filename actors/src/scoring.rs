//! Turning features into a decision. For now a transparent rule scorer; the Isolation
//! Forest and the supervised model will plug in behind the same [`Decision`].

use std::collections::BTreeMap;

use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Serialize};

use crate::{features::Features, settings::ScoringSettings, transaction::Transaction};

/// Version tag of the rule set below; stored with every score so decisions can be replayed.
pub const RULES_VERSION: &str = "rules-2026.11.1";
/// Version tag of the (rule-only) model.
pub const MODEL_VERSION: &str = "rule-scorer-1";
/// Score from which a decision is HIGH and raises an alert.
pub const HIGH_THRESHOLD: f64 = 0.8;
/// Score from which a decision is MEDIUM.
pub const MEDIUM_THRESHOLD: f64 = 0.5;
/// Transactions in one hour from which the velocity rule fires.
pub const VELOCITY_1H_LIMIT: u64 = 10;

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

    /// The bucket a score falls in.
    pub fn from_score(score: f64) -> Self {
        if score >= HIGH_THRESHOLD {
            RiskLabel::High
        } else if score >= MEDIUM_THRESHOLD {
            RiskLabel::Medium
        } else {
            RiskLabel::Low
        }
    }
}

/// A rule that fired, with a stable code analysts and clients can key on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    /// Stable machine-readable code, e.g. `HIGH_AMOUNT`.
    pub code: String,
    /// Human explanation with the numbers that triggered it.
    pub detail: String,
}

/// The outcome of scoring one transaction, with everything needed to explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// Model that produced the score.
    pub model_version: String,
    /// Rule set that produced the reasons.
    pub rules_version: String,
    /// Risk in [0, 1].
    pub score: f64,
    /// Bucket of `score`.
    pub risk_label: RiskLabel,
    /// Rules that fired.
    pub reasons: Vec<Reason>,
    /// The feature vector the decision was made on.
    pub features: Features,
    /// How much each input added to the score.
    pub contributions: BTreeMap<String, f64>,
    /// Made without the account's windows (feature store unavailable): rules on the
    /// transaction alone. Flagged so analysts and retraining can tell.
    #[serde(default)]
    pub degraded: bool,
}

/// Transparent amount + velocity rules with configurable thresholds.
#[derive(Debug, Clone)]
pub struct RuleScorer {
    settings: ScoringSettings,
}

impl RuleScorer {
    /// A scorer with the given thresholds.
    pub fn new(settings: ScoringSettings) -> Self {
        Self { settings }
    }

    /// Scores one transaction. Pure and deterministic: same input, same decision.
    pub fn score(&self, tx: &Transaction, features: &Features) -> Decision {
        let mut reasons = Vec::new();
        let mut contributions = BTreeMap::new();
        let ScoringSettings { medium_amount, high_amount } = &self.settings;

        let amount_part = if tx.amount >= *high_amount {
            reasons.push(Reason {
                code: "HIGH_AMOUNT".into(),
                detail: format!("amount {} {} is at least {high_amount}", tx.amount, tx.currency),
            });
            0.9
        } else if tx.amount >= *medium_amount {
            reasons.push(Reason {
                code: "ELEVATED_AMOUNT".into(),
                detail: format!("amount {} {} is at least {medium_amount}", tx.amount, tx.currency),
            });
            0.5 + 0.2 * ratio(tx.amount - medium_amount, high_amount - medium_amount)
        } else {
            0.3 * ratio(tx.amount, *medium_amount)
        };
        contributions.insert("amount".to_owned(), amount_part);

        let velocity_part = if features.tx_count_1h > VELOCITY_1H_LIMIT {
            reasons.push(Reason {
                code: "VELOCITY_1H".into(),
                detail: format!(
                    "{} transactions in the hour before this one (limit {VELOCITY_1H_LIMIT})",
                    features.tx_count_1h
                ),
            });
            0.2
        } else {
            0.0
        };
        contributions.insert("tx_count_1h".to_owned(), velocity_part);

        let score = (amount_part + velocity_part).clamp(0.0, 1.0);
        Decision {
            model_version: MODEL_VERSION.into(),
            rules_version: RULES_VERSION.into(),
            score,
            risk_label: RiskLabel::from_score(score),
            reasons,
            features: features.clone(),
            contributions,
            degraded: false,
        }
    }

    /// Scores without the account's windows: only the transaction's own rules apply, the
    /// decision is marked degraded and says why.
    pub fn score_degraded(&self, tx: &Transaction) -> Decision {
        let mut decision = self.score(tx, &Features::default());
        decision.degraded = true;
        decision.reasons.push(Reason {
            code: "FEATURES_UNAVAILABLE".into(),
            detail: "the feature store was unavailable; velocity rules were not evaluated".into(),
        });
        decision
    }
}

/// `part / whole` clamped to [0, 1], as f64.
fn ratio(part: Decimal, whole: Decimal) -> f64 {
    if whole <= Decimal::ZERO {
        return 1.0;
    }
    (part / whole).to_f64().unwrap_or(1.0).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn tx(amount: &str) -> Transaction {
        let body = json!({
            "transaction_id": "t", "account_id": "a", "merchant_id": "m", "amount": amount,
            "currency": "EUR", "timestamp": "2026-01-01T00:00:00Z"
        });
        Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn scorer() -> RuleScorer {
        RuleScorer::new(ScoringSettings {
            medium_amount: Decimal::from(1000),
            high_amount: Decimal::from(10000),
        })
    }

    fn features(tx_count_1h: u64) -> Features {
        Features { tx_count_1h, tx_count_24h: tx_count_1h, ..Features::default() }
    }

    #[test]
    fn amounts_map_to_labels() {
        let s = scorer();
        assert_eq!(s.score(&tx("20"), &features(1)).risk_label, RiskLabel::Low);
        assert_eq!(s.score(&tx("1000"), &features(1)).risk_label, RiskLabel::Medium);
        assert_eq!(s.score(&tx("9999.99"), &features(1)).risk_label, RiskLabel::Medium);
        let high = s.score(&tx("10000"), &features(1));
        assert_eq!(high.risk_label, RiskLabel::High);
        assert_eq!(high.reasons[0].code, "HIGH_AMOUNT");
    }

    #[test]
    fn velocity_raises_a_medium_amount_and_is_explained() {
        let d = scorer().score(&tx("5000"), &features(VELOCITY_1H_LIMIT + 1));
        assert!(d.reasons.iter().any(|r| r.code == "VELOCITY_1H"));
        assert!((d.contributions.values().sum::<f64>() - d.score).abs() < 1e-9);
        assert!(d.score > scorer().score(&tx("5000"), &features(1)).score);
    }

    #[test]
    fn a_degraded_decision_says_so() {
        let d = scorer().score_degraded(&tx("20000"));
        assert!(d.degraded);
        assert_eq!(d.risk_label, RiskLabel::High, "transaction-level rules still apply");
        assert!(d.reasons.iter().any(|r| r.code == "FEATURES_UNAVAILABLE"));
    }

    #[test]
    fn scores_stay_in_range() {
        let d = scorer().score(&tx("999999999"), &features(1000));
        assert!((0.0..=1.0).contains(&d.score));
    }
}

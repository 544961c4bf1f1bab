//! Fraud/legit labels: the feedback that supervised training learns from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::transaction::FieldError;

/// Longest accepted note.
pub const MAX_NOTE_CHARS: usize = 1000;
/// Longest accepted source name.
pub const MAX_SOURCE_CHARS: usize = 64;

/// The ground truth about one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LabelValue {
    /// Confirmed fraud (chargeback, customer report, analyst decision).
    Fraud,
    /// Confirmed genuine.
    Legit,
}

impl LabelValue {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            LabelValue::Fraud => "fraud",
            LabelValue::Legit => "legit",
        }
    }
}

/// A validated labelling request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLabel {
    /// Fraud or legit.
    pub label: LabelValue,
    /// Who or what says so (`analyst`, `chargeback`, ...); defaults to `analyst`.
    pub source: String,
    /// Free text for the audit trail.
    pub note: Option<String>,
}

/// A stored label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Label {
    /// The labelled transaction.
    pub transaction_id: String,
    /// Fraud or legit.
    pub label: LabelValue,
    /// Who or what said so.
    pub source: String,
    /// Free text.
    pub note: Option<String>,
    /// When it was recorded.
    pub labeled_at: DateTime<Utc>,
}

impl NewLabel {
    /// Validates a request body, reporting every problem.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let err = |field: &str, reason: &str| FieldError { field: field.into(), reason: reason.into() };
        let Some(obj) = body.as_object() else {
            return Err(vec![err("body", "must be a JSON object")]);
        };
        for key in obj.keys().filter(|k| !["label", "source", "note"].contains(&k.as_str())) {
            errors.push(err(key, "unknown field"));
        }
        let label = match obj.get("label") {
            Some(Value::String(s)) if s == "fraud" => Some(LabelValue::Fraud),
            Some(Value::String(s)) if s == "legit" => Some(LabelValue::Legit),
            None | Some(Value::Null) => {
                errors.push(err("label", "is required"));
                None
            }
            Some(_) => {
                errors.push(err("label", "must be \"fraud\" or \"legit\""));
                None
            }
        };
        let source = match obj.get("source") {
            None | Some(Value::Null) => Some("analyst".to_owned()),
            Some(Value::String(s))
                if (1..=MAX_SOURCE_CHARS).contains(&s.chars().count())
                    && s.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-') =>
            {
                Some(s.clone())
            }
            Some(_) => {
                errors.push(err("source", "must be 1 to 64 of a-z 0-9 _ -"));
                None
            }
        };
        let note = match obj.get("note") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() <= MAX_NOTE_CHARS => Some(Some(s.clone())),
            Some(_) => {
                errors.push(err("note", "must be a string of at most 1000 characters"));
                None
            }
        };
        match (label, source, note) {
            (Some(label), Some(source), Some(note)) if errors.is_empty() => Ok(Self { label, source, note }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_and_defaults_the_source() {
        let l = NewLabel::parse(&json!({"label": "fraud"})).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((l.label, l.source.as_str(), l.note), (LabelValue::Fraud, "analyst", None));
        let l = NewLabel::parse(&json!({"label": "legit", "source": "chargeback", "note": "ok"}))
            .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.source, "chargeback");
    }

    #[test]
    fn names_every_bad_field() {
        let e = NewLabel::parse(&json!({"label": "maybe", "source": "Bad Source", "note": 3, "x": 1}))
            .err()
            .unwrap_or_default();
        let fields: Vec<&str> = e.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["x", "label", "source", "note"]);
        assert!(NewLabel::parse(&json!([])).is_err());
        assert!(NewLabel::parse(&json!({})).is_err());
    }
}

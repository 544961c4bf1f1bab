//! Analyst-editable fraud rules: the JSON document, its validation and its evaluation.
//!
//! A rule set is one JSON object, stored versioned in PostgreSQL and hot-reloaded by the
//! workers; this module is pure logic. Every section and every field is optional and falls
//! back to its default, so `{}` is the default rule set, and unknown fields are errors at any
//! depth (a typo must not silently disable a rule). [`RuleConfig::parse`] reports every
//! problem at once, each with a dotted path such as `velocity.max_1h` or
//! `lists.deny_countries[3]`.
//!
//! ## Rules and codes
//!
//! | section | code | fires when |
//! |---|---|---|
//! | `lists` | `DENYLIST_ACCOUNT`, `DENYLIST_MERCHANT`, `DENYLIST_COUNTRY` (severity 1) | the account, merchant or country is on a deny list |
//! | `lists` | `ALLOWLIST_ACCOUNT`, `ALLOWLIST_MERCHANT` (severity 0) | the account or merchant is on an allow list |
//! | `amount` | `ELEVATED_AMOUNT` / `HIGH_AMOUNT` | amount ≥ `medium` / ≥ `high` (HIGH replaces ELEVATED) |
//! | `velocity` | `VELOCITY_5M`, `VELOCITY_1H`, `VELOCITY_24H` | the window's count, this transaction included, exceeds its maximum |
//! | `impossible_travel` | `IMPOSSIBLE_TRAVEL` | distance ≥ `min_distance_km` and speed > `max_speed_kmh` |
//! | `new_merchant_at_night` | `NEW_MERCHANT_AT_NIGHT` | new merchant, at night, amount ≥ `min_amount` |
//!
//! Amounts are compared as plain numbers whatever the currency. Without [`Features`] (the
//! feature store was down) only the transaction-level rules run: lists and amount. Disabled
//! rules never fire. [`RuleOutcome::fired`] lists rules in the order lists, amount, velocity,
//! travel, night.
//!
//! ## From outcome to probability
//!
//! - `floor` is the highest severity among the fired rules that are not allow-list rules
//!   (0 when none fired);
//! - `deny` is true when any deny list matched, `allow` when any allow list matched.
//!
//! The caller turns a model probability `p` into the final one as
//!
//! ```text
//! final = 1.0            if deny          (deny wins over allow)
//!       = 0.0            else if allow    (the fired rules are still reported)
//!       = max(p, floor)  otherwise
//! ```
//!
//! and [`RuleConfig::label`] maps `final` to a [`RiskLabel`] with the configured thresholds.

use std::fmt::Display;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{
    features::Features,
    scoring::RiskLabel,
    transaction::{FieldError, Transaction, identifier_problem},
};

/// Most entries one list may hold, so a rule set stays small enough to reload and scan.
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// Codes of allow-list rules start with this; they never raise the floor.
const ALLOW_PREFIX: &str = "ALLOWLIST_";

/// A complete rule set, as analysts edit it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct RuleConfig {
    /// Where the final probability turns MEDIUM and HIGH.
    pub thresholds: Thresholds,
    /// Large amounts.
    pub amount: AmountRule,
    /// Bursts of transactions on one account.
    pub velocity: VelocityRule,
    /// Two payments further apart than anyone can travel in the time between them.
    pub impossible_travel: TravelRule,
    /// A first payment to a merchant in the middle of the night.
    pub new_merchant_at_night: NightRule,
    /// Deny and allow lists.
    pub lists: Lists,
}

/// Risk-label cut-offs on the final fraud probability; `0 < medium < high <= 1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// From this probability on, a decision is MEDIUM (worth a look).
    pub medium: f64,
    /// From this probability on, a decision is HIGH (alert an analyst).
    pub high: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self { medium: 0.5, high: 0.8 }
    }
}

/// `ELEVATED_AMOUNT` / `HIGH_AMOUNT`: the amount alone, needs no features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct AmountRule {
    /// Off means the rule never fires.
    pub enabled: bool,
    /// From this amount on `ELEVATED_AMOUNT` fires; below `high`.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub medium: Decimal,
    /// From this amount on `HIGH_AMOUNT` fires instead.
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub high: Decimal,
    /// Severity of `ELEVATED_AMOUNT`, in [0, 1].
    pub medium_severity: f64,
    /// Severity of `HIGH_AMOUNT`, in [0, 1].
    pub high_severity: f64,
}

impl Default for AmountRule {
    fn default() -> Self {
        Self {
            enabled: true,
            medium: Decimal::from(1000),
            high: Decimal::from(10_000),
            medium_severity: 0.5,
            high_severity: 0.9,
        }
    }
}

/// `VELOCITY_5M` / `_1H` / `_24H`: more transactions in a window than allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct VelocityRule {
    /// Off means the rule never fires.
    pub enabled: bool,
    /// Most transactions allowed in 5 minutes, this one included.
    pub max_5m: u64,
    /// Most transactions allowed in 1 hour, this one included.
    pub max_1h: u64,
    /// Most transactions allowed in 24 hours, this one included.
    pub max_24h: u64,
    /// Severity of each window that is exceeded, in [0, 1].
    pub severity: f64,
}

impl Default for VelocityRule {
    fn default() -> Self {
        Self { enabled: true, max_5m: 5, max_1h: 10, max_24h: 50, severity: 0.6 }
    }
}

/// `IMPOSSIBLE_TRAVEL`: the account moved faster than an airliner since its last payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct TravelRule {
    /// Off means the rule never fires.
    pub enabled: bool,
    /// Speeds above this (km/h) are impossible.
    pub max_speed_kmh: f64,
    /// Shorter hops are ignored: geolocation noise over a minute looks like high speed.
    pub min_distance_km: f64,
    /// Severity when it fires, in [0, 1].
    pub severity: f64,
}

impl Default for TravelRule {
    fn default() -> Self {
        Self { enabled: true, max_speed_kmh: 900.0, min_distance_km: 100.0, severity: 0.85 }
    }
}

/// `NEW_MERCHANT_AT_NIGHT`: a first payment to a merchant between 00:00 and 05:59 local time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct NightRule {
    /// Off means the rule never fires.
    pub enabled: bool,
    /// Smaller amounts are ignored (a late taxi is not fraud).
    #[serde(with = "rust_decimal::serde::str")]
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub min_amount: Decimal,
    /// Severity when it fires, in [0, 1].
    pub severity: f64,
}

impl Default for NightRule {
    fn default() -> Self {
        Self { enabled: true, min_amount: Decimal::from(200), severity: 0.55 }
    }
}

/// Accounts, merchants and countries decided by analysts, at most [`MAX_LIST_ENTRIES`] each.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct Lists {
    /// Accounts whose every payment is fraud (`DENYLIST_ACCOUNT`).
    pub deny_accounts: Vec<String>,
    /// Merchants every payment to which is fraud (`DENYLIST_MERCHANT`).
    pub deny_merchants: Vec<String>,
    /// ISO 3166-1 alpha-2 countries, upper case, where no payment is accepted (`DENYLIST_COUNTRY`).
    pub deny_countries: Vec<String>,
    /// Accounts known to be legitimate (`ALLOWLIST_ACCOUNT`), unless a deny list matches too.
    pub allow_accounts: Vec<String>,
    /// Merchants known to be legitimate (`ALLOWLIST_MERCHANT`), unless a deny list matches too.
    pub allow_merchants: Vec<String>,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FiredRule {
    /// Stable machine-readable code, e.g. `VELOCITY_1H`.
    pub code: String,
    /// A sentence with the numbers, e.g. "12 transactions in 1 h (limit 10)".
    pub detail: String,
    /// How strongly it indicates fraud, in [0, 1].
    pub severity: f64,
}

/// What the rules say about one transaction (see the module doc for how to use it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleOutcome {
    /// Every rule that fired, in the order lists, amount, velocity, travel, night.
    pub fired: Vec<FiredRule>,
    /// Highest severity among the fired rules other than allow lists; 0 if none.
    pub floor: f64,
    /// An allow list matched.
    pub allow: bool,
    /// A deny list matched; wins over `allow`.
    pub deny: bool,
}

impl RuleConfig {
    /// Validates a rule document, reporting every problem (unknown fields at any depth,
    /// wrong types, out-of-range values, bad list entries) with its dotted path.
    pub fn parse(value: &Value) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut c = Self::default();
        let mut root = Section::open(&mut errors, "", Some(value));
        let [thresholds, amount, velocity, travel, night, lists] =
            ["thresholds", "amount", "velocity", "impossible_travel", "new_merchant_at_night", "lists"]
                .map(|key| root.take(key));
        root.finish();

        let t = &mut c.thresholds;
        let mut s = Section::open(&mut errors, "thresholds", thresholds);
        let ok = s.field("medium", &mut t.medium, cutoff);
        let ok = s.field("high", &mut t.high, cutoff) && ok;
        s.ascending(ok, ("medium", t.medium), ("high", t.high));
        s.finish();

        let a = &mut c.amount;
        let mut s = Section::open(&mut errors, "amount", amount);
        s.field("enabled", &mut a.enabled, boolean);
        let ok = s.field("medium", &mut a.medium, money);
        let ok = s.field("high", &mut a.high, money) && ok;
        s.field("medium_severity", &mut a.medium_severity, severity);
        s.field("high_severity", &mut a.high_severity, severity);
        s.ascending(ok, ("medium", a.medium), ("high", a.high));
        s.finish();

        let v = &mut c.velocity;
        let mut s = Section::open(&mut errors, "velocity", velocity);
        s.field("enabled", &mut v.enabled, boolean);
        s.field("max_5m", &mut v.max_5m, count);
        s.field("max_1h", &mut v.max_1h, count);
        s.field("max_24h", &mut v.max_24h, count);
        s.field("severity", &mut v.severity, severity);
        s.finish();

        let t = &mut c.impossible_travel;
        let mut s = Section::open(&mut errors, "impossible_travel", travel);
        s.field("enabled", &mut t.enabled, boolean);
        s.field("max_speed_kmh", &mut t.max_speed_kmh, positive);
        s.field("min_distance_km", &mut t.min_distance_km, positive);
        s.field("severity", &mut t.severity, severity);
        s.finish();

        let n = &mut c.new_merchant_at_night;
        let mut s = Section::open(&mut errors, "new_merchant_at_night", night);
        s.field("enabled", &mut n.enabled, boolean);
        s.field("min_amount", &mut n.min_amount, money);
        s.field("severity", &mut n.severity, severity);
        s.finish();

        let l = &mut c.lists;
        let mut s = Section::open(&mut errors, "lists", lists);
        s.field("deny_accounts", &mut l.deny_accounts, identifiers);
        s.field("deny_merchants", &mut l.deny_merchants, identifiers);
        s.field("deny_countries", &mut l.deny_countries, countries);
        s.field("allow_accounts", &mut l.allow_accounts, identifiers);
        s.field("allow_merchants", &mut l.allow_merchants, identifiers);
        s.finish();

        if errors.is_empty() { Ok(c) } else { Err(errors) }
    }

    /// Runs every enabled rule on one transaction. Without `features` only the
    /// transaction-level rules (lists, amount) run.
    pub fn evaluate(&self, tx: &Transaction, features: Option<&Features>) -> RuleOutcome {
        let mut fired = Vec::new();
        let l = &self.lists;
        let country = tx.country.as_deref();
        let denied = [
            on_list(&l.deny_accounts, Some(&tx.account_id), "DENYLIST_ACCOUNT", "account", "deny", 1.0),
            on_list(&l.deny_merchants, Some(&tx.merchant_id), "DENYLIST_MERCHANT", "merchant", "deny", 1.0),
            on_list(&l.deny_countries, country, "DENYLIST_COUNTRY", "country", "deny", 1.0),
        ];
        let allowed = [
            on_list(&l.allow_accounts, Some(&tx.account_id), "ALLOWLIST_ACCOUNT", "account", "allow", 0.0),
            on_list(
                &l.allow_merchants,
                Some(&tx.merchant_id),
                "ALLOWLIST_MERCHANT",
                "merchant",
                "allow",
                0.0,
            ),
        ];
        let deny = denied.iter().any(Option::is_some);
        let allow = allowed.iter().any(Option::is_some);
        fired.extend(denied.into_iter().chain(allowed).flatten());

        let a = &self.amount;
        let amount = format!("{} {}", tx.amount, tx.currency);
        if a.enabled && tx.amount >= a.high {
            fired.push(rule(
                "HIGH_AMOUNT",
                format!("amount {amount} is at least {}", a.high),
                a.high_severity,
            ));
        } else if a.enabled && tx.amount >= a.medium {
            let detail = format!("amount {amount} is at least {}", a.medium);
            fired.push(rule("ELEVATED_AMOUNT", detail, a.medium_severity));
        }

        if let Some(f) = features {
            let v = &self.velocity;
            let windows = [
                ("VELOCITY_5M", "5 min", f.tx_count_5m, v.max_5m),
                ("VELOCITY_1H", "1 h", f.tx_count_1h, v.max_1h),
                ("VELOCITY_24H", "24 h", f.tx_count_24h, v.max_24h),
            ];
            for (code, window, n, max) in windows.into_iter().filter(|&(.., n, max)| v.enabled && n > max) {
                fired.push(rule(code, format!("{n} transactions in {window} (limit {max})"), v.severity));
            }

            let t = &self.impossible_travel;
            if let (true, Some(km), Some(kmh)) = (t.enabled, f.distance_km, f.speed_kmh)
                && km >= t.min_distance_km
                && kmh > t.max_speed_kmh
            {
                let detail = format!(
                    "{km:.0} km from the previous transaction at {kmh:.0} km/h (limit {:.0} km/h)",
                    t.max_speed_kmh
                );
                fired.push(rule("IMPOSSIBLE_TRAVEL", detail, t.severity));
            }

            let n = &self.new_merchant_at_night;
            if n.enabled && f.new_merchant && f.night && tx.amount >= n.min_amount {
                let detail = format!(
                    "first payment to merchant {} at {:02}:00 local time, amount {amount} (from {})",
                    tx.merchant_id, f.hour_of_day, n.min_amount
                );
                fired.push(rule("NEW_MERCHANT_AT_NIGHT", detail, n.severity));
            }
        }

        let floor = fired
            .iter()
            .filter(|r| !r.code.starts_with(ALLOW_PREFIX))
            .map(|r| r.severity)
            .fold(0.0, f64::max);
        RuleOutcome { fired, floor, allow, deny }
    }

    /// The risk label of a final fraud probability: HIGH from `thresholds.high`, MEDIUM from
    /// `thresholds.medium`, LOW below (and for NaN).
    pub fn label(&self, probability: f64) -> RiskLabel {
        if probability >= self.thresholds.high {
            RiskLabel::High
        } else if probability >= self.thresholds.medium {
            RiskLabel::Medium
        } else {
            RiskLabel::Low
        }
    }
}

fn rule(code: &str, detail: String, severity: f64) -> FiredRule {
    FiredRule { code: code.to_owned(), detail, severity }
}

/// The fired rule for `value` if it is on `list` (`kind` = "deny" or "allow").
fn on_list(
    list: &[String],
    value: Option<&str>,
    code: &str,
    what: &str,
    kind: &str,
    severity: f64,
) -> Option<FiredRule> {
    let value = value.filter(|v| list.iter().any(|entry| entry == v))?;
    Some(rule(code, format!("{what} {value} is on the {kind} list"), severity))
}

/// Reads one field's value, reporting its problems under `path`.
type Reader<T> = fn(&mut Vec<FieldError>, &str, &Value) -> Option<T>;

/// One JSON object of the document being walked: remembers the keys it was asked for, so
/// that [`Section::finish`] can report all the others as unknown.
struct Section<'v, 'e> {
    errors: &'e mut Vec<FieldError>,
    /// Dotted path of the object; empty for the document itself.
    name: &'static str,
    /// `None` when absent or null (all defaults) or not an object (already reported).
    map: Option<&'v Map<String, Value>>,
    known: Vec<&'static str>,
}

impl<'v, 'e> Section<'v, 'e> {
    fn open(errors: &'e mut Vec<FieldError>, name: &'static str, value: Option<&'v Value>) -> Self {
        let map = match value {
            None | Some(Value::Null) => None,
            Some(Value::Object(map)) => Some(map),
            Some(_) => {
                errors.push(error(if name.is_empty() { "body" } else { name }, "must be a JSON object"));
                None
            }
        };
        Self { errors, name, map, known: Vec::new() }
    }

    fn path(&self, key: &str) -> String {
        if self.name.is_empty() { key.to_owned() } else { format!("{}.{key}", self.name) }
    }

    /// The value of `key`, unless absent or null.
    fn take(&mut self, key: &'static str) -> Option<&'v Value> {
        self.known.push(key);
        self.map.and_then(|m| m.get(key)).filter(|v| !v.is_null())
    }

    /// Reads `key` into `out` if present and valid; false if it was present and invalid.
    fn field<T>(&mut self, key: &'static str, out: &mut T, read: Reader<T>) -> bool {
        let Some(value) = self.take(key) else { return true };
        let path = self.path(key);
        read(self.errors, &path, value).map(|v| *out = v).is_some()
    }

    /// Requires `low < high` when both fields are valid (`ok`).
    fn ascending<T: PartialOrd + Display>(&mut self, ok: bool, low: (&str, T), high: (&str, T)) {
        if ok && low.1 >= high.1 {
            let reason = format!("must be greater than {} ({})", low.0, low.1);
            self.errors.push(error(&self.path(high.0), reason));
        }
    }

    fn finish(self) {
        for key in self.map.into_iter().flat_map(Map::keys).filter(|k| !self.known.contains(&k.as_str())) {
            self.errors.push(error(&self.path(key), "unknown field"));
        }
    }
}

fn error(path: &str, reason: impl Into<String>) -> FieldError {
    FieldError { field: path.to_owned(), reason: reason.into() }
}

/// Reports a problem with `path`; `None` so readers can return it.
fn fail<T>(errors: &mut Vec<FieldError>, path: &str, reason: impl Into<String>) -> Option<T> {
    errors.push(error(path, reason));
    None
}

fn boolean(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<bool> {
    value.as_bool().or_else(|| fail(errors, path, "must be true or false"))
}

/// A finite number accepted by `ok`, described by `want` in the error.
fn number(
    errors: &mut Vec<FieldError>,
    path: &str,
    value: &Value,
    ok: fn(f64) -> bool,
    want: &str,
) -> Option<f64> {
    match value.as_f64() {
        Some(x) if x.is_finite() && ok(x) => Some(x),
        _ => fail(errors, path, format!("must be {want}")),
    }
}

fn severity(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<f64> {
    number(errors, path, value, |x| (0.0..=1.0).contains(&x), "a number from 0 to 1")
}

fn cutoff(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<f64> {
    number(errors, path, value, |x| x > 0.0 && x <= 1.0, "a number greater than 0 and at most 1")
}

fn positive(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<f64> {
    number(errors, path, value, |x| x > 0.0, "a finite number greater than 0")
}

fn count(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<u64> {
    value.as_u64().filter(|&n| n >= 1).or_else(|| fail(errors, path, "must be a whole number of at least 1"))
}

/// A decimal amount > 0, as a string (preferred, exact) or a JSON number.
fn money(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<Decimal> {
    let text = match value {
        Value::String(s) => s.trim().to_owned(),
        // With serde_json's `arbitrary_precision` this is the number exactly as written.
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    };
    match Decimal::from_str_exact(&text) {
        Ok(d) if d > Decimal::ZERO => Some(d.normalize()),
        _ => fail(errors, path, "must be a decimal greater than 0, such as \"1000.00\""),
    }
}

/// An array of at most [`MAX_LIST_ENTRIES`] strings, each checked by `problem`; every bad
/// entry is reported as `path[index]`.
fn list(
    errors: &mut Vec<FieldError>,
    path: &str,
    value: &Value,
    problem: fn(&str) -> Option<String>,
) -> Option<Vec<String>> {
    let Some(items) = value.as_array() else { return fail(errors, path, "must be an array of strings") };
    if items.len() > MAX_LIST_ENTRIES {
        return fail(errors, path, format!("must have at most {MAX_LIST_ENTRIES} entries"));
    }
    let before = errors.len();
    let mut entries = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let why = match item.as_str() {
            Some(s) => problem(s).or_else(|| {
                entries.push(s.to_owned());
                None
            }),
            None => Some("must be a string".to_owned()),
        };
        errors.extend(why.map(|why| error(&format!("{path}[{i}]"), why)));
    }
    (errors.len() == before).then_some(entries)
}

fn identifiers(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<Vec<String>> {
    list(errors, path, value, identifier_problem)
}

fn countries(errors: &mut Vec<FieldError>, path: &str, value: &Value) -> Option<Vec<String>> {
    list(errors, path, value, |s| {
        let ok = s.len() == 2 && s.bytes().all(|b| b.is_ascii_uppercase());
        (!ok).then(|| "must be an ISO 3166-1 alpha-2 code in upper case, such as \"DE\"".to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;

    fn tx(amount: &str) -> Transaction {
        let body = json!({
            "transaction_id": "t-1", "account_id": "acct-1", "merchant_id": "m-1", "amount": amount,
            "currency": "EUR", "timestamp": "2026-01-01T03:00:00Z", "country": "DE"
        });
        Transaction::parse(&body, Utc::now()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn parse(value: Value) -> RuleConfig {
        RuleConfig::parse(&value).unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// The fields of every error, in order.
    fn problems(value: Value) -> Vec<String> {
        match RuleConfig::parse(&value) {
            Ok(c) => panic!("accepted {c:?}"),
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    fn codes(outcome: &RuleOutcome) -> Vec<&str> {
        outcome.fired.iter().map(|r| r.code.as_str()).collect()
    }

    fn quiet() -> Features {
        Features { tx_count_5m: 1, tx_count_1h: 1, tx_count_24h: 1, ..Features::default() }
    }

    #[test]
    fn defaults_round_trip_through_json() {
        let c = RuleConfig::default();
        let v = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(v["amount"]["medium"], json!("1000"), "decimals are strings");
        assert_eq!(serde_json::from_value::<RuleConfig>(v.clone()).ok(), Some(c.clone()));
        assert_eq!(RuleConfig::parse(&v), Ok(c));
    }

    #[test]
    fn empty_and_partial_documents_keep_defaults() {
        assert_eq!(parse(json!({})), RuleConfig::default());
        assert_eq!(parse(json!({"velocity": null})), RuleConfig::default());
        let c = parse(json!({
            "velocity": {"max_1h": 20},
            "amount": {"high": 5000, "medium": "750.50"},
            "lists": {"deny_countries": ["KP"]}
        }));
        let want = RuleConfig {
            velocity: VelocityRule { max_1h: 20, ..VelocityRule::default() },
            amount: AmountRule {
                medium: Decimal::new(75050, 2),
                high: Decimal::from(5000),
                ..AmountRule::default()
            },
            lists: Lists { deny_countries: vec!["KP".into()], ..Lists::default() },
            ..RuleConfig::default()
        };
        assert_eq!(c, want);
    }

    #[test]
    fn reports_every_bad_field_with_its_path() {
        let f = problems(json!({
            "extra": 1,
            "thresholds": {"medium": 0, "high": 1.5},
            "amount": {"enabled": "yes", "medium": "-1", "high": "abc", "medium_severity": 2, "colour": 1},
            "velocity": {"max_5m": 0, "max_1h": 2.5, "max_24h": -3, "severity": "0.5"},
            "impossible_travel": {"max_speed_kmh": 0, "min_distance_km": -1, "severity": -0.1},
            "new_merchant_at_night": {"min_amount": 0, "severity": null, "enabled": 1},
            "lists": {
                "deny_accounts": ["ok-1", "a b", 7],
                "deny_merchants": "m-1",
                "deny_countries": ["DE", "de", "DEU"],
                "allow_accounts": [""],
                "allow_merchants": ["fine"],
                "maybe": []
            }
        }));
        assert_eq!(
            f,
            [
                "extra",
                "thresholds.medium",
                "thresholds.high",
                "amount.enabled",
                "amount.medium",
                "amount.high",
                "amount.medium_severity",
                "amount.colour",
                "velocity.max_5m",
                "velocity.max_1h",
                "velocity.max_24h",
                "velocity.severity",
                "impossible_travel.max_speed_kmh",
                "impossible_travel.min_distance_km",
                "impossible_travel.severity",
                "new_merchant_at_night.enabled",
                "new_merchant_at_night.min_amount",
                "lists.deny_accounts[1]",
                "lists.deny_accounts[2]",
                "lists.deny_merchants",
                "lists.deny_countries[1]",
                "lists.deny_countries[2]",
                "lists.allow_accounts[0]",
                "lists.maybe",
            ]
        );
    }

    #[test]
    fn rejects_wrong_shapes_and_orders() {
        assert_eq!(problems(json!([])), ["body"]);
        assert_eq!(problems(json!({"amount": 5})), ["amount"]);
        assert_eq!(problems(json!({"thresholds": {"medium": 0.9}})), ["thresholds.high"]);
        assert_eq!(problems(json!({"thresholds": {"medium": 0.7, "high": 0.7}})), ["thresholds.high"]);
        assert_eq!(problems(json!({"amount": {"high": "999"}})), ["amount.high"]);
        assert_eq!(problems(json!({"amount": {"medium": "1e3"}})), ["amount.medium"]);
        assert_eq!(
            problems(json!({"lists": {"deny_accounts": vec!["a"; MAX_LIST_ENTRIES + 1]}})),
            ["lists.deny_accounts"]
        );
        let e = RuleConfig::parse(&json!({"velocity": {"max_1h": 0}})).err().unwrap_or_default();
        assert_eq!(e[0].reason, "must be a whole number of at least 1");
        assert!(RuleConfig::parse(&json!({"thresholds": {"medium": 0.1, "high": 1}})).is_ok());
        assert!(RuleConfig::parse(&json!({"lists": {"deny_accounts": vec!["a"; MAX_LIST_ENTRIES]}})).is_ok());
    }

    #[test]
    fn serde_rejects_unknown_fields_too() {
        assert!(serde_json::from_value::<RuleConfig>(json!({"velocity": {"max_2h": 1}})).is_err());
        assert!(serde_json::from_value::<RuleConfig>(json!({"other": 1})).is_err());
    }

    #[test]
    fn amount_fires_at_its_boundaries() {
        let c = RuleConfig::default();
        assert!(codes(&c.evaluate(&tx("999.99"), None)).is_empty());
        let elevated = c.evaluate(&tx("1000"), None);
        assert_eq!(codes(&elevated), ["ELEVATED_AMOUNT"]);
        assert_eq!(elevated.fired[0].detail, "amount 1000 EUR is at least 1000");
        assert_eq!(elevated.floor, 0.5);
        assert_eq!(codes(&c.evaluate(&tx("9999.99"), None)), ["ELEVATED_AMOUNT"]);
        let high = c.evaluate(&tx("10000"), None);
        assert_eq!(codes(&high), ["HIGH_AMOUNT"]);
        assert_eq!(high.floor, 0.9);
        let off = parse(json!({"amount": {"enabled": false}}));
        assert!(codes(&off.evaluate(&tx("50000"), None)).is_empty());
    }

    #[test]
    fn velocity_fires_above_each_maximum() {
        let c = RuleConfig::default();
        let at_limit = Features { tx_count_5m: 5, tx_count_1h: 10, tx_count_24h: 50, ..quiet() };
        assert!(codes(&c.evaluate(&tx("10"), Some(&at_limit))).is_empty());
        let over = Features { tx_count_5m: 6, tx_count_1h: 11, tx_count_24h: 51, ..quiet() };
        let o = c.evaluate(&tx("10"), Some(&over));
        assert_eq!(codes(&o), ["VELOCITY_5M", "VELOCITY_1H", "VELOCITY_24H"]);
        assert_eq!(o.fired[1].detail, "11 transactions in 1 h (limit 10)");
        assert_eq!(o.floor, 0.6);
        let off = parse(json!({"velocity": {"enabled": false}}));
        assert!(codes(&off.evaluate(&tx("10"), Some(&over))).is_empty());
    }

    #[test]
    fn impossible_travel_needs_distance_and_speed() {
        let c = RuleConfig::default();
        let trip = |km: f64, kmh: f64| Features { distance_km: Some(km), speed_kmh: Some(kmh), ..quiet() };
        assert!(codes(&c.evaluate(&tx("10"), Some(&trip(100.0, 900.0)))).is_empty());
        assert!(codes(&c.evaluate(&tx("10"), Some(&trip(99.9, 5000.0)))).is_empty());
        let fired = c.evaluate(&tx("10"), Some(&trip(100.0, 900.1)));
        assert_eq!(codes(&fired), ["IMPOSSIBLE_TRAVEL"]);
        assert_eq!(
            fired.fired[0].detail,
            "100 km from the previous transaction at 900 km/h (limit 900 km/h)"
        );
        assert!(codes(&c.evaluate(&tx("10"), Some(&quiet()))).is_empty(), "no location, no rule");
    }

    #[test]
    fn new_merchant_at_night_needs_all_three() {
        let c = RuleConfig::default();
        let night = Features { new_merchant: true, night: true, hour_of_day: 3, ..quiet() };
        assert_eq!(codes(&c.evaluate(&tx("200"), Some(&night))), ["NEW_MERCHANT_AT_NIGHT"]);
        assert!(codes(&c.evaluate(&tx("199.99"), Some(&night))).is_empty());
        let day = Features { night: false, ..night.clone() };
        assert!(codes(&c.evaluate(&tx("500"), Some(&day))).is_empty());
        let known = Features { new_merchant: false, ..night };
        assert!(codes(&c.evaluate(&tx("500"), Some(&known))).is_empty());
    }

    #[test]
    fn without_features_only_transaction_rules_run() {
        let c = parse(json!({"lists": {"deny_merchants": ["m-1"]}}));
        let everything = Features {
            tx_count_5m: 100,
            tx_count_1h: 100,
            tx_count_24h: 100,
            distance_km: Some(5000.0),
            speed_kmh: Some(5000.0),
            new_merchant: true,
            night: true,
            ..quiet()
        };
        let full = c.evaluate(&tx("20000"), Some(&everything));
        assert_eq!(
            codes(&full),
            [
                "DENYLIST_MERCHANT",
                "HIGH_AMOUNT",
                "VELOCITY_5M",
                "VELOCITY_1H",
                "VELOCITY_24H",
                "IMPOSSIBLE_TRAVEL",
                "NEW_MERCHANT_AT_NIGHT"
            ]
        );
        assert_eq!(codes(&c.evaluate(&tx("20000"), None)), ["DENYLIST_MERCHANT", "HIGH_AMOUNT"]);
    }

    #[test]
    fn lists_deny_and_allow() {
        let c = parse(json!({"lists": {
            "deny_countries": ["DE"], "deny_accounts": ["acct-1"],
            "allow_accounts": ["acct-1"], "allow_merchants": ["m-1"]
        }}));
        let o = c.evaluate(&tx("10"), None);
        assert_eq!(
            codes(&o),
            ["DENYLIST_ACCOUNT", "DENYLIST_COUNTRY", "ALLOWLIST_ACCOUNT", "ALLOWLIST_MERCHANT"]
        );
        assert!(o.deny && o.allow, "both reported; the caller lets deny win");
        assert_eq!(o.floor, 1.0);
        assert_eq!(o.fired[1].detail, "country DE is on the deny list");

        let allowed = parse(json!({"lists": {"allow_merchants": ["m-1"]}})).evaluate(&tx("1000"), None);
        assert_eq!(codes(&allowed), ["ALLOWLIST_MERCHANT", "ELEVATED_AMOUNT"]);
        assert!(allowed.allow && !allowed.deny);
        assert_eq!(allowed.floor, 0.5, "allow rules do not count towards the floor");

        let none = RuleConfig::default().evaluate(&tx("10"), None);
        assert_eq!((none.floor, none.allow, none.deny), (0.0, false, false));
    }

    #[test]
    fn floor_is_the_highest_severity() {
        let c = parse(json!({"velocity": {"severity": 0.95}, "amount": {"medium_severity": 0.2}}));
        let f = Features { tx_count_1h: 11, ..quiet() };
        let o = c.evaluate(&tx("1000"), Some(&f));
        assert_eq!(codes(&o), ["ELEVATED_AMOUNT", "VELOCITY_1H"]);
        assert_eq!(o.floor, 0.95);
    }

    #[test]
    fn labels_follow_the_thresholds() {
        let c = RuleConfig::default();
        assert_eq!(c.label(0.0), RiskLabel::Low);
        assert_eq!(c.label(0.499), RiskLabel::Low);
        assert_eq!(c.label(0.5), RiskLabel::Medium);
        assert_eq!(c.label(0.799), RiskLabel::Medium);
        assert_eq!(c.label(0.8), RiskLabel::High);
        assert_eq!(c.label(1.0), RiskLabel::High);
        assert_eq!(c.label(f64::NAN), RiskLabel::Low);
        let strict = parse(json!({"thresholds": {"medium": 0.3, "high": 0.6}}));
        assert_eq!(strict.label(0.3), RiskLabel::Medium);
        assert_eq!(strict.label(0.6), RiskLabel::High);
    }
}

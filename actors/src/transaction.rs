//! The payment transaction: parsed and validated once at the edge, then carried as a
//! typed value through the broker and the actor tree.

use std::str::FromStr;

use chrono::{DateTime, Duration, FixedOffset, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub mod iso;

/// Largest accepted amount, in the transaction's currency. Anything above is a unit mistake.
pub const MAX_AMOUNT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);
/// How far into the future a transaction timestamp may lie (clock skew between client and us).
pub const MAX_FUTURE_SKEW: Duration = Duration::minutes(5);
/// Upper bound on the serialised size of `metadata`, so one client cannot bloat every row.
pub const MAX_METADATA_BYTES: usize = 8 * 1024;
/// Maximum length of the identifier fields.
pub const MAX_ID_LEN: usize = 128;

/// The channel a payment came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Card present at a physical terminal.
    Pos,
    /// Online / e-commerce.
    Web,
    /// Mobile application.
    Mobile,
    /// Cash machine.
    Atm,
    /// Card not present over phone or mail order.
    Moto,
}

impl Channel {
    const ALL: [(&'static str, Channel); 5] = [
        ("pos", Channel::Pos),
        ("web", Channel::Web),
        ("mobile", Channel::Mobile),
        ("atm", Channel::Atm),
        ("moto", Channel::Moto),
    ];

    /// The wire name, as stored and serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Pos => "pos",
            Channel::Web => "web",
            Channel::Mobile => "mobile",
            Channel::Atm => "atm",
            Channel::Moto => "moto",
        }
    }
}

/// A validated payment transaction, exactly as the client described it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transaction {
    /// The client's unique id: the idempotency key of every effect downstream.
    pub transaction_id: String,
    /// The paying account; the unit of ordering and of per-account features.
    pub account_id: String,
    /// Positive decimal amount, never a float, so no cent is lost to rounding.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// ISO 4217 alphabetic code, upper case.
    pub currency: String,
    /// When the payment happened (event time), with the client's offset preserved.
    pub timestamp: DateTime<FixedOffset>,
    /// The merchant being paid.
    pub merchant_id: String,
    /// Latitude of the payment, if known (always together with `geo_lon`).
    pub geo_lat: Option<f64>,
    /// Longitude of the payment, if known (always together with `geo_lat`).
    pub geo_lon: Option<f64>,
    /// ISO 3166-1 alpha-2 country of the payment, upper case.
    pub country: Option<String>,
    /// Where the payment came from.
    pub channel: Option<Channel>,
    /// Free-form client data, kept verbatim.
    pub metadata: Option<Map<String, Value>>,
}

/// One reason a field was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldError {
    /// The JSON field name (or `body` for the document itself).
    pub field: String,
    /// Why it was rejected, in words a client developer can act on.
    pub reason: String,
}

impl FieldError {
    /// A problem with `field`.
    pub fn new(field: &str, reason: impl Into<String>) -> Self {
        Self { field: field.to_owned(), reason: reason.into() }
    }
}

/// Every field a transaction body may have.
pub const FIELDS: [&str; 11] = [
    "transaction_id",
    "account_id",
    "amount",
    "currency",
    "timestamp",
    "merchant_id",
    "geo_lat",
    "geo_lon",
    "country",
    "channel",
    "metadata",
];

impl Transaction {
    /// Parses and validates a request body. Every problem is reported, not just the first,
    /// so a client can fix its payload in one round trip.
    pub fn parse(body: &Value, now: DateTime<Utc>) -> Result<Self, Vec<FieldError>> {
        let Some(obj) = body.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors: Vec<FieldError> = obj
            .keys()
            .filter(|k| !FIELDS.contains(&k.as_str()))
            .map(|k| FieldError::new(k, "unknown field"))
            .collect();
        let mut check = Checker { obj, errors: &mut errors };

        let transaction_id = check.identifier("transaction_id");
        let account_id = check.identifier("account_id");
        let merchant_id = check.identifier("merchant_id");
        let amount = check.amount("amount");
        let currency = check.code("currency", "ISO 4217", iso::is_currency);
        let timestamp = check.timestamp("timestamp", now);
        let geo_lat = check.coordinate("geo_lat", 90.0);
        let geo_lon = check.coordinate("geo_lon", 180.0);
        let country = check
            .present("country")
            .then(|| check.code("country", "ISO 3166-1 alpha-2", iso::is_country))
            .flatten();
        let channel = check.present("channel").then(|| check.channel("channel")).flatten();
        let metadata = check.present("metadata").then(|| check.metadata("metadata")).flatten();
        if geo_lat.is_some() != geo_lon.is_some() && check.errors.is_empty() {
            check.errors.push(FieldError::new(
                if geo_lat.is_some() { "geo_lon" } else { "geo_lat" },
                "geo_lat and geo_lon must be given together",
            ));
        }

        match (transaction_id, account_id, merchant_id, amount, currency, timestamp) {
            (
                Some(transaction_id),
                Some(account_id),
                Some(merchant_id),
                Some(amount),
                Some(currency),
                Some(timestamp),
            ) if errors.is_empty() => Ok(Self {
                transaction_id,
                account_id,
                amount,
                currency,
                timestamp,
                merchant_id,
                geo_lat,
                geo_lon,
                country,
                channel,
                metadata,
            }),
            _ => Err(errors),
        }
    }

    /// Event time in UTC, the clock every window runs on.
    pub fn event_time(&self) -> DateTime<Utc> {
        self.timestamp.with_timezone(&Utc)
    }
}

/// Why `s` is not a valid identifier (transaction, account or merchant id), if it is not.
pub fn identifier_problem(s: &str) -> Option<String> {
    if s.is_empty() || s.len() > MAX_ID_LEN {
        return Some(format!("must be 1 to {MAX_ID_LEN} characters"));
    }
    if !s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')) {
        return Some("may only contain A-Z, a-z, 0-9 and - _ . :".into());
    }
    None
}

/// Walks the fields of one body, collecting errors instead of stopping at the first.
struct Checker<'a> {
    obj: &'a Map<String, Value>,
    errors: &'a mut Vec<FieldError>,
}

impl Checker<'_> {
    fn fail<T>(&mut self, field: &str, reason: impl Into<String>) -> Option<T> {
        self.errors.push(FieldError::new(field, reason));
        None
    }

    /// The field's value, or an error if it is missing or null.
    fn required(&mut self, field: &str) -> Option<&Value> {
        match self.obj.get(field) {
            None | Some(Value::Null) => {
                self.errors.push(FieldError::new(field, "is required"));
                None
            }
            Some(v) => Some(v),
        }
    }

    fn string(&mut self, field: &str) -> Option<String> {
        match self.required(field)? {
            Value::String(s) => Some(s.clone()),
            _ => self.fail(field, "must be a string"),
        }
    }

    fn identifier(&mut self, field: &str) -> Option<String> {
        let s = self.string(field)?;
        match identifier_problem(&s) {
            Some(why) => self.fail(field, why),
            None => Some(s),
        }
    }

    fn amount(&mut self, field: &str) -> Option<Decimal> {
        let text = match self.required(field)? {
            Value::String(s) => s.clone(),
            // With serde_json's `arbitrary_precision` this is the number exactly as sent.
            Value::Number(n) => n.to_string(),
            _ => return self.fail(field, "must be a decimal string or a number"),
        };
        let Ok(amount) = Decimal::from_str_exact(text.trim()) else {
            return self.fail(field, "must be a plain decimal number such as \"12.50\"");
        };
        if amount <= Decimal::ZERO {
            return self.fail(field, "must be greater than 0");
        }
        if amount.scale() > 4 && amount.normalize().scale() > 4 {
            return self.fail(field, "must have at most 4 fractional digits");
        }
        if amount > MAX_AMOUNT {
            return self.fail(field, format!("must not exceed {MAX_AMOUNT}"));
        }
        Some(amount.normalize())
    }

    /// A code from an ISO list (`standard` names it in the error).
    fn code(&mut self, field: &str, standard: &str, known: fn(&str) -> bool) -> Option<String> {
        let s = self.string(field)?;
        if !known(&s) {
            return self.fail(field, format!("must be an upper-case {standard} code"));
        }
        Some(s)
    }

    fn present(&self, field: &str) -> bool {
        !matches!(self.obj.get(field), None | Some(Value::Null))
    }

    fn timestamp(&mut self, field: &str, now: DateTime<Utc>) -> Option<DateTime<FixedOffset>> {
        let s = self.string(field)?;
        let Ok(ts) = DateTime::parse_from_rfc3339(&s) else {
            return self.fail(field, "must be an RFC 3339 timestamp with offset, e.g. 2026-01-31T12:00:00Z");
        };
        if ts.with_timezone(&Utc) > now + MAX_FUTURE_SKEW {
            return self.fail(field, "must not be more than 5 minutes in the future");
        }
        Some(ts)
    }

    fn coordinate(&mut self, field: &str, limit: f64) -> Option<f64> {
        if !self.present(field) {
            return None;
        }
        match self.obj.get(field).and_then(Value::as_f64) {
            Some(v) if v.is_finite() && (-limit..=limit).contains(&v) => Some(v),
            Some(_) => self.fail(field, format!("must be between -{limit} and {limit}")),
            None => self.fail(field, "must be a number"),
        }
    }

    fn channel(&mut self, field: &str) -> Option<Channel> {
        let s = self.string(field)?;
        match s.parse() {
            Ok(c) => Some(c),
            Err(_) => self.fail(field, "must be one of pos, web, mobile, atm, moto"),
        }
    }

    fn metadata(&mut self, field: &str) -> Option<Map<String, Value>> {
        match self.obj.get(field) {
            Some(Value::Object(m)) => {
                let size = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
                if size > MAX_METADATA_BYTES {
                    return self.fail(field, format!("must be at most {MAX_METADATA_BYTES} bytes"));
                }
                Some(m.clone())
            }
            _ => self.fail(field, "must be a JSON object"),
        }
    }
}

impl FromStr for Channel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Channel::ALL
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| format!("unknown channel {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-22T12:00:00Z")
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_default()
    }

    fn valid() -> Value {
        json!({
            "transaction_id": "tx-1",
            "account_id": "acct-1",
            "amount": "12.50",
            "currency": "EUR",
            "timestamp": "2026-11-22T11:59:00+01:00",
            "merchant_id": "m-1",
            "geo_lat": 52.52,
            "geo_lon": 13.40,
            "country": "DE",
            "channel": "web",
            "metadata": {"ip": "203.0.113.7"}
        })
    }

    fn fields(v: Value) -> Vec<String> {
        match Transaction::parse(&v, now()) {
            Ok(t) => panic!("accepted {t:?}"),
            Err(e) => e.into_iter().map(|e| e.field).collect(),
        }
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = valid();
        v[key] = value;
        v
    }

    #[test]
    fn accepts_a_complete_body() {
        let t = Transaction::parse(&valid(), now()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(t.amount, Decimal::new(125, 1));
        assert_eq!(t.channel, Some(Channel::Web));
        assert_eq!(t.event_time().to_rfc3339(), "2026-11-22T10:59:00+00:00");
    }

    #[test]
    fn optional_fields_may_be_absent_or_null() {
        let mut v = valid();
        for k in ["geo_lat", "geo_lon", "country", "channel", "metadata"] {
            v.as_object_mut().map(|o| o.remove(k));
        }
        v["country"] = Value::Null;
        let t = Transaction::parse(&v, now()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((t.geo_lat, t.country, t.channel), (None, None, None));
    }

    #[test]
    fn names_every_bad_field() {
        let v = json!({"transaction_id": "", "amount": -1, "currency": "eur", "extra": 1});
        let f = fields(v);
        for want in
            ["extra", "transaction_id", "account_id", "merchant_id", "amount", "currency", "timestamp"]
        {
            assert!(f.contains(&want.to_owned()), "{want} missing from {f:?}");
        }
    }

    #[test]
    fn rejects_out_of_range_values() {
        assert_eq!(fields(with("amount", json!("0"))), ["amount"]);
        assert_eq!(fields(with("amount", json!("1.23456"))), ["amount"]);
        assert_eq!(fields(with("amount", json!("1e3"))), ["amount"]);
        assert_eq!(fields(with("amount", json!("2000000000"))), ["amount"]);
        assert_eq!(fields(with("amount", json!(true))), ["amount"]);
        assert_eq!(fields(with("geo_lat", json!(91))), ["geo_lat"]);
        assert_eq!(fields(with("geo_lon", json!("east"))), ["geo_lon"]);
        assert_eq!(fields(with("country", json!("DEU"))), ["country"]);
        assert_eq!(fields(with("country", json!("UK"))), ["country"]);
        assert_eq!(fields(with("currency", json!("EUX"))), ["currency"]);
        assert_eq!(fields(with("currency", json!("eur"))), ["currency"]);
        assert_eq!(fields(with("channel", json!("fax"))), ["channel"]);
        assert_eq!(fields(with("metadata", json!([1]))), ["metadata"]);
        assert_eq!(fields(with("timestamp", json!("yesterday"))), ["timestamp"]);
        assert_eq!(fields(with("timestamp", json!("2026-11-22T12:00:00"))), ["timestamp"]);
        assert_eq!(fields(with("timestamp", json!("2026-11-22T13:00:00Z"))), ["timestamp"]);
        assert_eq!(fields(with("account_id", json!("a b"))), ["account_id"]);
        assert_eq!(fields(with("account_id", json!("x".repeat(129)))), ["account_id"]);
        assert_eq!(fields(json!([1, 2])), ["body"]);
    }

    #[test]
    fn geo_comes_in_pairs() {
        let mut v = valid();
        v.as_object_mut().map(|o| o.remove("geo_lon"));
        assert_eq!(fields(v), ["geo_lon"]);
    }

    #[test]
    fn numeric_amounts_keep_their_exact_digits() {
        let v: Value =
            serde_json::from_str(&valid().to_string().replace("\"12.50\"", "0.1234")).unwrap_or_default();
        let t = Transaction::parse(&v, now()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(t.amount.to_string(), "0.1234");
        let v: Value =
            serde_json::from_str(&valid().to_string().replace("\"12.50\"", "0.12345678901234567891"))
                .unwrap_or_default();
        assert!(Transaction::parse(&v, now()).is_err());
    }

    #[test]
    fn round_trips_through_json() {
        let t = Transaction::parse(&valid(), now()).unwrap_or_else(|e| panic!("{e:?}"));
        let back: Transaction = serde_json::from_value(serde_json::to_value(&t).unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, t);
    }
}

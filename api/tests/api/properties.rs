//! Property test: whatever is wrong with a body, the answer is a 4xx problem and nothing is
//! published.

use proptest::{
    prelude::*,
    test_runner::{Config, TestRunner},
};
use serde_json::{Value, json};

use fraudsense_actors::transaction::FIELDS;

use crate::helpers::{spawn_app_with, transaction};

/// One way of breaking an otherwise valid body, applied to its JSON text.
#[derive(Debug, Clone)]
enum Breakage {
    Remove(&'static str),
    Set(&'static str, Value),
    Unknown(String, Value),
    Duplicate(&'static str),
    NotJson(Vec<u8>),
}

const REQUIRED: [&str; 6] =
    ["transaction_id", "account_id", "amount", "currency", "timestamp", "merchant_id"];
/// Fields whose value must be a string.
fn string_fields() -> Vec<&'static str> {
    FIELDS.iter().copied().filter(|f| !f.starts_with("geo_") && *f != "metadata").collect()
}

fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(|n| json!([n])),
        Just(json!({"nested": true})),
    ]
}

fn breakage() -> impl Strategy<Value = Breakage> {
    prop_oneof![
        proptest::sample::select(REQUIRED.to_vec()).prop_map(Breakage::Remove),
        (proptest::sample::select(string_fields()), wrong_type()).prop_map(|(f, v)| Breakage::Set(f, v)),
        // Amounts that are not positive decimals with at most 4 places below 1e9.
        prop_oneof![
            (-1_000_000i64..=0).prop_map(|n| json!(n.to_string())),
            (1u32..1000, 5u32..12)
                .prop_map(|(n, places)| json!(format!("{n}.{}", "7".repeat(places as usize)))),
            Just(json!("1e3")),
            Just(json!("1000000000.0001")),
            "[a-z ]{1,10}".prop_map(Value::from),
        ]
        .prop_map(|v| Breakage::Set("amount", v)),
        "[A-Z]{3}"
            .prop_filter("not a currency", |c| !fraudsense_actors::transaction::iso::is_currency(c))
            .prop_map(|c| Breakage::Set("currency", json!(c))),
        "[A-Z]{2}"
            .prop_filter("not a country", |c| !fraudsense_actors::transaction::iso::is_country(c))
            .prop_map(|c| Breakage::Set("country", json!(c))),
        prop_oneof![
            Just(json!("2030-01-01T00:00:00Z")),
            Just(json!("2026-11-01T10:00:00")),
            Just(json!("01/11/2026")),
            "[0-9T:-]{1,20}".prop_map(Value::from),
        ]
        .prop_map(|v| Breakage::Set("timestamp", v)),
        (90.0001f64..1e6).prop_map(|v| Breakage::Set("geo_lat", json!(v))),
        (180.0001f64..1e6).prop_map(|v| Breakage::Set("geo_lon", json!(-v))),
        Just(Breakage::Remove("geo_lon")),
        "[a-z]{1,12}"
            .prop_filter("not a channel", |c| c.parse::<fraudsense_actors::transaction::Channel>().is_err())
            .prop_map(|c| Breakage::Set("channel", json!(c))),
        prop_oneof![Just(json!("text")), Just(json!([1])), Just(json!({"pad": "x".repeat(9000)}))]
            .prop_map(|v| Breakage::Set("metadata", v)),
        prop_oneof![
            Just(String::new()),
            "[ /#?%]{1,5}".prop_map(|s| format!("id{s}")),
            Just("x".repeat(129))
        ]
        .prop_map(|s| Breakage::Set("transaction_id", json!(s))),
        ("[a-z_]{1,12}", wrong_type())
            .prop_filter("unknown name", |(k, _)| !FIELDS.contains(&k.as_str()))
            .prop_map(|(k, v)| Breakage::Unknown(k, v)),
        proptest::sample::select(REQUIRED.to_vec()).prop_map(Breakage::Duplicate),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_filter("not JSON", |b| serde_json::from_slice::<Value>(b).is_err())
            .prop_map(Breakage::NotJson),
    ]
}

fn apply(breakage: &Breakage, n: u64) -> Vec<u8> {
    let mut body = transaction(&format!("prop-{n}"), "12.34");
    match breakage {
        Breakage::Remove(field) => {
            body.as_object_mut().map(|o| o.remove(*field));
        }
        Breakage::Set(field, value) => body[*field] = value.clone(),
        Breakage::Unknown(field, value) => body[field.as_str()] = value.clone(),
        Breakage::Duplicate(field) => {
            let text = body.to_string();
            let extra = format!("{{\"{field}\":{},", body[*field]);
            return text.replacen('{', &extra, 1).into_bytes();
        }
        Breakage::NotJson(bytes) => return bytes.clone(),
    }
    body.to_string().into_bytes()
}

#[test]
fn any_invalid_body_gets_a_4xx_problem_and_publishes_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap_or_else(|e| panic!("{e}"));
    let app = runtime.block_on(spawn_app_with(|s| s.http.rate_limit = 100_000));
    // Control: the harness does see a valid body published.
    let control = runtime.block_on(app.post_json(&transaction("prop-control", "12.34")));
    assert_eq!(control.status().as_u16(), 202);
    let mut runner = TestRunner::new(Config { cases: 192, failure_persistence: None, ..Config::default() });
    let n = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&breakage(), |breakage| {
        let body = apply(&breakage, n.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        let (status, content_type) = runtime.block_on(async {
            let r = app.post_raw(body, "application/json").await;
            let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (r.status().as_u16(), ct)
        });
        prop_assert!((400..500).contains(&status), "{breakage:?} got {status}");
        prop_assert_eq!(content_type.as_deref(), Some("application/problem+json"));
        Ok(())
    });
    let published = runtime.block_on(app.queued());
    runtime.block_on(app.teardown());
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert_eq!(published, 1, "only the control may be published");
}

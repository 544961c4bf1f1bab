//! The event contract (`actors/schemas`): what the api and the worker put on the broker
//! validates against the JSON Schema kept in the repository, every committed decision is
//! announced as `transaction.scored` before its delivery is acked, and messages written by
//! earlier producers of the same version (`actors/schemas/examples`) still validate and
//! decode, so a change that breaks consumers fails here.

use std::path::PathBuf;

use futures_util::StreamExt;
use jsonschema::{Registry, Validator};
use lapin::options::BasicAckOptions;
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, spawn_api_only, spawn_pipeline, tap, transaction};

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../actors/schemas")
}

fn read_json(path: PathBuf) -> Value {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The validator of `name` (e.g. `transaction.scored.v1`), offline, formats checked, with
/// every schema of the directory registered so cross-file `$ref`s resolve.
fn validator(name: &str) -> Validator {
    let all = ["transaction.created.v1", "transaction.scored.v1", "alert.created.v1"];
    let mut registry = Registry::new();
    for schema in all {
        let doc = read_json(schemas_dir().join(format!("{schema}.json")));
        let id = doc["$id"].as_str().unwrap_or_else(|| panic!("{schema} has no $id")).to_owned();
        registry = registry.add(id, doc).unwrap_or_else(|e| panic!("{schema}: {e}"));
    }
    let registry = registry.prepare().unwrap_or_else(|e| panic!("registry: {e}"));
    let schema = read_json(schemas_dir().join(format!("{name}.json")));
    jsonschema::options()
        .should_validate_formats(true)
        .with_registry(&registry)
        .build(&schema)
        .unwrap_or_else(|e| panic!("{name} is not a valid schema: {e}"))
}

fn assert_valid(validator: &Validator, what: &str, message: &Value) {
    let errors: Vec<String> =
        validator.iter_errors(message).map(|e| format!("{} at {}", e, e.instance_path())).collect();
    assert!(errors.is_empty(), "{what} does not match its schema: {errors:?}\n{message:#}");
}

/// The next message's body and its AMQP `type` property.
async fn next(consumer: &mut lapin::Consumer, what: &str) -> (Vec<u8>, Option<String>) {
    let delivery = tokio::time::timeout(DEADLINE, consumer.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
        .unwrap_or_else(|| panic!("consumer closed"))
        .unwrap_or_else(|e| panic!("{e}"));
    delivery.ack(BasicAckOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
    let kind = delivery.properties.kind().as_ref().map(ToString::to_string);
    (delivery.data, kind)
}

/// `a` and `b` hold the same values, numbers compared as `f64`.
fn assert_same(a: &Value, b: &Value, at: &str) {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            assert_eq!(x.as_f64(), y.as_f64(), "{at}: {x} ≠ {y}");
        }
        (Value::Object(x), Value::Object(y)) => {
            let keys = |m: &serde_json::Map<String, Value>| {
                let mut k: Vec<String> = m.keys().cloned().collect();
                k.sort();
                k
            };
            assert_eq!(keys(x), keys(y), "{at}: keys differ");
            for (key, value) in x {
                assert_same(value, &y[key], &format!("{at}.{key}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{at}: lengths differ");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_same(v, w, &format!("{at}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{at}"),
    }
}

fn parse(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
}

#[tokio::test]
async fn the_api_publishes_transaction_created_as_its_schema_says() {
    let p = spawn_api_only().await;
    let exchange = p.env.topology().transactions_exchange;
    let (mut consumer, _conn) =
        tap(&p.env, &exchange, fraudsense_actors::topology::TRANSACTION_CREATED).await;
    let full = json!({
        "transaction_id": "ct-full", "account_id": "acct-ct", "amount": "129.90", "currency": "EUR",
        "timestamp": "2026-11-20T09:00:00+01:00", "merchant_id": "mer-ct", "geo_lat": 48.8566,
        "geo_lon": 2.3522, "country": "FR", "channel": "web", "metadata": { "device": "ios" }
    });
    let minimal = transaction("ct-min", "acct-ct", "5", "2026-11-20T09:01:00Z");
    let schema = validator("transaction.created.v1");
    for body in [&full, &minimal] {
        assert_eq!(p.post(body).await, 202);
        let (bytes, _) = next(&mut consumer, "transaction.created").await;
        let message = parse(&bytes);
        assert_valid(&schema, "transaction.created", &message);
        assert_eq!(message["transaction"]["transaction_id"], body["transaction_id"]);
        assert_eq!(&message["raw"], body, "the raw body travels unchanged");
        // What the worker consumes: the same bytes decode.
        let decoded = fraudsense_actors::TransactionCreated::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(decoded.transaction.account_id, "acct-ct");
    }
    p.teardown().await;
}

#[tokio::test]
async fn every_committed_decision_is_announced_as_transaction_scored_before_its_ack() {
    let p = spawn_pipeline().await;
    let topology = p.env.topology();
    let (mut scored, _c1) =
        tap(&p.env, &topology.transactions_exchange, fraudsense_actors::scored::TRANSACTION_SCORED).await;
    let (mut alerts, _c2) = tap(&p.env, &topology.alerts_exchange, "alert.#").await;
    let schema = validator("transaction.scored.v1");
    let alert_schema = validator("alert.created.v1");

    let low = transaction("sc-low", "acct-sc", "25", "2026-11-20T09:00:00Z");
    let high = transaction("sc-high", "acct-sc", "25000", "2026-11-20T09:05:00Z");
    let mut seen = Vec::new();
    for body in [&low, &high] {
        assert_eq!(p.post(body).await, 202);
        let (bytes, kind) = next(&mut scored, "transaction.scored").await;
        assert_eq!(kind.as_deref(), Some("transaction.scored"));
        let event = parse(&bytes);
        assert_valid(&schema, "transaction.scored", &event);
        let decoded =
            fraudsense_actors::events::TransactionScored::decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(!decoded.redelivered);
        // The event carries the decision of record.
        let view = p.scored(body["transaction_id"].as_str().unwrap_or_default()).await;
        assert_eq!(event["transaction"]["transaction_id"], body["transaction_id"]);
        // Numbers are compared as numbers: PostgreSQL's JSONB writes 8.4e-05 where Rust
        // writes 0.000084.
        assert_same(&event["decision"]["score"], &view["score"]["score"], "score");
        assert_eq!(event["decision"]["risk_label"], view["score"]["risk_label"]);
        assert_eq!(event["decision"]["model_version"], view["score"]["model_version"]);
        assert_same(&event["decision"]["features"], &view["score"]["features"], "features");
        seen.push((event, view));
    }
    let (low_event, _) = &seen[0];
    let (high_event, high_view) = &seen[1];
    assert_eq!(low_event["alert_id"], Value::Null);
    assert_eq!(high_event["decision"]["risk_label"], "HIGH");
    assert_eq!(high_event["alert_id"], high_view["alerts"][0]["alert_id"], "the alert it raised");

    let (bytes, _) = next(&mut alerts, "alert").await;
    let alert = parse(&bytes);
    assert_valid(&alert_schema, "alert.created", &alert);
    assert_eq!(
        (alert["transaction_id"].as_str(), &alert["alert_id"]),
        (Some("sc-high"), &high_event["alert_id"])
    );

    // A redelivery (the broker handing the same transaction over again) is announced again,
    // marked, with no second alert.
    p.publish_direct(&high).await;
    let (bytes, _) = next(&mut scored, "the redelivered transaction.scored").await;
    let again = parse(&bytes);
    assert_valid(&schema, "redelivered transaction.scored", &again);
    assert_eq!(
        (again["transaction"]["transaction_id"].as_str(), again["redelivered"].as_bool()),
        (Some("sc-high"), Some(true))
    );
    assert_eq!(again["alert_id"], Value::Null);
    assert_eq!(p.count("SELECT count(*) FROM alerts WHERE transaction_id = $1", "sc-high").await, 1);
    assert!(p.worker_metric("transactions_scored_published_total").await >= 3.0);
    p.teardown().await;
}

#[tokio::test]
async fn with_publish_scored_off_decisions_are_acked_without_an_event() {
    let mut p = crate::helpers::spawn_api_only().await;
    let mut settings = p.env.settings.clone();
    settings.amqp.publish_scored = false;
    p.start_worker_with(settings).await;
    let topology = p.env.topology();
    let (mut scored, _c) =
        tap(&p.env, &topology.transactions_exchange, fraudsense_actors::scored::TRANSACTION_SCORED).await;
    assert_eq!(p.post(&transaction("off-1", "acct-off", "25", "2026-11-20T09:00:00Z")).await, 202);
    p.scored("off-1").await;
    // Acked (the queue drains) and nothing announced.
    fraudsense_actors::testing::eventually(DEADLINE, "the delivery acked", || async {
        Ok((p.worker_metric("transactions_processed_total").await >= 1.0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(500), scored.next()).await.is_err());
    p.teardown().await;
}

#[test]
fn messages_of_earlier_producers_still_validate_and_decode() {
    let examples = |name: &str| -> Vec<Value> {
        read_json(schemas_dir().join(format!("examples/{name}.json")))
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("examples/{name}.json is not an array"))
    };
    let created = validator("transaction.created.v1");
    for example in examples("transaction.created.v1") {
        assert_valid(&created, "example transaction.created", &example);
        let bytes = serde_json::to_vec(&example).unwrap_or_default();
        fraudsense_actors::TransactionCreated::decode(&bytes).unwrap_or_else(|e| panic!("{e}: {example}"));
    }
    let scored = validator("transaction.scored.v1");
    for example in examples("transaction.scored.v1") {
        assert_valid(&scored, "example transaction.scored", &example);
        let bytes = serde_json::to_vec(&example).unwrap_or_default();
        fraudsense_actors::events::TransactionScored::decode(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {example}"));
    }
    let alert = validator("alert.created.v1");
    for example in examples("alert.created.v1") {
        assert_valid(&alert, "example alert", &example);
        serde_json::from_value::<fraudsense_actors::outbox::AlertEvent>(example.clone())
            .unwrap_or_else(|e| panic!("{e}: {example}"));
    }
    // The check has teeth: a renamed field, a wrong type or another version is refused.
    let mut broken = examples("transaction.created.v1").remove(0);
    broken["transaction"]["amount"] = json!(129.9);
    assert!(!created.is_valid(&broken), "a float amount must be refused");
    let mut renamed = examples("transaction.scored.v1").remove(0);
    if let Some(decision) = renamed.as_object_mut() {
        let d = decision.remove("decision").unwrap_or_default();
        decision.insert("verdict".into(), d);
    }
    assert!(!scored.is_valid(&renamed), "a renamed required field must be refused");
    let mut v2 = examples("transaction.scored.v1").remove(0);
    v2["schema_version"] = json!(2);
    assert!(!scored.is_valid(&v2));
    let bytes = serde_json::to_vec(&v2).unwrap_or_default();
    assert!(fraudsense_actors::events::TransactionScored::decode(&bytes).is_err());
}

use std::time::{Duration, Instant};

use fraudsense_actors::TransactionCreated;
use fraudsense_actors::testing::TestEnv;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::helpers::{problem, spawn_app, spawn_app_on, spawn_app_with, transaction};

#[tokio::test]
async fn an_accepted_transaction_is_a_confirmed_persistent_message() {
    let app = spawn_app().await;
    let body = transaction("tx-accept-1", "12.34");
    let response = app.post_json(&body).await;
    assert_eq!(response.status().as_u16(), 202);
    let answer: Value = response.json().await.unwrap_or_default();
    assert_eq!(answer, json!({"transaction_id": "tx-accept-1", "status": "queued"}));

    // The 202 came after the confirm, so the message is already on the durable queue.
    assert_eq!(app.queued().await, 1, "one message, on the shard its account hashes to");
    let delivery =
        app.env.take_one_transaction(Duration::from_secs(10)).await.unwrap_or_else(|e| panic!("{e:#}"));
    let message = delivery.unwrap_or_else(|| panic!("no message on any shard"));
    let props = &message.properties;
    assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("tx-accept-1"));
    assert_eq!(*props.delivery_mode(), Some(2), "must be persistent");
    assert_eq!(message.routing_key.as_str(), "transaction.created");
    let event = TransactionCreated::decode(&message.data).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(event.schema_version, 1);
    assert_eq!(event.raw, body, "the raw payload travels verbatim");
    assert_eq!(event.transaction.amount.to_string(), "12.34");
    app.teardown().await;
}

#[tokio::test]
async fn bad_input_is_a_problem_naming_the_field_and_publishes_nothing() {
    let app = spawn_app().await;
    let with = |key: &str, value: Value| {
        let mut b = transaction("tx-bad", "10");
        b[key] = value;
        b
    };
    let without = |key: &str| {
        let mut b = transaction("tx-bad", "10");
        b.as_object_mut().map(|o| o.remove(key));
        b
    };
    let cases: Vec<(Value, &str)> = vec![
        (without("account_id"), "account_id"),
        (without("amount"), "amount"),
        (with("amount", json!("-5")), "amount"),
        (with("amount", json!([1])), "amount"),
        (with("currency", json!(978)), "currency"),
        (with("timestamp", json!("last tuesday")), "timestamp"),
        (with("geo_lat", json!(123.0)), "geo_lat"),
        (with("channel", json!("carrier-pigeon")), "channel"),
        (with("surprise", json!(1)), "surprise"),
    ];
    for (body, field) in cases {
        let p = problem(app.post_json(&body).await, 422).await;
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
            .unwrap_or_default();
        assert!(fields.contains(&field), "{field} not named in {p}");
    }

    let p = problem(app.post_raw("{\"transaction_id\": ", "application/json").await, 400).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("JSON")), "{p}");
    problem(app.post_raw(vec![0xff, 0xfe, b'{'], "application/json").await, 400).await;
    problem(app.post_raw("[1,2]", "application/json").await, 422).await;
    problem(app.post_raw(transaction("tx-bad", "10").to_string(), "text/plain").await, 415).await;
    let huge = json!({"transaction_id": "x", "metadata": {"pad": "a".repeat(70 * 1024)}});
    problem(app.post_json(&huge).await, 413).await;

    assert_eq!(app.queued().await, 0, "nothing may be published for bad input");
    app.teardown().await;
}

#[tokio::test]
async fn an_unknown_transaction_is_a_404_problem() {
    let app = spawn_app().await;
    let p = problem(app.get("/transactions/never-seen").await, 404).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("not found")));
    app.teardown().await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_fast_503_with_retry_after_and_not_ready() {
    // Port 1 on loopback: nothing listens, so every connect is refused.
    let app = spawn_app_with(|s| {
        s.amqp.url = SecretString::from("amqp://guest:guest@127.0.0.1:1/%2f");
    })
    .await;
    let started = Instant::now();
    let response = app.post_json(&transaction("tx-outage-1", "10")).await;
    assert!(started.elapsed() < Duration::from_secs(10), "must answer within a bounded time");
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    assert!(retry_after.is_some_and(|s| s > 0), "Retry-After missing");
    let p = problem(response, 503).await;
    assert!(!p["detail"].as_str().unwrap_or_default().contains("127.0.0.1"), "5xx must not leak internals");

    let ready = app.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await.unwrap_or_default();
    assert_eq!(body["checks"]["rabbitmq"], "down");
    assert_eq!(body["checks"]["postgres"], "up");
    assert_eq!(app.get("/health").await.status().as_u16(), 200, "the api stays up");
    app.teardown().await;
}

#[tokio::test]
async fn a_broker_that_stops_confirming_is_a_bounded_503_and_the_api_recovers_by_itself() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, mut settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    settings.amqp.confirm_timeout = Duration::from_millis(500);
    let app = spawn_app_on(env, settings).await;
    assert_eq!(app.post_json(&transaction("tx-chaos-1", "10")).await.status().as_u16(), 202);

    // Stalled: the connection looks alive but no confirm ever comes back.
    proxy.stall();
    let started = Instant::now();
    let response = app.post_json(&transaction("tx-chaos-2", "10")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "503 must come within a bounded time");
    assert!(response.headers().contains_key("retry-after"));
    problem(response, 503).await;
    let ready = app.get("/ready").await;
    assert_eq!(ready.status().as_u16(), 503, "an unconfirming broker is reported by /ready");
    proxy.resume();

    // Cut: the connection is gone; the api reconnects on its own (bounded polling).
    proxy.cut_connections();
    let mut statuses = Vec::new();
    for attempt in 0..200 {
        let id = format!("tx-chaos-r{attempt}");
        let status = app.post_json(&transaction(&id, "10")).await.status().as_u16();
        statuses.push(status);
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses.last(), Some(&202), "never recovered: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 202 || *s == 503), "only 202 or 503 allowed: {statuses:?}");
    assert_eq!(app.get("/ready").await.status().as_u16(), 200, "ready again once confirms flow");

    // Cut again and send nothing at all: the watchdog reconnects on its own.
    proxy.cut_connections();
    fraudsense_actors::testing::eventually(Duration::from_secs(10), "the connection to drop", || async {
        Ok((!app.publisher.connected()).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    fraudsense_actors::testing::eventually(
        Duration::from_secs(15),
        "a reconnect without traffic",
        || async { Ok(app.publisher.connected().then_some(())) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(app.get("/health").await.status().as_u16(), 200);
    app.teardown().await;
}

#[tokio::test]
async fn confirms_are_pipelined_many_publishes_wait_on_one_channel_at_once() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, mut settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    settings.amqp.confirm_timeout = Duration::from_secs(20);
    settings.http.request_timeout = Duration::from_secs(25);
    let app = std::sync::Arc::new(spawn_app_on(env, settings).await);
    assert_eq!(app.post_json(&transaction("pipe-0", "1")).await.status().as_u16(), 202);

    // While the broker's answers are held back, 16 requests all publish and all wait.
    proxy.stall();
    let mut requests = Vec::new();
    for i in 1..=16 {
        let app = app.clone();
        requests.push(tokio::spawn(async move {
            let mut body = transaction(&format!("pipe-{i}"), "1");
            body["account_id"] = json!(format!("acct-{i}"));
            app.post_json(&body).await.status().as_u16()
        }));
    }
    fraudsense_actors::testing::eventually(Duration::from_secs(10), "16 confirms in flight", || async {
        Ok((app.publisher.in_flight() == 16).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    proxy.resume();
    for r in requests {
        assert_eq!(r.await.unwrap_or(0), 202);
    }
    assert_eq!(app.publisher.in_flight(), 0);
    assert_eq!(app.queued().await, 17);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.teardown().await,
        Err(_) => panic!("requests still hold the app"),
    }
}

#[tokio::test]
async fn requests_beyond_the_in_flight_limit_are_shed_with_503() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, mut settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    settings.http.max_in_flight = 1;
    settings.amqp.confirm_timeout = Duration::from_secs(20);
    settings.http.request_timeout = Duration::from_secs(25);
    let app = std::sync::Arc::new(spawn_app_on(env, settings).await);
    assert_eq!(app.post_json(&transaction("shed-0", "1")).await.status().as_u16(), 202);

    proxy.stall();
    let holder = {
        let app = app.clone();
        tokio::spawn(async move { app.post_json(&transaction("shed-1", "1")).await.status().as_u16() })
    };
    fraudsense_actors::testing::eventually(Duration::from_secs(10), "one request in flight", || async {
        Ok((app.publisher.in_flight() == 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // The process is at capacity: the next request is refused at once, not queued.
    let shed = app.get("/health").await;
    assert!(shed.headers().contains_key("retry-after"));
    let p = problem(shed, 503).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("capacity")), "{p}");
    proxy.resume();
    assert_eq!(holder.await.unwrap_or(0), 202);
    assert_eq!(app.get("/health").await.status().as_u16(), 200);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.teardown().await,
        Err(_) => panic!("requests still hold the app"),
    }
}

#[tokio::test]
async fn a_request_that_outlives_its_timeout_is_a_503_and_its_retry_succeeds() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, mut settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    settings.amqp.confirm_timeout = Duration::from_secs(20);
    settings.http.request_timeout = Duration::from_millis(400);
    let app = spawn_app_on(env, settings).await;
    proxy.stall();
    let p = problem(app.post_json(&transaction("slow-1", "1")).await, 503).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("too long")), "{p}");
    proxy.resume();
    // The abandoned claim is short-lived, so a retry is not locked out for the full TTL.
    let mut last = 0;
    for _ in 0..100 {
        last = app.post_json(&transaction("slow-1", "1")).await.status().as_u16();
        if last == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last, 202);
    app.teardown().await;
}

#[tokio::test]
async fn a_blocked_broker_is_a_fast_503_and_not_ready_until_unblocked() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    let app = spawn_app_on(env, settings).await;
    assert_eq!(app.post_json(&transaction("blk-0", "1")).await.status().as_u16(), 202);

    // The broker raises a resource alarm: it sends connection.blocked and would hold every
    // publish. The api must refuse at once instead of hanging.
    proxy.block("low on memory");
    let not_ready =
        fraudsense_actors::testing::eventually(Duration::from_secs(10), "/ready to fail", || async {
            let r = app.get("/ready").await;
            Ok((r.status().as_u16() == 503).then_some(r))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let body: Value = not_ready.json().await.unwrap_or_default();
    assert_eq!(body["checks"]["rabbitmq"], "down");
    let started = Instant::now();
    let refused = app.post_json(&transaction("blk-1", "1")).await;
    assert!(started.elapsed() < Duration::from_secs(2), "a blocked broker must not make requests wait");
    assert!(refused.headers().contains_key("retry-after"));
    problem(refused, 503).await;

    proxy.unblock();
    fraudsense_actors::testing::eventually(Duration::from_secs(10), "/ready to recover", || async {
        Ok((app.get("/ready").await.status().as_u16() == 200).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(app.post_json(&transaction("blk-1", "1")).await.status().as_u16(), 202);
    assert_eq!(app.queued().await, 2);
    app.teardown().await;
}

#[tokio::test]
async fn transactions_spread_over_the_shards_and_one_account_stays_on_one() {
    let app = spawn_app().await;
    let shards = app.env.topology().shard_queues;
    let counts = async || {
        let mut counts = Vec::new();
        for q in &shards {
            counts.push(app.env.ready_messages(q).await.unwrap_or_else(|e| panic!("{e:#}")));
        }
        counts
    };
    for i in 0..40 {
        let mut body = transaction(&format!("spread-{i}"), "1");
        body["account_id"] = json!(format!("acct-spread-{i}"));
        assert_eq!(app.post_json(&body).await.status().as_u16(), 202);
    }
    let spread = counts().await;
    assert_eq!(spread.iter().sum::<u32>(), 40);
    assert!(spread.iter().filter(|c| **c > 0).count() >= shards.len() / 2, "poorly spread: {spread:?}");

    for i in 0..6 {
        let mut body = transaction(&format!("same-{i}"), "1");
        body["account_id"] = json!("acct-one-owner");
        assert_eq!(app.post_json(&body).await.status().as_u16(), 202);
    }
    let after = counts().await;
    let grew: Vec<u32> = after.iter().zip(&spread).map(|(a, b)| a - b).filter(|d| *d > 0).collect();
    assert_eq!(grew, [6], "one account's transactions all go to one shard: {spread:?} -> {after:?}");
    app.teardown().await;
}

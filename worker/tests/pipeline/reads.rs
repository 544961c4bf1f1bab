use fred::interfaces::KeysInterface;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{spawn_pipeline, transaction};

async fn status_and_body(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn labels_are_recorded_once_and_conflicts_are_refused() {
    let p = spawn_pipeline().await;
    assert_eq!(p.post(&transaction("lab-1", "acct-lab", "70", "2026-11-20T09:00:00Z")).await, 202);
    p.scored("lab-1").await;
    let post = async |path: &str, body: Value| {
        status_and_body(p.request(Method::POST, path, Some(&body)).await).await
    };
    let (status, first) =
        post("/transactions/lab-1/label", json!({"label": "fraud", "source": "chargeback"})).await;
    assert_eq!(status, 201);
    assert_eq!((first["label"].as_str(), first["source"].as_str()), (Some("fraud"), Some("chargeback")));
    let (status, again) = post("/transactions/lab-1/label", json!({"label": "fraud"})).await;
    assert_eq!(status, 200, "the same label again is an idempotent success");
    assert_eq!(again["labeled_at"], first["labeled_at"]);
    let (status, problem) = post("/transactions/lab-1/label", json!({"label": "legit"})).await;
    assert_eq!(status, 409);
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("fraud")), "{problem}");
    let (status, problem) = post("/transactions/lab-1/label", json!({"label": "maybe", "extra": 1})).await;
    assert_eq!(status, 422);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["extra", "label"]);
    assert_eq!(post("/transactions/never-seen/label", json!({"label": "fraud"})).await.0, 404);
    assert_eq!(p.count("SELECT count(*) FROM labels WHERE transaction_id = $1", "lab-1").await, 1);
    // The label also feeds the merchant's risk rate, once.
    let redis =
        fraudsense_actors::connect_redis(&p.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let prefix = &p.env.settings.redis.key_prefix;
    use fred::interfaces::SortedSetsInterface;
    let labels: i64 = redis.zcard(format!("{prefix}merch:{{merchant-7}}:lab")).await.unwrap_or(-1);
    let fraud: i64 = redis.zcard(format!("{prefix}merch:{{merchant-7}}:fraud")).await.unwrap_or(-1);
    assert_eq!((labels, fraud), (1, 1));
    p.teardown().await;
}

#[tokio::test]
async fn the_account_endpoint_shows_the_windows_behind_a_decision() {
    let p = spawn_pipeline().await;
    let mut last = transaction("acc-3", "acct-view", "30", "2026-11-20T09:04:00Z");
    last["geo_lat"] = json!(51.5);
    last["geo_lon"] = json!(-0.12);
    for body in [
        transaction("acc-1", "acct-view", "10", "2026-11-20T09:00:00Z"),
        transaction("acc-2", "acct-view", "20.5", "2026-11-20T09:02:00Z"),
        last,
    ] {
        assert_eq!(p.post(&body).await, 202);
    }
    p.scored("acc-3").await;
    let (status, state) = status_and_body(p.request(Method::GET, "/accounts/acct-view", None).await).await;
    assert_eq!(status, 200);
    assert_eq!(state["last_transaction_id"], "acc-3");
    assert_eq!(state["last_seen"], "2026-11-20T09:04:00Z");
    assert_eq!(state["last_location"], json!({"lat": 51.5, "lon": -0.12}));
    assert_eq!(state["windows"][0], json!({"window": "5m", "count": 3, "sum": "60.5000"}));
    let (status, later) =
        status_and_body(p.request(Method::GET, "/accounts/acct-view?at=2026-11-20T09:08:30Z", None).await)
            .await;
    assert_eq!((status, later["windows"][0]["count"].as_u64()), (200, Some(1)));
    assert_eq!(p.request(Method::GET, "/accounts/nobody", None).await.status().as_u16(), 404);
    assert_eq!(p.request(Method::GET, "/accounts/acct-view?at=soon", None).await.status().as_u16(), 400);
    assert_eq!(p.request(Method::GET, "/accounts/bad%20id", None).await.status().as_u16(), 400);
    p.teardown().await;
}

#[tokio::test]
async fn after_the_idempotency_ttl_the_database_still_recognises_a_transaction() {
    let mut p = spawn_pipeline().await;
    let body = transaction("ttl-1", "acct-ttl", "15", "2026-11-20T09:00:00Z");
    assert_eq!(p.post(&body).await, 202);
    p.scored("ttl-1").await;
    p.stop_worker().await;

    // Forget it in Redis, as if the TTL had passed.
    let redis =
        fraudsense_actors::connect_redis(&p.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let removed: i64 = redis
        .del(format!("{}idem:ttl-1", p.env.settings.redis.key_prefix))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(removed, 1);

    let replay = p.request(Method::POST, "/transactions", Some(&body)).await;
    assert_eq!(replay.status().as_u16(), 202);
    assert_eq!(replay.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(
        p.env.queued_transactions().await.unwrap_or_default(),
        0,
        "recognised, so not published again"
    );
    let mut changed = body.clone();
    changed["amount"] = json!("16");
    assert_eq!(p.post(&changed).await, 409);
    p.teardown().await;
}

use fraudsense_api::Application;
use serde_json::{Value, json};

use crate::helpers::{problem, spawn_app, spawn_app_with, transaction};

#[tokio::test]
async fn the_same_body_twice_gets_the_same_202_and_is_published_once() {
    let app = spawn_app().await;
    let body = transaction("idem-1", "10.50");
    let first = app.post_json(&body).await;
    assert_eq!(first.status().as_u16(), 202);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap_or_default();

    // Same content, keys in another order: the same request.
    let reordered: String = {
        let mut pairs: Vec<(String, Value)> =
            body.as_object().cloned().unwrap_or_default().into_iter().collect();
        pairs.reverse();
        let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{}:{}", json!(k), v)).collect();
        format!("{{{}}}", inner.join(","))
    };
    let second = app.post_raw(reordered, "application/json").await;
    assert_eq!(second.status().as_u16(), 202);
    assert_eq!(second.headers().get("idempotent-replayed").and_then(|v| v.to_str().ok()), Some("true"));
    assert_eq!(second.json::<Value>().await.unwrap_or_default(), first);
    assert_eq!(app.queued().await, 1, "a replay must not publish again");
    app.teardown().await;
}

#[tokio::test]
async fn the_same_id_with_a_different_body_is_a_409() {
    let app = spawn_app().await;
    assert_eq!(app.post_json(&transaction("idem-2", "10.50")).await.status().as_u16(), 202);
    let p = problem(app.post_json(&transaction("idem-2", "10.51")).await, 409).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("idem-2")), "{p}");
    assert_eq!(app.queued().await, 1);
    app.teardown().await;
}

#[tokio::test]
async fn racing_duplicates_across_two_replicas_publish_exactly_once() {
    let app = spawn_app().await;
    // A second api replica on the same broker, database and Redis.
    let replica = Application::build(app.env.settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    let replica_addr = replica.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(replica.run_until(async {
        let _ = stopped.await;
    }));

    let body = transaction("idem-race", "99.99");
    let mut requests = Vec::new();
    for i in 0..24 {
        let target =
            if i % 2 == 0 { app.url("/transactions") } else { format!("http://{replica_addr}/transactions") };
        let http = app.http.clone();
        let body = body.clone();
        requests.push(tokio::spawn(async move {
            http.post(target).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap_or(0));
    }
    assert!(statuses.iter().all(|s| *s == 202), "{statuses:?}");
    assert_eq!(app.queued().await, 1, "exactly one message for 24 racing requests");

    // Racing *different* bodies: exactly one wins, the rest are conflicts.
    let mut requests = Vec::new();
    for i in 0..12 {
        let http = app.http.clone();
        let url = app.url("/transactions");
        let body = transaction("idem-race-2", &format!("{}.00", 10 + i));
        requests.push(tokio::spawn(async move {
            http.post(url).json(&body).send().await.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    let mut statuses = Vec::new();
    for r in requests {
        statuses.push(r.await.unwrap_or(0));
    }
    assert_eq!(statuses.iter().filter(|s| **s == 202).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 11, "{statuses:?}");
    assert_eq!(app.queued().await, 2);

    let _ = stop.send(());
    let _ = served.await;
    app.teardown().await;
}

#[tokio::test]
async fn an_account_over_its_rate_limit_gets_429_with_headers_and_publishes_nothing() {
    let app = spawn_app_with(|s| s.http.rate_limit = 3).await;
    let post = async |id: &str, account: &str| {
        let mut body = transaction(id, "5");
        body["account_id"] = json!(account);
        app.post_json(&body).await
    };
    for i in 0..3 {
        let r = post(&format!("rl-{i}"), "acct-busy").await;
        assert_eq!(r.status().as_u16(), 202);
        let remaining =
            r.headers().get("ratelimit-remaining").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(remaining.as_deref(), Some((2 - i).to_string().as_str()));
    }
    let limited = post("rl-3", "acct-busy").await;
    let header = |name: &str| {
        limited.headers().get(name).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u32>().ok())
    };
    assert_eq!(header("ratelimit-limit"), Some(3));
    assert_eq!(header("ratelimit-remaining"), Some(0));
    assert!(header("retry-after").is_some_and(|s| (1..=60).contains(&s)));
    assert!(header("ratelimit-reset").is_some_and(|s| (1..=60).contains(&s)));
    problem(limited, 429).await;

    // A replay of an accepted transaction is not a new submission: still 202.
    let mut replay = transaction("rl-0", "5");
    replay["account_id"] = json!("acct-busy");
    assert_eq!(app.post_json(&replay).await.status().as_u16(), 202);
    // Other accounts are unaffected.
    assert_eq!(post("rl-other", "acct-calm").await.status().as_u16(), 202);
    // The refused one can be retried later (its claim was released), and nothing leaked.
    assert_eq!(app.get("/transactions/rl-3").await.status().as_u16(), 404);
    assert_eq!(app.queued().await, 4);
    app.teardown().await;
}

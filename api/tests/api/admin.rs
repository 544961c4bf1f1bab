//! `/admin/rules…` and `/admin/models…` against the real PostgreSQL.

use fraudsense_actors::{
    store::catalog::{self, ModelStatus},
    testing::TestEnv,
};
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_fields, problem, spawn_app, spawn_app_on};

impl TestApp {
    /// POSTs `body` (if any) as JSON to `path`, as `actor` if given (else as `test`).
    async fn admin_post(&self, path: &str, body: Option<&Value>, actor: Option<&str>) -> reqwest::Response {
        self.post_as(path, body.map(Value::to_string).as_deref(), actor).await
    }

    /// GETs `path`, expecting `200` and a JSON body.
    async fn admin_get(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(response.status().as_u16(), 200, "GET {path}");
        response.json().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// One number from this test's database.
    async fn count(&self, sql: &str) -> i64 {
        let pool = self.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
        let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        client.query_one(sql, &[]).await.unwrap_or_else(|e| panic!("{e}")).get(0)
    }
}

/// `200`/`201` and the JSON body.
async fn ok(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.unwrap_or_else(|e| panic!("{e}"))
}

/// The `version` of each record, in order.
fn versions(list: &Value) -> Vec<&str> {
    list.as_array().map(|a| a.iter().filter_map(|r| r["version"].as_str()).collect()).unwrap_or_default()
}

/// The versions flagged active (rule sets) or with status `active` (models).
fn active(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter(|r| r["active"] == true || r["status"] == "active")
                .filter_map(|r| r["version"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_new_rule_set_becomes_active_and_an_older_one_can_be_restored() {
    let app = spawn_app().await;
    let initial = app.admin_get("/admin/rules/active").await;
    assert_eq!(
        (initial["version"].as_str(), initial["created_by"].as_str()),
        (Some("rules-1"), Some("migration"))
    );

    let body =
        json!({"rules": {"velocity": {"max_1h": 20}, "amount": {"high": "5000"}}, "note": "busier season"});
    let created = ok(app.admin_post("/admin/rules", Some(&body), Some("alice@example.com")).await, 201).await;
    assert_eq!(created["version"], "rules-2");
    assert_eq!(created["active"], true);
    assert_eq!(created["created_by"], "alice@example.com", "the token's subject is the author");
    assert_eq!(created["note"], "busier season");
    assert_eq!(created["rules"]["velocity"]["max_1h"], 20);
    assert_eq!(created["rules"]["velocity"]["max_5m"], 5, "unspecified fields keep their defaults");
    assert_eq!(created["rules"]["amount"]["high"], "5000");
    assert!(created["activated_at"].is_string());

    let list = app.admin_get("/admin/rules").await;
    assert_eq!(versions(&list), ["rules-2", "rules-1"], "newest first");
    assert_eq!(active(&list), ["rules-2"], "the previous one is no longer active");
    assert_eq!(app.admin_get("/admin/rules/active").await, created);

    // Stored only, by the default test subject.
    let stored_only = json!({"rules": {}, "activate": false});
    let stored = ok(app.admin_post("/admin/rules", Some(&stored_only), None).await, 201).await;
    assert_eq!((stored["version"].as_str(), stored["active"].as_bool()), (Some("rules-3"), Some(false)));
    assert_eq!(stored["created_by"], "test");
    assert!(stored["activated_at"].is_null());
    assert_eq!(app.admin_get("/admin/rules/active").await["version"], "rules-2");

    // Roll back to the defaults.
    let restored = ok(app.admin_post("/admin/rules/rules-1/activate", None, Some("bob")).await, 200).await;
    assert_eq!((restored["version"].as_str(), restored["active"].as_bool()), (Some("rules-1"), Some(true)));
    let list = app.admin_get("/admin/rules").await;
    assert_eq!(versions(&list), ["rules-3", "rules-2", "rules-1"]);
    assert_eq!(active(&list), ["rules-1"]);
    assert_eq!(app.admin_get("/admin/rules/active").await["version"], "rules-1");

    let audit = app
        .count(
            "SELECT count(*) FROM audit_log WHERE (subject, action, actor, before->>'active_version', \
             COALESCE(after->>'active_version', after->>'version')) IN \
             (('rules-2', 'rules.create', 'alice@example.com', 'rules-1', 'rules-2'), \
              ('rules-3', 'rules.create', 'test', 'rules-2', 'rules-3'), \
              ('rules-1', 'rules.activate', 'bob', 'rules-2', 'rules-1'))",
        )
        .await;
    assert_eq!(audit, 3, "every change is audited with its author, before and after");
    app.teardown().await;
}

#[tokio::test]
async fn an_invalid_rule_set_names_every_field_and_stores_nothing() {
    let app = spawn_app().await;
    let stored = || app.count("SELECT count(*) FROM rule_sets");
    assert_eq!(stored().await, 1);

    let body = json!({
        "rules": {
            "thresholds": {"medium": 0.9, "high": 0.5},
            "velocity": {"max_5m": 0, "severity": "high"},
            "lists": {"deny_countries": ["DE", "de"]},
            "colour": "red"
        },
        "note": "x".repeat(1001),
        "activate": "yes",
        "surprise": true
    });
    let p = problem(app.admin_post("/admin/rules", Some(&body), None).await, 422).await;
    assert_eq!(
        error_fields(&p),
        [
            "surprise",
            "rules.colour",
            "rules.thresholds.high",
            "rules.velocity.max_5m",
            "rules.velocity.severity",
            "rules.lists.deny_countries[1]",
            "note",
            "activate",
        ],
        "{p}"
    );
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("rules.velocity.max_5m")), "{p}");

    let missing = problem(app.admin_post("/admin/rules", Some(&json!({"note": "n"})), None).await, 422).await;
    assert_eq!(error_fields(&missing), ["rules"]);
    let not_object =
        problem(app.admin_post("/admin/rules", Some(&json!({"rules": []})), None).await, 422).await;
    assert_eq!(error_fields(&not_object), ["rules"]);
    let good = json!({"rules": {}});
    let duplicate = app
        .http
        .post(app.url("/admin/rules"))
        .header("content-type", "application/json")
        .body(r#"{"rules": {}, "rules": {"velocity": {"max_1h": 1}}}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(error_fields(&problem(duplicate, 422).await), ["rules"]);
    let not_json = app
        .http
        .post(app.url("/admin/rules"))
        .header("content-type", "application/json")
        .body("{\"rules\": ")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    problem(not_json, 400).await;
    let plain = app.http.post(app.url("/admin/rules")).body(good.to_string()).send().await;
    problem(plain.unwrap_or_else(|e| panic!("{e}")), 415).await;
    assert_eq!(stored().await, 1, "nothing is stored for bad input");
    assert_eq!(
        app.count("SELECT count(*) FROM audit_log WHERE actor <> 'bootstrap'").await,
        0,
        "nor audited"
    );
    assert_eq!(app.admin_get("/admin/rules/active").await["version"], "rules-1");
    app.teardown().await;
}

#[tokio::test]
async fn rule_documents_may_exceed_the_default_body_limit_up_to_their_own() {
    let app = spawn_app().await;
    // 10,000 deny-listed accounts: about 200 KiB, far over the 64 KiB of other routes.
    let accounts: Vec<String> = (0..10_000).map(|i| format!("account-{i:010}")).collect();
    let body = json!({"rules": {"lists": {"deny_accounts": accounts}}});
    assert!(body.to_string().len() > 64 * 1024);
    let created = ok(app.admin_post("/admin/rules", Some(&body), None).await, 201).await;
    assert_eq!(created["rules"]["lists"]["deny_accounts"].as_array().map(Vec::len), Some(10_000));

    let huge = json!({"rules": {}, "note": "x".repeat(9 * 1024 * 1024)});
    let p = problem(app.admin_post("/admin/rules", Some(&huge), None).await, 413).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("8 MiB")), "{p}");
    let p = problem(app.post_json(&json!({"pad": "x".repeat(70 * 1024)})).await, 413).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("64 KiB")), "other routes keep theirs: {p}");
    app.teardown().await;
}

#[tokio::test]
async fn unknown_versions_are_404_and_malformed_ones_400() {
    let app = spawn_app().await;
    problem(app.admin_post("/admin/rules/rules-99/activate", None, None).await, 404).await;
    problem(app.get("/admin/models/model-99").await, 404).await;
    for action in ["activate", "shadow", "retire"] {
        problem(app.admin_post(&format!("/admin/models/model-99/{action}"), None, None).await, 404).await;
        problem(app.admin_post(&format!("/admin/models/bad%20version/{action}"), None, None).await, 400)
            .await;
    }
    problem(app.admin_post("/admin/rules/bad%20version/activate", None, None).await, 400).await;
    problem(app.get("/admin/models/bad%20version").await, 400).await;
    assert_eq!(app.count("SELECT count(*) FROM audit_log WHERE actor = 'test'").await, 0);
    app.teardown().await;
}

#[tokio::test]
async fn model_versions_move_between_active_shadow_and_retired() {
    let app = spawn_app().await;
    let list = app.admin_get("/admin/models").await;
    assert_eq!(versions(&list), ["bootstrap-1"], "installed at start-up");
    assert_eq!(active(&list), ["bootstrap-1"]);
    let bootstrap = app.admin_get("/admin/models/bootstrap-1").await;
    assert_eq!(bootstrap["status"], "active");
    assert!(bootstrap["training"].is_object() && bootstrap["metrics"].is_object());

    // The only model that decides cannot be taken out of use.
    for action in ["retire", "shadow"] {
        let p =
            problem(app.admin_post(&format!("/admin/models/bootstrap-1/{action}"), None, None).await, 409)
                .await;
        assert!(p["detail"].as_str().is_some_and(|d| d.contains("active")), "{p}");
    }
    assert_eq!(app.admin_get("/admin/models/bootstrap-1").await["status"], "active");

    // A second version, as `fraudsense-worker train` would store it.
    let pool = app.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let mut model = catalog::model(&pool, "bootstrap-1")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no bootstrap model"));
    model.version = "challenger-2".into();
    let saved = catalog::save_model(&pool, &model, &json!({"data": "test"}), &json!({"auc": 0.9})).await;
    assert_eq!(saved.ok(), Some(true));
    assert_eq!(app.admin_get("/admin/models/challenger-2").await["status"], "candidate");

    let shadow =
        ok(app.admin_post("/admin/models/challenger-2/shadow", None, Some("carol")).await, 200).await;
    assert_eq!(shadow["status"], "shadow");
    assert!(shadow["activated_at"].is_string());
    let promoted =
        ok(app.admin_post("/admin/models/challenger-2/activate", None, Some("carol")).await, 200).await;
    assert_eq!(promoted["status"], "active");
    assert_eq!(
        app.admin_get("/admin/models/bootstrap-1").await["status"],
        "retired",
        "activate retires the previous"
    );
    let list = app.admin_get("/admin/models").await;
    assert_eq!(active(&list), ["challenger-2"]);

    // Roll back, keep the challenger as the shadow, then retire it.
    ok(app.admin_post("/admin/models/bootstrap-1/activate", None, None).await, 200).await;
    assert_eq!(app.admin_get("/admin/models/challenger-2").await["status"], "retired");
    ok(app.admin_post("/admin/models/challenger-2/shadow", None, None).await, 200).await;
    let versions_now = catalog::active_versions(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(versions_now.model.as_deref(), Some("bootstrap-1"), "what workers poll");
    assert_eq!(versions_now.shadow.as_deref(), Some("challenger-2"));
    let retired =
        ok(app.admin_post("/admin/models/challenger-2/retire", None, Some("carol")).await, 200).await;
    assert_eq!(retired["status"], "retired");
    let versions_now = catalog::active_versions(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((versions_now.model.as_deref(), versions_now.shadow), (Some("bootstrap-1"), None));

    let audit = app
        .count(
            "SELECT count(*) FROM audit_log WHERE subject = 'challenger-2' AND actor = 'carol' \
             AND action IN ('model.shadow', 'model.activate', 'model.retire') \
             AND before ? 'status' AND after ? 'status'",
        )
        .await;
    assert_eq!(audit, 3);
    app.teardown().await;
}

#[tokio::test]
async fn a_model_this_build_cannot_load_is_never_activated() {
    let app = spawn_app().await;
    let pool = app.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    client
        .execute("INSERT INTO models (version, artifact) VALUES ('broken-1', 'not a model'::bytea)", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for action in ["activate", "shadow"] {
        let p =
            problem(app.admin_post(&format!("/admin/models/broken-1/{action}"), None, None).await, 409).await;
        assert!(p["detail"].as_str().is_some_and(|d| d.contains("cannot load")), "{p}");
    }
    assert_eq!(app.admin_get("/admin/models/broken-1").await["status"], "candidate");
    let versions = catalog::active_versions(&pool).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((versions.model.as_deref(), versions.shadow), (Some("bootstrap-1"), None));
    // Retiring it needs no artifact.
    let retired = ok(app.admin_post("/admin/models/broken-1/retire", None, None).await, 200).await;
    assert_eq!(retired["status"], ModelStatus::Retired.as_str());
    app.teardown().await;
}

#[tokio::test]
async fn concurrent_activations_leave_exactly_one_active_rule_set() {
    let app = spawn_app().await;
    for _ in 0..2 {
        ok(app.admin_post("/admin/rules", Some(&json!({"rules": {}, "activate": false})), None).await, 201)
            .await;
    }
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..12 {
        let (http, url) = (app.http.clone(), app.url(&format!("/admin/rules/rules-{}/activate", 1 + i % 3)));
        requests.spawn(async move { http.post(url).send().await.map(|r| r.status().as_u16()) });
    }
    let mut statuses = Vec::new();
    while let Some(done) = requests.join_next().await {
        statuses.push(done.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}")));
    }
    assert!(
        statuses.iter().all(|s| matches!(s, 200 | 409)),
        "only success or a retryable conflict: {statuses:?}"
    );
    assert!(statuses.contains(&200));
    let list = app.admin_get("/admin/rules").await;
    assert_eq!(active(&list).len(), 1, "{list}");
    app.teardown().await;
}

#[tokio::test]
async fn an_unreachable_database_is_a_503_with_retry_after() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, settings) = env.postgres_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    let app = spawn_app_on(env, settings).await;
    assert_eq!(app.admin_get("/admin/rules/active").await["version"], "rules-1");
    proxy.down();
    let responses = [
        app.get("/admin/rules").await,
        app.get("/admin/rules/active").await,
        app.admin_post("/admin/rules", Some(&json!({"rules": {}})), None).await,
        app.admin_post("/admin/rules/rules-1/activate", None, None).await,
        app.get("/admin/models").await,
        app.get("/admin/models/bootstrap-1").await,
        app.admin_post("/admin/models/bootstrap-1/activate", None, None).await,
    ];
    for response in responses {
        assert!(response.headers().contains_key("retry-after"));
        problem(response, 503).await;
    }
    proxy.up();
    assert_eq!(app.count("SELECT count(*) FROM rule_sets").await, 1, "nothing was stored");
    app.teardown().await;
}

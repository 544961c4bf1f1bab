//! `/alerts…` against the real PostgreSQL and Redis. Alerts are seeded with SQL, as the
//! worker would have recorded them.

use std::collections::BTreeSet;

use fred::interfaces::SortedSetsInterface;
use serde_json::{Value, json};

use crate::helpers::{TestApp, error_fields, problem, spawn_app};

/// A seeded alert.
struct Seed<'a> {
    id: &'a str,
    account: &'a str,
    merchant: &'a str,
    risk: &'a str,
    created_at: &'a str,
}

impl<'a> Seed<'a> {
    fn new(id: &'a str) -> Self {
        Self {
            id,
            account: "acct-1",
            merchant: "merchant-1",
            risk: "HIGH",
            created_at: "2026-11-20T10:00:00Z",
        }
    }
}

impl TestApp {
    /// Records a transaction (amount `125.5000` EUR) and its alert; returns the alert id.
    async fn seed_alert(&self, seed: Seed<'_>) -> i64 {
        let pool = self.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
        let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        client
            .execute(
                "INSERT INTO transactions (transaction_id, account_id, amount, currency, occurred_at,
                                           merchant_id, raw, received_at)
                 VALUES ($1, $2, 125.5000, 'EUR', $4::text::timestamptz, $3, '{}'::jsonb, $4::text::timestamptz)",
                &[&seed.id, &seed.account, &seed.merchant, &seed.created_at],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .query_one(
                "INSERT INTO alerts (transaction_id, account_id, risk_label, score, reason, threshold,
                                     created_at, published_at)
                 VALUES ($1, $2, $3, 0.93, 'HIGH_AMOUNT,MODEL_RISK', 0.8, $4::text::timestamptz, now())
                 RETURNING alert_id",
                &[&seed.id, &seed.account, &seed.risk, &seed.created_at],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0)
    }

    /// One row from this test's database.
    async fn sql_row(&self, sql: &str, id: &str) -> deadpool_postgres::tokio_postgres::Row {
        let pool = self.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
        let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        client.query_one(sql, &[&id]).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `GET /alerts?{query}`, expecting `200`.
    async fn alert_page(&self, query: &str) -> Value {
        ok(self.get(&format!("/alerts?{query}")).await, 200).await
    }
}

async fn ok(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    response.json().await.unwrap_or_else(|e| panic!("{e}"))
}

fn ids(page: &Value) -> Vec<i64> {
    page["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["alert_id"].as_i64()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn alerts_are_listed_newest_first_and_filtered() {
    let app = spawn_app().await;
    let a = app.seed_alert(Seed { created_at: "2026-11-20T09:00:00Z", ..Seed::new("t-a") }).await;
    let b = app.seed_alert(Seed { account: "acct-2", risk: "MEDIUM", ..Seed::new("t-b") }).await;
    let c = app.seed_alert(Seed { created_at: "2026-11-21T09:00:00Z", ..Seed::new("t-c") }).await;
    let d = app.seed_alert(Seed { account: "acct-2", ..Seed::new("t-d") }).await;
    assert_eq!(app.post_as(&format!("/alerts/{b}/ack"), None, None).await.status().as_u16(), 200);
    let resolved =
        app.post_as(&format!("/alerts/{c}/resolve"), Some(r#"{"resolution": "legit"}"#), None).await;
    assert_eq!(resolved.status().as_u16(), 200);

    let all = app.alert_page("").await;
    assert_eq!(ids(&all), [d, c, b, a]);
    assert_eq!(all["next_cursor"], Value::Null);
    let first = &all["alerts"][3];
    for (field, value) in [
        ("transaction_id", json!("t-a")),
        ("account_id", json!("acct-1")),
        ("merchant_id", json!("merchant-1")),
        ("amount", json!("125.5")),
        ("currency", json!("EUR")),
        ("risk_label", json!("HIGH")),
        ("score", json!(0.93)),
        ("reasons", json!(["HIGH_AMOUNT", "MODEL_RISK"])),
        ("threshold", json!(0.8)),
        ("status", json!("open")),
        ("acknowledged_at", Value::Null),
        ("resolution", Value::Null),
    ] {
        assert_eq!(first[field], value, "{field} in {first}");
    }
    assert!(first["created_at"].as_str().is_some_and(|t| t.starts_with("2026-11-20T09:00:00")), "{first}");

    assert_eq!(ids(&app.alert_page("status=open").await), [d, a]);
    assert_eq!(ids(&app.alert_page("status=acknowledged").await), [b]);
    assert_eq!(ids(&app.alert_page("status=resolved").await), [c]);
    assert_eq!(ids(&app.alert_page("risk=MEDIUM").await), [b]);
    assert_eq!(ids(&app.alert_page("risk=LOW").await), Vec::<i64>::new());
    assert_eq!(ids(&app.alert_page("account_id=acct-2").await), [d, b]);
    assert_eq!(ids(&app.alert_page("account_id=acct-2&risk=HIGH").await), [d]);
    assert_eq!(ids(&app.alert_page("from=2026-11-20T10:00:00Z").await), [d, c, b]);
    assert_eq!(ids(&app.alert_page("to=2026-11-20T10:00:00Z").await), [a]);
    assert_eq!(
        ids(&app.alert_page("from=2026-11-20T11:00:00%2B01:00&to=2026-11-21T00:00:00Z").await),
        [d, b],
        "offsets are honoured; from inclusive, to exclusive"
    );
    app.teardown().await;
}

#[tokio::test]
async fn pages_cover_every_alert_exactly_once() {
    let app = spawn_app().await;
    let mut seeded = Vec::new();
    for i in 0..23 {
        let id = format!("page-{i}");
        let risk = if i % 3 == 0 { "MEDIUM" } else { "HIGH" };
        seeded.push((app.seed_alert(Seed { risk, ..Seed::new(&id) }).await, risk));
    }
    for (query, expected) in [
        ("limit=5", seeded.iter().map(|(id, _)| *id).rev().collect::<Vec<_>>()),
        ("limit=4&risk=HIGH", seeded.iter().filter(|(_, r)| *r == "HIGH").map(|(id, _)| *id).rev().collect()),
        ("limit=23", seeded.iter().map(|(id, _)| *id).rev().collect()),
    ] {
        let (mut walked, mut cursor, mut pages) = (Vec::new(), None::<i64>, 0);
        loop {
            let page = app
                .alert_page(&match cursor {
                    Some(c) => format!("{query}&cursor={c}"),
                    None => query.to_owned(),
                })
                .await;
            pages += 1;
            let got = ids(&page);
            assert!(!got.is_empty() || cursor.is_none(), "an empty page after a cursor ({query})");
            walked.extend(got);
            match page["next_cursor"].as_i64() {
                Some(next) => cursor = Some(next),
                None => break,
            }
            assert!(pages < 30, "pagination does not end ({query})");
        }
        assert_eq!(walked, expected, "{query}: no duplicates, no gaps, newest first");
        let unique: BTreeSet<_> = walked.iter().collect();
        assert_eq!(unique.len(), walked.len());
    }
    // An exactly full last page says there is no next one.
    assert_eq!(app.alert_page("limit=23").await["next_cursor"], Value::Null);
    assert!(app.alert_page("limit=22").await["next_cursor"].is_i64());
    app.teardown().await;
}

#[tokio::test]
async fn one_alert_is_found_by_id() {
    let app = spawn_app().await;
    let id = app.seed_alert(Seed::new("one-1")).await;
    let alert = ok(app.get(&format!("/alerts/{id}")).await, 200).await;
    assert_eq!((alert["alert_id"].as_i64(), alert["status"].as_str()), (Some(id), Some("open")));
    problem(app.get(&format!("/alerts/{}", id + 1000)).await, 404).await;
    for bad in ["abc", "0", "-3", "1.5", "99999999999999999999"] {
        problem(app.get(&format!("/alerts/{bad}")).await, 400).await;
    }
    app.teardown().await;
}

#[tokio::test]
async fn acknowledging_is_idempotent_and_keeps_the_first_actor() {
    let app = spawn_app().await;
    let id = app.seed_alert(Seed::new("ack-1")).await;
    let path = format!("/alerts/{id}/ack");

    let first = ok(app.post_as(&path, None, Some("alice@example.com")).await, 200).await;
    assert_eq!(first["status"], "acknowledged");
    assert_eq!(first["acknowledged_by"], "alice@example.com");
    assert!(first["acknowledged_at"].is_string());
    let again = ok(app.post_as(&path, Some("{}"), Some("bob")).await, 200).await;
    assert_eq!(again, first, "the first acknowledgement stays");
    assert_eq!(ok(app.post_as(&path, Some("null"), None).await, 200).await, first);

    // The author is the token's subject, and the audit trail has the change, once.
    let other = app.seed_alert(Seed::new("ack-2")).await;
    let by_test = ok(app.post_as(&format!("/alerts/{other}/ack"), Some("{}"), None).await, 200).await;
    assert_eq!(by_test["acknowledged_by"], "test");
    let audited = app
        .sql_row(
            "SELECT count(*), min(actor), min(before->>'status'), min(after->>'acknowledged_by') \
             FROM audit_log WHERE action = 'alert.acknowledge' AND subject = $1",
            &format!("alert:{id}"),
        )
        .await;
    assert_eq!(
        (
            audited.get::<_, i64>(0),
            audited.get::<_, &str>(1),
            audited.get::<_, &str>(2),
            audited.get::<_, &str>(3)
        ),
        (1, "alice@example.com", "open", "alice@example.com"),
        "one entry: the repeats changed nothing"
    );

    // Concurrent acknowledgements: exactly one author wins, and every answer names it.
    let third = app.seed_alert(Seed::new("ack-3")).await;
    let third_path = format!("/alerts/{third}/ack");
    let mut racing = tokio::task::JoinSet::new();
    for i in 0..8 {
        let token = app.env.token(&format!("analyst-{i}"), &[fraudsense_actors::auth::Role::Analyst]);
        let request = app.http.post(app.url(&third_path)).bearer_auth(token);
        racing.spawn(async move { request.send().await });
    }
    let mut authors = BTreeSet::new();
    while let Some(answer) = racing.join_next().await {
        let answer = answer.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("{e}"));
        authors.insert(ok(answer, 200).await["acknowledged_by"].as_str().map(str::to_owned));
    }
    assert_eq!(authors.len(), 1, "{authors:?}");

    let bad = problem(app.post_as(&path, Some(r#"{"note": "x"}"#), None).await, 422).await;
    assert_eq!(error_fields(&bad), ["note"]);
    problem(app.post_as(&path, Some("[]"), None).await, 422).await;
    problem(app.post_as(&path, Some("{"), None).await, 400).await;
    let text = app.http.post(app.url(&path)).header("content-type", "text/plain").body("hi").send().await;
    problem(text.unwrap_or_else(|e| panic!("{e}")), 415).await;
    problem(app.post_as(&format!("/alerts/{}/ack", id + 1000), None, None).await, 404).await;
    problem(app.post_as("/alerts/x/ack", None, None).await, 400).await;
    app.teardown().await;
}

#[tokio::test]
async fn resolving_labels_the_transaction_and_refuses_a_different_verdict() {
    let app = spawn_app().await;
    let id = app.seed_alert(Seed { merchant: "merchant-9", ..Seed::new("res-1") }).await;
    let path = format!("/alerts/{id}/resolve");

    let body = r#"{"resolution": "fraud", "note": "card reported stolen"}"#;
    let resolved = ok(app.post_as(&path, Some(body), Some("carol")).await, 200).await;
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["resolution"], "fraud");
    assert_eq!(resolved["resolved_by"], "carol");
    assert_eq!(resolved["acknowledged_by"], "carol", "resolving acknowledges too");
    assert!(resolved["resolved_at"].is_string() && resolved["acknowledged_at"].is_string());

    let label =
        app.sql_row("SELECT label, source, note FROM labels WHERE transaction_id = $1", "res-1").await;
    assert_eq!(
        (label.get::<_, &str>(0), label.get::<_, &str>(1), label.get::<_, Option<&str>>(2)),
        ("fraud", "analyst", Some("card reported stolen"))
    );
    let redis =
        fraudsense_actors::connect_redis(&app.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let prefix = &app.env.settings.redis.key_prefix;
    let labels: i64 = redis.zcard(format!("{prefix}merch:{{merchant-9}}:lab")).await.unwrap_or(-1);
    let fraud: i64 = redis.zcard(format!("{prefix}merch:{{merchant-9}}:fraud")).await.unwrap_or(-1);
    assert_eq!((labels, fraud), (1, 1), "the merchant risk feature learns the verdict");
    // Both changes are in the audit trail under carol, with before and after.
    let audited = app
        .sql_row(
            "SELECT string_agg(action || ' by ' || actor || ': ' || COALESCE(before->>'status', '-') || ' -> ' \
             || COALESCE(after->>'status', after->>'label'), '; ' ORDER BY audit_id) FROM audit_log \
             WHERE subject IN ($1, 'res-1')",
            &format!("alert:{id}"),
        )
        .await;
    assert_eq!(
        audited.get::<_, &str>(0),
        "transaction.label by carol: - -> fraud; alert.resolve by carol: open -> resolved"
    );

    // The same verdict again: unchanged. A different one: refused, nothing changes.
    let again = ok(app.post_as(&path, Some(r#"{"resolution": "fraud"}"#), Some("dave")).await, 200).await;
    assert_eq!(again, resolved);
    let conflict = problem(app.post_as(&path, Some(r#"{"resolution": "legit"}"#), None).await, 409).await;
    assert!(conflict["detail"].as_str().is_some_and(|d| d.contains("fraud")), "{conflict}");
    assert_eq!(ok(app.get(&format!("/alerts/{id}")).await, 200).await, resolved);
    let label = app.sql_row("SELECT label FROM labels WHERE transaction_id = $1", "res-1").await;
    assert_eq!(label.get::<_, &str>(0), "fraud");

    // A transaction labelled otherwise before: the label conflict is a 409 and the alert stays open.
    let other = app.seed_alert(Seed::new("res-2")).await;
    let labelled = app
        .http
        .post(app.url("/transactions/res-2/label"))
        .header("content-type", "application/json")
        .body(r#"{"label": "legit", "source": "chargeback"}"#)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(labelled.status().as_u16(), 201);
    let other_path = format!("/alerts/{other}/resolve");
    problem(app.post_as(&other_path, Some(r#"{"resolution": "fraud"}"#), None).await, 409).await;
    assert_eq!(ok(app.get(&format!("/alerts/{other}")).await, 200).await["status"], "open");
    // Agreeing with it resolves (as the default test subject), keeping the existing label.
    let agreed = ok(app.post_as(&other_path, Some(r#"{"resolution": "legit"}"#), None).await, 200).await;
    assert_eq!(
        (agreed["resolution"].as_str(), agreed["resolved_by"].as_str()),
        (Some("legit"), Some("test"))
    );
    let label = app.sql_row("SELECT source FROM labels WHERE transaction_id = $1", "res-2").await;
    assert_eq!(label.get::<_, &str>(0), "chargeback");

    // Bad requests change nothing.
    let third = app.seed_alert(Seed::new("res-3")).await;
    let third_path = format!("/alerts/{third}/resolve");
    let long = json!({"resolution": "maybe", "note": "n".repeat(1001), "extra": 1}).to_string();
    let bad = problem(app.post_as(&third_path, Some(&long), None).await, 422).await;
    assert_eq!(error_fields(&bad), ["extra", "resolution", "note"]);
    let missing = problem(app.post_as(&third_path, Some("{}"), None).await, 422).await;
    assert_eq!(error_fields(&missing), ["resolution"]);
    let dup = r#"{"resolution": "fraud", "resolution": "legit"}"#;
    assert_eq!(
        error_fields(&problem(app.post_as(&third_path, Some(dup), None).await, 422).await),
        ["resolution"]
    );
    problem(app.post_as(&third_path, None, None).await, 415).await;
    problem(app.post_as(&third_path, Some("{"), None).await, 400).await;
    assert_eq!(ok(app.get(&format!("/alerts/{third}")).await, 200).await["status"], "open");
    let count = app.sql_row("SELECT count(*) FROM labels WHERE transaction_id = $1", "res-3").await;
    assert_eq!(count.get::<_, i64>(0), 0);
    let unknown = format!("/alerts/{}/resolve", third + 1000);
    problem(app.post_as(&unknown, Some(r#"{"resolution": "fraud"}"#), None).await, 404).await;
    problem(app.post_as("/alerts/0/resolve", Some(r#"{"resolution": "fraud"}"#), None).await, 400).await;
    app.teardown().await;
}

#[tokio::test]
async fn bad_query_parameters_are_named() {
    let app = spawn_app().await;
    let bad = problem(
        app.get("/alerts?status=closed&risk=high&account_id=a%20b&from=yesterday&to=2026&limit=501&cursor=0")
            .await,
        422,
    )
    .await;
    assert_eq!(error_fields(&bad), ["status", "risk", "account_id", "from", "to", "limit", "cursor"]);
    let bad = problem(app.get("/alerts?limit=5&limit=6").await, 422).await;
    assert_eq!(error_fields(&bad), ["limit"]);
    let bad = problem(app.get("/alerts?from=2026-11-21T00:00:00Z&to=2026-11-20T00:00:00Z").await, 422).await;
    assert_eq!(error_fields(&bad), ["to"]);
    app.teardown().await;
}

#[tokio::test]
async fn a_database_outage_is_a_503_with_retry_after() {
    let env = fraudsense_actors::testing::TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, settings) = env.postgres_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    let app = crate::helpers::spawn_app_on(env, settings).await;
    proxy.down();
    for response in
        [app.get("/alerts").await, app.get("/alerts/1").await, app.post_as("/alerts/1/ack", None, None).await]
    {
        let retry = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        problem(response, 503).await;
        assert!(retry.is_some());
    }
    proxy.up();
    app.teardown().await;
}

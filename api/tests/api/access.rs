//! Who may call what: every route, called with no token, an expired token, a token not yet
//! valid, a bad signature, a token for another issuer and for another audience, and a token
//! of each role, answers exactly as the table below says — `401`, `403` or success. The
//! table is written here, independently of the router, and a last check makes sure it
//! names every documented route, so a new route cannot slip in unguarded.

use std::time::Duration;

use fraudsense_actors::auth::{self, Claims, Role};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, transaction};

/// Who may call a route.
#[derive(Debug, Clone, Copy)]
enum Access {
    /// Anyone, without a token.
    Public,
    /// Exactly these roles; any other valid token gets `403`.
    Roles(&'static [Role]),
}

use Access::{Public, Roles};
use Role::{Admin, Analyst, Ingest};

/// One call: method, path (with real ids), body, who may make it, and the success status.
struct Call {
    method: &'static str,
    path: String,
    body: Option<Value>,
    access: Access,
    ok: u16,
}

fn call(method: &'static str, path: &str, body: Option<Value>, access: Access, ok: u16) -> Call {
    Call { method, path: path.to_owned(), body, access, ok }
}

/// The table. `{alert}` is a seeded alert, `acc-1` a seeded transaction and account.
fn table(alert: i64) -> Vec<Call> {
    const READ: Access = Roles(&[Analyst, Admin]);
    const ANALYST: Access = Roles(&[Analyst]);
    const ADMIN: Access = Roles(&[Admin]);
    const INGEST: Access = Roles(&[Ingest]);
    vec![
        // A fresh id per caller is filled in below (idempotency would otherwise answer 200).
        call("POST", "/transactions", None, INGEST, 202),
        call("GET", "/transactions/acc-1", None, READ, 200),
        call(
            "POST",
            "/transactions/acc-1/label",
            Some(json!({"label": "fraud", "source": "analyst"})),
            ANALYST,
            201,
        ),
        call("GET", "/accounts/acct-access", None, READ, 200),
        call("GET", "/alerts", None, READ, 200),
        call("GET", "/alerts/stream", None, READ, 101),
        call("GET", &format!("/alerts/{alert}"), None, READ, 200),
        call("POST", &format!("/alerts/{alert}/ack"), None, ANALYST, 200),
        call("POST", &format!("/alerts/{alert}/resolve"), Some(json!({"resolution": "fraud"})), ANALYST, 200),
        call("GET", "/admin/rules", None, ADMIN, 200),
        call("POST", "/admin/rules", Some(json!({"rules": {}, "activate": false})), ADMIN, 201),
        call("GET", "/admin/rules/active", None, ADMIN, 200),
        call("POST", "/admin/rules/rules-1/activate", None, ADMIN, 200),
        call("GET", "/admin/models", None, ADMIN, 200),
        call("GET", "/admin/models/bootstrap-1", None, ADMIN, 200),
        call("POST", "/admin/models/bootstrap-1/activate", None, ADMIN, 200),
        call("GET", "/admin/dlq", None, ADMIN, 200),
        call("POST", "/admin/dlq/replay", Some(json!({})), ADMIN, 200),
        call("POST", "/admin/dlq/purge", Some(json!({"confirm": true})), ADMIN, 200),
        call("GET", "/audit", None, ADMIN, 200),
        call("GET", "/dashboard", None, Public, 200),
        call("GET", "/dashboard/app.js", None, Public, 200),
        call("GET", "/dashboard/app.css", None, Public, 200),
        call("GET", "/openapi.json", None, Public, 200),
        call("GET", "/metrics", None, Public, 200),
        call("GET", "/health", None, Public, 200),
        call("GET", "/ready", None, Public, 200),
    ]
}

/// The credentials every route is tried with, and whether they are valid at all.
fn tokens(app: &TestApp) -> Vec<(String, Option<String>, Option<Role>)> {
    let settings = &app.env.settings.auth;
    let secret = app
        .env
        .settings
        .auth
        .hs256_secret
        .as_ref()
        .map(|s| secrecy::ExposeSecret::expose_secret(s).to_owned());
    let secret = secret.unwrap_or_else(|| panic!("the test env signs with a secret"));
    let good = auth::claims(settings, "access-test", &Role::ALL, Duration::from_secs(600));
    let sign =
        |claims: &Claims| auth::sign_hs256(secret.as_bytes(), claims).unwrap_or_else(|e| panic!("{e}"));
    let now = auth::now_secs();
    // Beyond the configured leeway either way.
    let skew = settings.leeway.as_secs() + 120;
    let mut list = vec![
        ("no token".to_owned(), None, None),
        (
            "expired".into(),
            Some(sign(&Claims { exp: now - skew, nbf: now - 2 * skew, ..good.clone() })),
            None,
        ),
        ("not yet valid".into(), Some(sign(&Claims { nbf: now + skew, ..good.clone() })), None),
        (
            "bad signature".into(),
            Some(auth::sign_hs256(b"someone-else's-secret-of-32-bytes", &good).unwrap_or_default()),
            None,
        ),
        ("other issuer".into(), Some(sign(&Claims { iss: "evil".into(), ..good.clone() })), None),
        ("other audience".into(), Some(sign(&Claims { aud: "another-api".into(), ..good.clone() })), None),
        ("garbage".into(), Some("not.a.jwt".into()), None),
        ("no roles".into(), Some(sign(&Claims { roles: Default::default(), ..good.clone() })), None),
    ];
    for role in Role::ALL {
        let claims =
            auth::claims(settings, &format!("{}-user", role.as_str()), &[role], Duration::from_secs(600));
        list.push((format!("role {}", role.as_str()), Some(sign(&claims)), Some(role)));
    }
    list
}

/// What the table says `credential` gets on `call`.
fn expected(call: &Call, name: &str, role: Option<Role>) -> u16 {
    match (call.access, role) {
        (Public, _) => call.ok,
        // A valid token without roles is authenticated but allowed nothing.
        (Roles(_), None) if name == "no roles" => 403,
        (Roles(_), None) => 401,
        (Roles(allowed), Some(role)) if allowed.contains(&role) => call.ok,
        (Roles(_), Some(_)) => 403,
    }
}

async fn send(app: &TestApp, call: &Call, token: Option<&str>, n: usize) -> (u16, Option<String>) {
    if call.ok == 101 {
        return upgrade(app, &call.path, token).await;
    }
    let client = reqwest::Client::new();
    let url = app.url(&call.path);
    let mut request = match call.method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let body = match (call.path.as_str(), &call.body) {
        ("/transactions", _) => Some(transaction(&format!("access-{n}"), "10.00")),
        (_, body) => body.clone(),
    };
    if let Some(body) = body {
        request = request.json(&body);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{} {}: {e}", call.method, call.path));
    let challenge =
        response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (response.status().as_u16(), challenge)
}

/// The status of a WebSocket upgrade of `path` (101 when it succeeds) and any challenge.
async fn upgrade(app: &TestApp, path: &str, token: Option<&str>) -> (u16, Option<String>) {
    use tokio_tungstenite::tungstenite::{Error, client::IntoClientRequest};
    let mut request =
        format!("ws://{}{path}", app.addr).into_client_request().unwrap_or_else(|e| panic!("{e}"));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().unwrap_or_else(|e| panic!("{e}"));
        request.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((mut socket, response)) => {
            let _ = socket.close(None).await;
            (response.status().as_u16(), None)
        }
        Err(Error::Http(response)) => {
            let challenge =
                response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (response.status().as_u16(), challenge)
        }
        Err(e) => panic!("WS {path}: {e}"),
    }
}

#[tokio::test]
async fn every_route_answers_each_credential_exactly_as_the_table_says() {
    let app = spawn_app().await;
    let alert = app.seed_access_fixtures().await;
    let calls = table(alert);
    let mut n = 0;
    let mut wrong = Vec::new();
    for (name, token, role) in tokens(&app) {
        for call in &calls {
            n += 1;
            let (status, challenge) = send(&app, call, token.as_deref(), n).await;
            let want = expected(call, &name, role);
            if status != want {
                wrong.push(format!("{} {} with {name}: {status}, want {want}", call.method, call.path));
            }
            if status == 401 && challenge.as_deref().is_none_or(|c| !c.starts_with("Bearer")) {
                wrong.push(format!(
                    "{} {} with {name}: 401 without a Bearer challenge",
                    call.method, call.path
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers differ from the table:\n{}", wrong.len(), wrong.join("\n"));

    // The refusals change nothing: only the allowed callers' actions are in the audit trail.
    let pool = app.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let db = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    let actors: Vec<String> = db
        .query("SELECT DISTINCT actor FROM audit_log WHERE actor <> 'bootstrap' ORDER BY actor", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(actors, ["admin-user", "analyst-user"]);
    app.teardown().await;
}

#[tokio::test]
async fn the_table_names_every_documented_route() {
    let app = spawn_app().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap_or_default();
    let mut documented: Vec<String> = doc["paths"]
        .as_object()
        .into_iter()
        .flatten()
        .flat_map(|(path, item)| {
            item.as_object()
                .into_iter()
                .flatten()
                .map(move |(method, _)| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    // Served but not in the OpenAPI document (a WebSocket, static files, the document itself, metrics).
    documented.extend(
        [
            "GET /alerts/stream",
            "GET /dashboard",
            "GET /dashboard/app.js",
            "GET /dashboard/app.css",
            "GET /openapi.json",
            "GET /metrics",
        ]
        .map(str::to_owned),
    );
    documented.sort();
    // The table's paths, with ids put back as the document's templates.
    let mut tabled: Vec<String> = table(7)
        .iter()
        .map(|c| {
            let path = c
                .path
                .replace("/7/", "/{alert_id}/")
                .replace("acc-1", "{transaction_id}")
                .replace("acct-access", "{account_id}")
                .replace("rules-1", "{version}")
                .replace("bootstrap-1/activate", "{version}/{action}")
                .replace("bootstrap-1", "{version}");
            let path = if path == "/alerts/7" { "/alerts/{alert_id}".to_owned() } else { path };
            format!("{} {path}", c.method)
        })
        .collect();
    tabled.sort();
    assert_eq!(tabled, documented);
    app.teardown().await;
}

impl TestApp {
    /// A transaction `acc-1` with an alert, and account activity for `acct-access`; returns
    /// the alert id.
    async fn seed_access_fixtures(&self) -> i64 {
        let pool = self.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
        let db = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        db.execute(
            "INSERT INTO transactions (transaction_id, account_id, amount, currency, occurred_at, merchant_id, raw, received_at)
             VALUES ('acc-1', 'acct-access', 10, 'EUR', now(), 'merchant-1', '{}'::jsonb, now())",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let alert: i64 = db
            .query_one(
                "INSERT INTO alerts (transaction_id, account_id, risk_label, score, reason, threshold, published_at)
                 VALUES ('acc-1', 'acct-access', 'HIGH', 0.9, 'MODEL_RISK', 0.8, now()) RETURNING alert_id",
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        let redis = fraudsense_actors::connect_redis(&self.env.settings.redis)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let windows = fraudsense_actors::features::WindowStore::new(
            redis,
            &self.env.settings.redis.key_prefix,
            &self.env.settings.scoring,
        );
        let mut body = transaction("acc-1", "10.00");
        body["account_id"] = json!("acct-access");
        let tx = fraudsense_actors::Transaction::parse(&body, chrono::Utc::now())
            .unwrap_or_else(|e| panic!("{e:?}"));
        windows.observe(&tx).await.unwrap_or_else(|e| panic!("{e}"));
        alert
    }
}

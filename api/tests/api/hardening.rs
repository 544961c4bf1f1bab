//! Request-level protections: header size, CORS (closed by default), the alert stream's
//! message size and token lifetime, and the audit trail's read side.

use std::time::Duration;

use fraudsense_actors::auth::{self, Role};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{
    Message, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};

use crate::helpers::{TestApp, problem, spawn_app, spawn_app_with, transaction};

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn oversized_headers_are_refused_with_431_before_anything_runs() {
    let app = spawn_app().await;
    let big = "x".repeat(20 * 1024);
    let response = app
        .http
        .post(app.url("/transactions"))
        .header("x-padding", big)
        .json(&transaction("hdr-1", "10.00"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let body = problem(response, 431).await;
    assert!(body["detail"].as_str().is_some_and(|d| d.contains("16 KiB")), "{body}");
    assert_eq!(app.queued().await, 0, "nothing was published");
    // Just under the limit passes.
    let response = app
        .http
        .post(app.url("/transactions"))
        .header("x-padding", "x".repeat(8 * 1024))
        .json(&transaction("hdr-2", "10.00"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 202);
    app.teardown().await;
}

/// A browser's preflight from `origin` for a POST with an Authorization header.
async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.http
        .request(reqwest::Method::OPTIONS, app.url("/transactions"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn allow_origin(response: &reqwest::Response) -> Option<String> {
    response.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

#[tokio::test]
async fn cors_is_closed_by_default_and_opens_only_for_configured_origins() {
    let closed = spawn_app().await;
    assert_eq!(allow_origin(&preflight(&closed, "https://evil.example").await), None);
    let get = closed
        .http
        .get(closed.url("/alerts"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(allow_origin(&get), None, "no CORS header, so the browser keeps the answer from the page");
    closed.teardown().await;

    let open = spawn_app_with(|s| s.http.cors_origins = vec!["https://dashboard.example".into()]).await;
    let allowed = preflight(&open, "https://dashboard.example").await;
    assert!(allowed.status().is_success());
    assert_eq!(allow_origin(&allowed).as_deref(), Some("https://dashboard.example"));
    let headers = allowed
        .headers()
        .get("access-control-allow-headers")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(headers.contains("authorization"), "{headers}");
    assert_eq!(allow_origin(&preflight(&open, "https://evil.example").await), None);
    open.teardown().await;
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn stream(app: &TestApp, token: &str) -> Socket {
    let mut request =
        format!("ws://{}/alerts/stream", app.addr).into_client_request().unwrap_or_else(|e| panic!("{e}"));
    // As a browser does: the token as a subprotocol beside the one the server speaks.
    let protocols = format!("fraudsense.v1, bearer.{token}").parse().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("sec-websocket-protocol", protocols);
    let (socket, response) =
        tokio_tungstenite::connect_async(request).await.unwrap_or_else(|e| panic!("{e}"));
    let chosen = response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok());
    assert_eq!(chosen, Some("fraudsense.v1"), "the server selects its protocol, never echoes the token");
    socket
}

/// Reads until the server closes; returns the close code.
async fn close_code(socket: &mut Socket) -> Option<CloseCode> {
    let read = async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(Message::Close(frame)) => return frame.map(|f| f.code),
                Ok(Message::Ping(data)) => {
                    let _ = socket.send(Message::Pong(data)).await;
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    };
    tokio::time::timeout(DEADLINE, read).await.unwrap_or_else(|_| panic!("the stream stayed open"))
}

#[tokio::test]
async fn the_stream_authenticates_by_subprotocol_and_ends_when_the_token_does() {
    let app = spawn_app().await;
    let settings = &app.env.settings.auth;
    // Valid for two more seconds.
    let claims = auth::claims(settings, "short-lived", &[Role::Analyst], Duration::from_secs(2));
    let token = auth::mint(settings, &claims).unwrap_or_else(|e| panic!("{e}"));
    let mut socket = stream(&app, &token).await;
    assert_eq!(close_code(&mut socket).await, Some(CloseCode::Policy), "closed as the token expired");
    app.teardown().await;
}

#[tokio::test]
async fn a_client_message_over_the_limit_closes_the_stream() {
    let app = spawn_app_with(|s| s.http.ws_max_message_bytes = 1024).await;
    let token = app.env.token("chatty", &[Role::Analyst]);
    let mut socket = stream(&app, &token).await;
    socket.send(Message::Text("x".repeat(4096).into())).await.unwrap_or_else(|e| panic!("{e}"));
    let code = close_code(&mut socket).await;
    assert!(matches!(code, None | Some(CloseCode::Size)), "{code:?}");
    app.teardown().await;
}

async fn audit_page(app: &TestApp, query: &str) -> Value {
    let response = app.get(&format!("/audit?{query}")).await;
    assert_eq!(response.status().as_u16(), 200, "{query}");
    response.json::<Value>().await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn the_audit_trail_is_readable_by_admins_filtered_paged_and_append_only() {
    let app = spawn_app().await;
    for (actor, note) in [("alice", "one"), ("bob", "two"), ("alice", "three")] {
        let body = json!({"rules": {}, "activate": false, "note": note}).to_string();
        assert_eq!(app.post_as("/admin/rules", Some(&body), Some(actor)).await.status().as_u16(), 201);
    }
    let alice = audit_page(&app, "actor=alice&action=rules.create").await;
    let notes: Vec<&str> = alice["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["after"]["note"].as_str())
        .collect();
    assert_eq!(notes, ["three", "one"], "newest first, only alice's");
    let entry = &alice["entries"][0];
    assert_eq!(
        (entry["roles"].clone(), entry["subject"].as_str()),
        (json!(["ingest", "analyst", "admin"]), Some("rules-4"))
    );
    assert!(entry["at"].is_string() && entry["before"].is_object());

    let first = audit_page(&app, "action=rules.create&limit=2").await;
    let cursor = first["next_cursor"].as_i64().unwrap_or_else(|| panic!("a next page: {first}"));
    let rest = app.get(&format!("/audit?action=rules.create&limit=2&cursor={cursor}")).await;
    let rest: Value = rest.json().await.unwrap_or_default();
    assert_eq!(rest["entries"].as_array().map(Vec::len), Some(1));
    assert!(rest["next_cursor"].is_null());

    let bad = problem(app.get("/audit?action=drop&limit=0").await, 422).await;
    assert_eq!(crate::helpers::error_fields(&bad), ["action", "limit"]);

    // Not even the database owner rewrites it.
    let pool = app.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let db = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    for sql in ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
        let refused = db.batch_execute(sql).await.err();
        let message = refused.as_ref().and_then(|e| e.as_db_error()).map(|d| d.message().to_owned());
        assert_eq!(message.as_deref(), Some("audit_log is append-only"), "{sql}");
    }
    let untouched: i64 = db
        .query_one("SELECT count(*) FROM audit_log WHERE actor IN ('alice', 'bob')", &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(untouched, 3);
    app.teardown().await;
}

use std::net::SocketAddr;

use fraudsense_actors::{Settings, testing::TestEnv};
use fraudsense_api::Application;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// An api served in-process on a random port, with its own slice of the services.
pub struct TestApp {
    pub addr: SocketAddr,
    pub publisher: fraudsense_api::publisher::Publisher,
    pub env: TestEnv,
    pub http: reqwest::Client,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    let mut settings = env.settings.clone();
    configure(&mut settings);
    spawn_app_on(env, settings).await
}

/// Serves an api with `settings` (derived from `env`'s), owning `env` for teardown.
pub async fn spawn_app_on(env: TestEnv, settings: Settings) -> TestApp {
    let app = Application::build(settings).await.unwrap_or_else(|e| panic!("api build: {e:#}"));
    let addr = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let publisher = app.publisher();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let http = env.http_client();
    TestApp { addr, publisher, env, http, stop, served }
}

/// A valid transaction body.
pub fn transaction(id: &str, amount: &str) -> Value {
    json!({
        "transaction_id": id,
        "account_id": "acct-1",
        "amount": amount,
        "currency": "EUR",
        "timestamp": "2026-11-20T10:00:00Z",
        "merchant_id": "merchant-1",
        "geo_lat": 48.85,
        "geo_lon": 2.35,
        "country": "FR",
        "channel": "web",
        "metadata": {"device": "d-1"}
    })
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post_json(&self, body: &Value) -> reqwest::Response {
        self.post_raw(body.to_string(), "application/json").await
    }

    pub async fn post_raw(&self, body: impl Into<reqwest::Body>, content_type: &str) -> reqwest::Response {
        self.http
            .post(self.url("/transactions"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST failed: {e}"))
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap_or_else(|e| panic!("GET failed: {e}"))
    }

    pub async fn queued(&self) -> u32 {
        self.env.queued_transactions().await.unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// Stops the server and removes the test's database, queues and keys.
    pub async fn teardown(self) {
        let _ = self.stop.send(());
        let _ = self.served.await;
        self.env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
    }
}

/// Asserts an RFC 9457 body and returns it.
/// The `field` of each error in a validation problem, in order.
pub fn error_fields(problem: &Value) -> Vec<&str> {
    problem["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["field"].as_str()).collect())
        .unwrap_or_default()
}

pub async fn problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert_eq!(content_type.as_deref(), Some("application/problem+json"));
    let body: Value = response.json().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(body["status"], status);
    assert!(body["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["title"].is_string() && body["detail"].is_string());
    body
}

impl TestApp {
    /// POSTs to `path` with an optional raw JSON body, as `actor` (a token for that subject
    /// with every role) or else as `test`.
    pub async fn post_as(&self, path: &str, body: Option<&str>, actor: Option<&str>) -> reqwest::Response {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        if let Some(actor) = actor {
            request = request.bearer_auth(self.env.token(actor, &fraudsense_actors::auth::Role::ALL));
        }
        request.send().await.unwrap_or_else(|e| panic!("POST {path} failed: {e}"))
    }
}

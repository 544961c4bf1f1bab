use std::{net::SocketAddr, time::Duration};

use fraudsense_actors::testing::{TestEnv, eventually};
use fraudsense_api::Application;
use fraudsense_worker::Node;
use lapin::{
    options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions},
    types::FieldTable,
};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// How long any end-to-end condition may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// An api and (optionally) a worker node sharing one isolated slice of the services.
pub struct Pipeline {
    pub api: SocketAddr,
    pub env: TestEnv,
    pub http: reqwest::Client,
    pub node: Option<Node>,
    /// The running api: how to stop it, and its serving task.
    serving: Option<(oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)>,
}

/// Starts the api and a worker node.
pub async fn spawn_pipeline() -> Pipeline {
    let mut p = spawn_api_only().await;
    p.start_worker().await;
    p
}

/// Starts only the api: published transactions wait in the queue.
pub async fn spawn_api_only() -> Pipeline {
    spawn_api_only_with(|_| {}).await
}

/// Starts only the api, on settings adjusted by `configure` (which later workers share).
pub async fn spawn_api_only_with(configure: impl FnOnce(&mut fraudsense_actors::Settings)) -> Pipeline {
    let mut env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    configure(&mut env.settings);
    let (api, serving) = serve_api(env.settings.clone()).await;
    let http = env.http_client();
    Pipeline { api, env, http, node: None, serving: Some(serving) }
}

async fn serve_api(
    settings: fraudsense_actors::Settings,
) -> (SocketAddr, (oneshot::Sender<()>, JoinHandle<std::io::Result<()>>)) {
    let app = Application::build(settings).await.unwrap_or_else(|e| panic!("api build: {e:#}"));
    let api = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop_api, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (api, (stop_api, served))
}

/// The WebSocket handshake for `url`, carrying `token` as a bearer token.
pub fn ws_request(url: &str, token: &str) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap_or_else(|e| panic!("{url}: {e}"));
    let value = format!("Bearer {token}").parse().unwrap_or_else(|e| panic!("{e}"));
    request.headers_mut().insert("authorization", value);
    request
}

/// An exclusive queue bound to `exchange` with `key`, and a consumer on it.
pub async fn tap(env: &TestEnv, exchange: &str, key: &str) -> (lapin::Consumer, lapin::Connection) {
    let (conn, channel) = env.amqp().await.unwrap_or_else(|e| panic!("{e:#}"));
    // Declared by whoever started first; declaring again is a no-op.
    env.topology().declare(&channel).await.unwrap_or_else(|e| panic!("{e}"));
    let options =
        QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
    let queue = channel
        .queue_declare("".into(), options, FieldTable::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "tap".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (consumer, conn)
}

pub fn transaction(id: &str, account: &str, amount: &str, at: &str) -> Value {
    json!({
        "transaction_id": id,
        "account_id": account,
        "amount": amount,
        "currency": "USD",
        "timestamp": at,
        "merchant_id": "merchant-7",
        "country": "US",
        "channel": "pos"
    })
}

impl Pipeline {
    pub async fn start_worker(&mut self) {
        let settings = self.env.settings.clone();
        self.start_worker_with(settings).await;
    }

    pub async fn start_worker_with(&mut self, settings: fraudsense_actors::Settings) {
        let node = Node::start(settings).await.unwrap_or_else(|e| panic!("worker start: {e:#}"));
        self.node = Some(node);
    }

    /// Stops the api the way SIGTERM does and waits until it has finished serving.
    pub async fn stop_api(&mut self) {
        if let Some((stop, served)) = self.serving.take() {
            let _ = stop.send(());
            let finished = tokio::time::timeout(DEADLINE, served).await;
            let served = finished.unwrap_or_else(|_| panic!("the api did not stop within {DEADLINE:?}"));
            served.unwrap_or_else(|e| panic!("{e}")).unwrap_or_else(|e| panic!("api: {e}"));
        }
    }

    /// Starts the api again on the address it had.
    pub async fn start_api(&mut self) {
        assert!(self.serving.is_none(), "the api is running");
        let mut settings = self.env.settings.clone();
        settings.api_addr = self.api;
        let (api, serving) = serve_api(settings).await;
        assert_eq!(api, self.api);
        self.serving = Some(serving);
    }

    pub async fn stop_worker(&mut self) {
        if let Some(node) = self.node.take() {
            node.stop().await;
        }
    }

    /// Any request to the api, returning the response.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, format!("http://{}{path}", self.api));
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.unwrap_or_else(|e| panic!("request failed: {e}"))
    }

    pub async fn post(&self, body: &Value) -> u16 {
        self.http
            .post(format!("http://{}/transactions", self.api))
            .json(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or_else(|e| panic!("POST failed: {e}"))
    }

    /// Publishes `body` straight to the exchange, bypassing the api's idempotency, the way a
    /// broker redelivery or a second publisher would hand the worker the same transaction
    /// again. Waits for the broker's confirm, so ordering with later posts is fixed.
    pub async fn publish_direct(&self, body: &Value) {
        use lapin::{
            BasicProperties,
            options::{BasicPublishOptions, ConfirmSelectOptions},
        };
        let tx = fraudsense_actors::Transaction::parse(body, chrono::Utc::now())
            .unwrap_or_else(|e| panic!("invalid test body: {e:?}"));
        let event = fraudsense_actors::TransactionCreated::new(tx, body.clone(), chrono::Utc::now());
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let (conn, channel) = self.env.amqp().await.unwrap_or_else(|e| panic!("{e:#}"));
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap_or_else(|e| panic!("{e}"));
        let confirm = channel
            .basic_publish(
                self.env.topology().transactions_exchange.as_str().into(),
                fraudsense_actors::topology::TRANSACTION_CREATED.into(),
                BasicPublishOptions::default(),
                &payload,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(confirm.is_ack());
        let _ = conn.close(200, "done".into()).await;
    }

    /// The value of an unlabelled metric (or the sum over its label sets) on the worker.
    pub async fn worker_metric(&self, name: &str) -> f64 {
        let addr = self.node.as_ref().map(|n| n.addr()).unwrap_or_else(|| panic!("no worker"));
        let text =
            self.http.get(format!("http://{addr}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
        let text = text.text().await.unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{')))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// GET /transactions/{id}: status code and body.
    pub async fn get(&self, id: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("http://{}/transactions/{id}", self.api))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET failed: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls GET until the transaction is scored; returns its view.
    pub async fn scored(&self, id: &str) -> Value {
        eventually(DEADLINE, &format!("{id} to be scored"), || async {
            let (status, body) = self.get(id).await;
            Ok((status == 200 && body["status"] == "scored").then_some(body))
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// `SELECT count(*)` with one text parameter.
    pub async fn count(&self, sql: &str, id: &str) -> i64 {
        let pool = self.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
        let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
        client.query_one(sql, &[&id]).await.map(|row| row.get::<_, i64>(0)).unwrap_or_else(|e| panic!("{e}"))
    }

    pub async fn teardown(self) {
        if let Some(node) = self.node {
            node.stop().await;
        }
        if let Some((stop, served)) = self.serving {
            let _ = stop.send(());
            let _ = served.await;
        }
        self.env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
    }
}

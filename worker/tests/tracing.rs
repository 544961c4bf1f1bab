//! One OpenTelemetry trace follows a payment from the HTTP request through the AMQP headers
//! into every actor and down to the SQL statements, exported over OTLP/gRPC to an
//! in-process collector; the same trace id is in the log lines and the alert payload.
//!
//! Its own test binary: it installs the process-wide tracing subscriber.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use fraudsense_actors::{
    settings::LogFormat,
    telemetry,
    testing::{TestEnv, eventually},
};
use futures_util::StreamExt;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value,
    trace::v1::Span,
};
use serde_json::{Value, json};

const DEADLINE: Duration = Duration::from_secs(30);

/// An OTLP/gRPC trace collector that keeps every span it receives.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans =
            request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().map_err(|_| tonic::Status::internal("poisoned"))?.extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Collector {
    async fn start() -> (Self, SocketAddr) {
        let collector = Self::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (collector, addr)
    }

    fn spans(&self) -> Vec<Span> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()?;
    Some(match value {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

/// A writer into a shared buffer, for the log lines.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn lines(&self) -> Vec<Value> {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_http_request_through_the_broker_and_the_actors_to_the_sql() {
    let (collector, otlp) = Collector::start().await;
    let mut env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    env.settings.tracing.otlp_endpoint = Some(format!("http://{otlp}"));
    let logs = Logs::default();
    let writer = logs.clone();
    let telemetry =
        telemetry::init_with_writer("test", LogFormat::Json, &env.settings.tracing, move || writer.clone());

    let app =
        fraudsense_api::Application::build(env.settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    let api = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let node = fraudsense_worker::Node::start(env.settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));

    // A client already tracing its checkout sends its context along.
    let client_trace = "0af7651916cd43dd8448eb211c80319c";
    let client_span = "b7ad6b7169203331";
    let mut stream_request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{api}/alerts/stream"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let bearer = format!("Bearer {}", env.token("tracing-test", &[fraudsense_actors::auth::Role::Analyst]));
    stream_request.headers_mut().insert("authorization", bearer.parse().unwrap_or_else(|e| panic!("{e}")));
    let (mut alerts, _) =
        tokio_tungstenite::connect_async(stream_request).await.unwrap_or_else(|e| panic!("{e}"));
    let body = json!({
        "transaction_id": "traced-1", "account_id": "acct-traced", "amount": "30000", "currency": "USD",
        "timestamp": "2026-11-20T09:00:00Z", "merchant_id": "m-1", "country": "US", "channel": "web",
        "geo_lat": 40.748441, "geo_lon": -73.985664,
        "metadata": {"card_number": "4111111111111111", "email": "jane@example.com"},
    });
    let http = env.http_client();
    let ingest = env.token("tracing-ingest", &[fraudsense_actors::auth::Role::Ingest]);
    let response = http
        .post(format!("http://{api}/transactions"))
        .bearer_auth(&ingest)
        .header("traceparent", format!("00-{client_trace}-{client_span}-01"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 202);

    // The alert payload names the trace.
    let alert = tokio::time::timeout(DEADLINE, async {
        while let Some(Ok(message)) = alerts.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
                let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                if frame["type"] == "alert" {
                    return frame["alert"].clone();
                }
            }
        }
        Value::Null
    })
    .await
    .unwrap_or_else(|_| panic!("no alert within {DEADLINE:?}"));
    assert_eq!(alert["trace_id"], client_trace, "{alert}");
    // So does the transaction view.
    let view: Value = http
        .get(format!("http://{api}/transactions/traced-1"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(view["trace_id"], client_trace, "{view}");

    // Every stage's spans reach the collector, all in the client's trace.
    let wanted = [
        "HTTP POST",
        "publish transaction.created",
        "process_transaction",
        "redis windows",
        "score",
        "commit decisions",
        "INSERT transactions",
        "INSERT scores",
        "INSERT alerts",
        "publish alert",
    ];
    let spans = eventually(DEADLINE, "every stage's span at the collector", || {
        tokio::task::block_in_place(|| telemetry.flush());
        let spans: Vec<Span> =
            collector.spans().into_iter().filter(|s| hex(&s.trace_id) == client_trace).collect();
        let complete = wanted.iter().all(|name| spans.iter().any(|s| s.name == *name));
        async move { Ok(complete.then_some(spans)) }
    })
    .await
    .unwrap_or_else(|e| {
        let names: Vec<String> =
            collector.spans().iter().map(|s| format!("{} {}", s.name, hex(&s.trace_id))).collect();
        panic!("{e:#}; the collector has {names:?}")
    });
    assert!(collector.spans().iter().all(|s| s.name != "Actor"), "actor lifetimes are not exported as spans");
    let named =
        |name: &str| spans.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no {name} span"));
    // The HTTP span continues the client's; the worker's continues the api's publish
    // (through the AMQP headers); the actors' and the SQL statements nest under the worker's.
    assert_eq!(hex(&named("HTTP POST").parent_span_id), client_span);
    let publish = named("publish transaction.created");
    let process = named("process_transaction");
    assert_eq!(process.parent_span_id, publish.span_id, "the consumer continues the publish");
    for child in ["redis windows", "score", "commit decisions"] {
        assert_eq!(named(child).parent_span_id, process.span_id, "{child} under process_transaction");
    }
    let insert = named("INSERT alerts");
    assert_eq!(attribute(insert, "db.system").as_deref(), Some("postgresql"));
    assert_eq!(insert.parent_span_id, named("commit decisions").span_id);
    assert_eq!(attribute(process, "transaction_id").as_deref(), Some("traced-1"));
    assert_eq!(attribute(process, "account_id").as_deref(), Some("acct-traced"));

    // The log lines of the same payment carry the same trace id, and no card or e-mail.
    let lines = logs.lines();
    let raised = lines
        .iter()
        .find(|l| l["message"] == "alert raised")
        .unwrap_or_else(|| panic!("no 'alert raised' line among {} lines", lines.len()));
    assert_eq!(raised["trace_id"], client_trace, "{raised}");
    assert_eq!(
        (&raised["transaction_id"], &raised["account_id"]),
        (&json!("traced-1"), &json!("acct-traced"))
    );
    assert_eq!(raised["span_id"].as_str().map(str::len), Some(16));
    assert!(lines.iter().all(|l| l.get("component").is_some()), "every line names its component");
    let text = String::from_utf8_lossy(&logs.0.lock().map(|b| b.clone()).unwrap_or_default()).into_owned();
    assert!(
        !text.contains("4111111111111111") && !text.contains("jane@example.com"),
        "personal data in the logs"
    );
    assert!(!text.contains("40.748441") && !text.contains("73.985664"), "a location in the logs");
    assert!(
        !text.contains(&ingest) && !text.contains(ingest.split('.').nth(2).unwrap_or("-")),
        "a token in the logs"
    );

    node.stop().await;
    let _ = stop.send(());
    let _ = served.await;
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

//! # FraudSense api
//!
//! The HTTP edge: validates payments, publishes them durably to RabbitMQ, answers
//! queries from PostgreSQL, serves the analysts' alert workflow and administers rule sets
//! and model versions.
//! [`Application::build`] assembles it from [`Settings`]; the binary and the tests start it
//! the same way.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use fraudsense_actors::{
    Settings, features::WindowStore, settings::HttpSettings, store, telemetry::catalog, topology::Topology,
};
use problem::ApiError;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::trace::TraceLayer;

pub mod backstop;
pub mod body;
pub mod dashboard;
pub mod gate;
pub mod metrics;
pub mod openapi;
pub mod problem;
pub mod publisher;
pub mod routes;
pub mod state;
pub mod stream;

use publisher::Publisher;
use routes::admin;
use state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A bound, ready-to-serve api.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    watchdog: tokio::task::JoinHandle<()>,
    /// Set when serving stops: closes every alert stream.
    closing: tokio::sync::watch::Sender<bool>,
}

impl Application {
    /// Connects to PostgreSQL, Redis and RabbitMQ, migrates if configured (then installs and
    /// activates the shipped bootstrap model if no model is active), declares the broker
    /// topology and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        fraudsense_actors::telemetry::metrics();
        catalog::describe();
        catalog::register(catalog::Binary::Api);
        let pool = store::connect(&settings.database).context("building the PostgreSQL pool")?;
        if settings.migrate_on_start {
            store::migrate(&pool).await.context("applying migrations")?;
            store::catalog::ensure_active_model(&pool).await.context("installing the bootstrap model")?;
        }
        let redis = fraudsense_actors::connect_redis(&settings.redis).await.context("connecting to Redis")?;
        let topology = Topology::from_settings(&settings.amqp);
        let publisher = Publisher::new(settings.amqp.clone(), topology);
        // Not fatal: the api starts (and reports not-ready) while the broker is down.
        if let Err(error) = publisher.connect().await {
            tracing::warn!(%error, "broker not reachable at start-up; will retry on demand");
        }
        let gate = gate::Gate::new(
            redis.clone(),
            &settings.redis.key_prefix,
            settings.http.idempotency_ttl,
            settings.http.request_timeout + Duration::from_secs(1),
            settings.http.rate_limit,
            settings.http.rate_window,
        );
        let windows = WindowStore::new(redis.clone(), &settings.redis.key_prefix, &settings.scoring);
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let alerts = stream::AlertFeed::start(&settings.redis, closing_rx)
            .await
            .context("subscribing to the alert channels")?;
        let backstop = backstop::Backstop::start(pool.clone());
        let state = AppState { pool, redis, gate, backstop, windows, publisher, alerts };
        let watchdog = state.publisher.spawn_watchdog();
        let listener = TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("binding {}", settings.api_addr))?;
        Ok(Self { listener, router: router(state.clone(), &settings.http), state, watchdog, closing })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// A handle on the broker publisher (for observing confirms in flight).
    pub fn publisher(&self) -> publisher::Publisher {
        self.state.publisher.clone()
    }

    /// Serves until `shutdown` resolves, then closes the alert streams (code 1001, so
    /// clients reconnect elsewhere), finishes in-flight requests and closes the broker
    /// connection.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(component = "api", %addr, "listening");
        let closing = self.closing;
        let shutdown = async move {
            shutdown.await;
            tracing::info!(component = "api", "shutting down: closing alert streams, finishing requests");
            closing.send_replace(true);
        };
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await?;
        self.watchdog.abort();
        self.state.publisher.close().await;
        Ok(())
    }
}

/// The route table, behind the process-wide protections: requests beyond
/// `HTTP_MAX_IN_FLIGHT` are shed at once and none runs longer than `HTTP_REQUEST_TIMEOUT_MS`
/// (both answered `503` problem+json with `Retry-After`).
pub fn router(state: AppState, http: &HttpSettings) -> Router {
    let protect = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(http.max_in_flight))
        .timeout(http.request_timeout);
    Router::new()
        .route("/transactions", post(routes::transactions::create))
        .route("/transactions/{transaction_id}", get(routes::transactions::get))
        .route("/transactions/{transaction_id}/label", post(routes::transactions::label))
        .route("/accounts/{account_id}", get(routes::accounts::get))
        .route("/alerts", get(routes::alerts::list))
        .route("/alerts/stream", get(stream::stream))
        .route("/alerts/{alert_id}", get(routes::alerts::get))
        .route("/alerts/{alert_id}/ack", post(routes::alerts::ack))
        .route("/alerts/{alert_id}/resolve", post(routes::alerts::resolve))
        .route(
            "/admin/rules",
            get(admin::rule_sets)
                .post(admin::create_rule_set)
                .layer(DefaultBodyLimit::max(admin::MAX_RULES_BODY_BYTES)),
        )
        .route("/admin/rules/active", get(admin::active_rule_set))
        .route("/admin/rules/{version}/activate", post(admin::activate_rule_set))
        .route("/admin/models", get(admin::models))
        .route("/admin/models/{version}", get(admin::model))
        .route("/admin/models/{version}/{action}", post(admin::change_model))
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/app.js", get(dashboard::script))
        .route("/dashboard/app.css", get(dashboard::style))
        .route("/openapi.json", get(openapi_json))
        .route("/metrics", get(|| async { fraudsense_actors::telemetry::render_metrics() }))
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(protect)
        .layer(TraceLayer::new_for_http().make_span_with(request_span).on_response(
            |response: &axum::http::Response<_>, _latency, span: &tracing::Span| {
                span.record("http.response.status_code", response.status().as_u16());
            },
        ))
        // Outermost, so the 503s of `protect` are counted too; `layer` (unlike a layer on
        // the finished service) still sees the matched route.
        .layer(axum::middleware::from_fn(metrics::track))
        .with_state(state)
}

/// The span of one HTTP request: a child of the caller's trace when the request carries
/// W3C `traceparent`, else the root of a new trace.
fn request_span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let method = request.method().as_str();
    let span = tracing::info_span!(
        "http_request",
        component = "api",
        otel.name = %format!("HTTP {method}"),
        otel.kind = "server",
        http.request.method = method,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let headers = request.headers();
    let parent = fraudsense_actors::telemetry::propagation::extract(|key| {
        headers.get(key).and_then(|v| v.to_str().ok()).map(str::to_owned)
    });
    if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
        // Only fails without a tracing subscriber, when there is nothing to join anyway.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    span
}

async fn openapi_json() -> axum::Json<serde_json::Value> {
    axum::Json(openapi::document())
}

async fn not_found() -> ApiError {
    ApiError::NotFound("route")
}

async fn overloaded(error: BoxError) -> ApiError {
    if error.is::<tower::timeout::error::Elapsed>() {
        tracing::warn!("request timed out");
        ApiError::Unavailable { detail: "the request took too long; retry later", retry_after: 1 }
    } else if error.is::<tower::load_shed::error::Overloaded>() {
        tracing::warn!("request shed: too many in flight");
        ApiError::Unavailable { detail: "the server is at capacity; retry later", retry_after: 1 }
    } else {
        ApiError::Internal(anyhow::anyhow!("middleware failed: {error}"))
    }
}

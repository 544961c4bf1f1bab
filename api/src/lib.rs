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
    routing::{MethodRouter, get, post},
};
use fraudsense_actors::{
    Settings, auth::Role, features::WindowStore, settings::HttpSettings, store, telemetry::catalog,
    topology::Topology,
};
use problem::ApiError;
use tokio::net::TcpListener;
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};
use tower_http::trace::TraceLayer;

pub mod auth;
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
        // First: an api that cannot check tokens must not start at all.
        let verifier = std::sync::Arc::new(
            fraudsense_actors::auth::Verifier::from_settings(&settings.auth)
                .context("loading the token keys")?,
        );
        let pool = store::connect_for_lookups(&settings.database).context("building the PostgreSQL pool")?;
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
        let ws_max_message_bytes = settings.http.ws_max_message_bytes;
        let state = AppState::new(state::Shared {
            pool,
            redis,
            gate,
            backstop,
            windows,
            publisher,
            alerts,
            verifier,
            ws_max_message_bytes,
            amqp: settings.amqp.clone(),
        });
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

/// Who may call a route. Reads are open to analysts and admins; the analysts' actions
/// (ack, resolve, label) to analysts; rules, models, the dead-letter queue and the audit
/// trail to admins; ingestion to ingest clients. docs/security.md has the table.
pub mod access {
    use fraudsense_actors::auth::Role;

    /// `POST /transactions`.
    pub const INGEST: (&[Role], &str) = (&[Role::Ingest], "ingest");
    /// Reading transactions, accounts and alerts, and the live stream.
    pub const READ: (&[Role], &str) = (&[Role::Analyst, Role::Admin], "analyst or admin");
    /// Acknowledging, resolving, labelling.
    pub const ANALYST: (&[Role], &str) = (&[Role::Analyst], "analyst");
    /// Rules, models, the dead-letter queue, the audit trail.
    pub const ADMIN: (&[Role], &str) = (&[Role::Admin], "admin");
}

/// The route table, behind the process-wide protections: requests beyond
/// `HTTP_MAX_IN_FLIGHT` are shed at once and none runs longer than `HTTP_REQUEST_TIMEOUT_MS`
/// (both answered `503` problem+json with `Retry-After`); header sections over
/// `HTTP_MAX_HEADER_BYTES` get `431`; every route but health, metrics, the OpenAPI document
/// and the dashboard's static files needs a bearer token with the route's role.
pub fn router(state: AppState, http: &HttpSettings) -> Router {
    use access::{ADMIN, ANALYST, INGEST, READ};
    let protect = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(http.max_in_flight))
        .timeout(http.request_timeout);
    let verifier = state.verifier.clone();
    let only = |(roles, needs): (&'static [Role], &'static str), route: MethodRouter<AppState>| {
        let guard = auth::Guard::new(verifier.clone(), roles, needs);
        route.route_layer(axum::middleware::from_fn_with_state(guard, auth::guard))
    };
    let router = Router::new()
        .route("/transactions", only(INGEST, post(routes::transactions::create)))
        .route("/transactions/{transaction_id}", only(READ, get(routes::transactions::get)))
        .route("/transactions/{transaction_id}/label", only(ANALYST, post(routes::transactions::label)))
        .route("/accounts/{account_id}", only(READ, get(routes::accounts::get)))
        .route("/alerts", only(READ, get(routes::alerts::list)))
        .route("/alerts/stream", only(READ, get(stream::stream)))
        .route("/alerts/{alert_id}", only(READ, get(routes::alerts::get)))
        .route("/alerts/{alert_id}/ack", only(ANALYST, post(routes::alerts::ack)))
        .route("/alerts/{alert_id}/resolve", only(ANALYST, post(routes::alerts::resolve)))
        .route(
            "/admin/rules",
            only(
                ADMIN,
                get(admin::rule_sets)
                    .post(admin::create_rule_set)
                    .layer(DefaultBodyLimit::max(admin::MAX_RULES_BODY_BYTES)),
            ),
        )
        .route("/admin/rules/active", only(ADMIN, get(admin::active_rule_set)))
        .route("/admin/rules/{version}/activate", only(ADMIN, post(admin::activate_rule_set)))
        .route("/admin/models", only(ADMIN, get(admin::models)))
        .route("/admin/models/{version}", only(ADMIN, get(admin::model)))
        .route("/admin/models/{version}/{action}", only(ADMIN, post(admin::change_model)))
        .route("/admin/dlq", only(ADMIN, get(routes::dlq::list)))
        .route("/admin/dlq/replay", only(ADMIN, post(routes::dlq::replay)))
        .route("/admin/dlq/purge", only(ADMIN, post(routes::dlq::purge)))
        .route("/audit", only(ADMIN, get(routes::audit::list)))
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
        .layer(axum::middleware::from_fn_with_state(http.max_header_bytes, auth::limit_headers));
    // Closed by default: without configured origins no CORS header is ever sent.
    let router = match auth::cors(&http.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router
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

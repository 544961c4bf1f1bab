//! # FraudSense api
//!
//! The HTTP edge: validates payments, publishes them durably to RabbitMQ and answers
//! queries from PostgreSQL. [`Application::build`] assembles it from [`Settings`]; the
//! binary and the tests start it the same way.

use std::{future::Future, net::SocketAddr};

use anyhow::Context;
use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{get, post},
};
use fraudsense_actors::{Settings, store, topology::Topology};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

pub mod body;
pub mod gate;
pub mod problem;
pub mod publisher;
pub mod routes;
pub mod state;

use publisher::Publisher;
use state::AppState;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A bound, ready-to-serve api.
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
}

impl Application {
    /// Connects to PostgreSQL, Redis and RabbitMQ, migrates if configured, declares the
    /// broker topology and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = store::connect(&settings.database).context("building the PostgreSQL pool")?;
        if settings.migrate_on_start {
            store::migrate(&pool).await.context("applying migrations")?;
        }
        let redis = fraudsense_actors::connect_redis(&settings.redis).await.context("connecting to Redis")?;
        let topology = Topology::new(&settings.amqp.prefix, settings.amqp.delivery_limit);
        let publisher = Publisher::new(settings.amqp.clone(), topology);
        // Not fatal: the api starts (and reports not-ready) while the broker is down.
        if let Err(error) = publisher.connect().await {
            tracing::warn!(%error, "broker not reachable at start-up; will retry on demand");
        }
        let gate = gate::Gate::new(
            redis.clone(),
            &settings.redis.key_prefix,
            settings.http.idempotency_ttl,
            settings.http.rate_limit,
            settings.http.rate_window,
        );
        let state = AppState { pool, redis, gate, publisher };
        let listener = TcpListener::bind(settings.api_addr)
            .await
            .with_context(|| format!("binding {}", settings.api_addr))?;
        Ok(Self { listener, router: router(state.clone()), state })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then finishes in-flight requests and closes the
    /// broker connection.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(component = "api", %addr, "listening");
        axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown).await?;
        self.state.publisher.close().await;
        Ok(())
    }
}

/// The route table.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/transactions", post(routes::transactions::create))
        .route("/transactions/{transaction_id}", get(routes::transactions::get))
        .route("/health", get(routes::health::health))
        .route("/ready", get(routes::health::ready))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

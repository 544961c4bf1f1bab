//! # FraudSense worker node
//!
//! Connects to PostgreSQL and Redis, starts the supervision tree from
//! [`fraudsense_actors`] (which connects to RabbitMQ itself and reconnects on failure) and
//! serves `/metrics`, `/health` and `/ready`. [`Node::start`] builds it from [`Settings`]; the binary
//! and the tests start it the same way.

use std::{net::SocketAddr, time::Duration};

pub mod bench;
pub mod dlq;
pub mod load;
pub mod models;

use anyhow::Context;
use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use fraudsense_actors::{
    Settings, connect_redis,
    engine::EngineWatch,
    features::WindowStore,
    health,
    outbox::AlertPublisher,
    scored::ScoredPublisher,
    store,
    supervisor::{Supervisor, SupervisorArgs, SupervisorMsg},
    telemetry::catalog,
};
use ractor::{Actor, ActorRef, ActorStatus};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// Longest the node waits for its actors to stop on shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running worker node.
pub struct Node {
    supervisor: ActorRef<SupervisorMsg>,
    supervisor_done: JoinHandle<()>,
    http: JoinHandle<()>,
    http_stop: oneshot::Sender<()>,
    addr: SocketAddr,
    drain_timeout: Duration,
    node_id: String,
    /// Keeps the engine current; dropped (and stopped) with the node.
    _engine: EngineWatch,
    /// Delivers committed alerts to Redis and RabbitMQ; stopped with the node.
    _outbox: AlertPublisher,
    /// Publishes `transaction.scored` and then acks (when `PUBLISH_SCORED`); stopped with
    /// the node, after the drain.
    _scored: Option<ScoredPublisher>,
}

#[derive(Clone)]
struct Health {
    pool: deadpool_postgres::Pool,
    redis: fred::clients::Client,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Node {
    /// Connects, migrates if configured, starts the actor tree and the health server.
    pub async fn start(settings: Settings) -> anyhow::Result<Self> {
        fraudsense_actors::telemetry::metrics();
        catalog::describe();
        catalog::register(catalog::Binary::Worker);
        let pool = store::connect(&settings.database).context("building the PostgreSQL pool")?;
        if settings.migrate_on_start {
            store::migrate(&pool).await.context("applying migrations")?;
            if let Some(version) =
                store::catalog::ensure_active_model(&pool).await.context("installing the bootstrap model")?
            {
                tracing::info!(component = "worker", version, "bootstrap model activated");
            }
        }
        let engine = EngineWatch::start(pool.clone(), settings.scoring.refresh)
            .await
            .context("loading the active rules and model")?;
        let redis = connect_redis(&settings.redis).await.context("connecting to Redis")?;
        let windows = WindowStore::new(redis.clone(), &settings.redis.key_prefix, &settings.scoring);
        let listener = TcpListener::bind(settings.worker_addr)
            .await
            .with_context(|| format!("binding {}", settings.worker_addr))?;
        let addr = listener.local_addr()?;

        let outbox = AlertPublisher::start(&settings, pool.clone(), redis.clone());
        let scored = settings.amqp.publish_scored.then(|| ScoredPublisher::start(&settings));
        let drain_timeout = settings.shutdown_timeout;
        let node_id = new_node_id();
        tracing::info!(component = "worker", node_id, "node identity");
        let args = SupervisorArgs {
            node_id: node_id.clone(),
            settings,
            pool: pool.clone(),
            windows,
            engine: engine.receiver(),
            alerts_raised: outbox.waker(),
            scored: scored.as_ref().map(ScoredPublisher::sender),
        };
        let (supervisor, supervisor_done) =
            Actor::spawn(None, Supervisor, args).await.context("starting the supervision tree")?;

        let health = Health { pool, redis, supervisor: supervisor.clone() };
        let app = Router::new()
            .route("/health", get(|| async { Json(json!({ "status": "ok" })) }))
            .route("/ready", get(ready))
            .route("/metrics", get(|| async { fraudsense_actors::telemetry::render_metrics() }))
            .with_state(health);
        let (http_stop, stopped) = oneshot::channel::<()>();
        let http = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::error!(%error, "health server failed");
            }
        });
        tracing::info!(component = "worker", %addr, "worker node started");
        Ok(Self {
            supervisor,
            supervisor_done,
            http,
            http_stop,
            addr,
            drain_timeout,
            node_id,
            _engine: engine,
            _outbox: outbox,
            _scored: scored,
        })
    }

    /// This node's id (in its consumer tags and in `scores.processed_by`).
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Where `/health` and `/ready` are served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs until `shutdown` resolves (or the tree dies), then stops.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) {
        tokio::select! {
            () = shutdown => {},
            _ = &mut self.supervisor_done => {
                tracing::error!(component = "worker", "supervision tree exited");
            },
        }
        self.stop().await;
    }

    /// Graceful stop: stop consuming, let in-flight work commit and be acked (for at most
    /// `SHUTDOWN_TIMEOUT_SECS`), then stop the tree — closing the channel returns anything
    /// still unacked to the queue — and the health server.
    pub async fn stop(self) {
        match self.supervisor.call(SupervisorMsg::Drain, Some(self.drain_timeout)).await {
            Ok(ractor::rpc::CallResult::Success(())) => tracing::info!(component = "worker", "drained"),
            Ok(_) => {
                tracing::warn!(component = "worker", "drain timed out; unacked work returns to the queue")
            }
            Err(error) => tracing::warn!(component = "worker", %error, "drain not possible"),
        }
        self.kill().await;
    }

    /// Stops without draining (what a crash looks like to the broker, minus the process exit):
    /// whatever is unacked returns to the queue when the channel closes.
    pub async fn kill(self) {
        let _ = self.supervisor.stop_and_wait(Some("node stopping".into()), Some(STOP_TIMEOUT)).await;
        let _ = self.http_stop.send(());
        let _ = self.http.await;
        tracing::info!(component = "worker", "worker node stopped");
    }
}

async fn ready(State(h): State<Health>) -> (StatusCode, Json<Value>) {
    let (postgres, redis) = tokio::join!(health::postgres_up(&h.pool), health::redis_up(&h.redis));
    let tree = matches!(h.supervisor.get_status(), ActorStatus::Running);
    let (ok, body) = health::report(&[("postgres", postgres), ("redis", redis), ("actors", tree)]);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

/// A node id unique enough to tell live nodes apart: process id and start time.
fn new_node_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{:x}{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

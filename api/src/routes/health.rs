//! Liveness (`/health`: the process answers) and readiness (`/ready`: its dependencies do).

use axum::{Json, extract::State, http::StatusCode};
use fraudsense_actors::health;
use serde_json::{Value, json};

use crate::state::AppState;

/// Always 200 while the process serves requests.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, description = "The process serves requests", body = crate::openapi::Health)))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// 200 when PostgreSQL, Redis and RabbitMQ all answer, else 503 naming the ones that do not.
#[utoipa::path(get, path = "/ready", tag = "operations", responses(
    (status = 200, description = "Every dependency answers", body = crate::openapi::Readiness),
    (status = 503, description = "Some dependency is down (named in `checks`)", body = crate::openapi::Readiness),
))]
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (postgres, redis, rabbitmq) = tokio::join!(
        health::postgres_up(&state.pool),
        health::redis_up(&state.redis),
        health::bounded(state.publisher.is_ready()),
    );
    let (ok, body) = health::report(&[("postgres", postgres), ("redis", redis), ("rabbitmq", rabbitmq)]);
    let status = if ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(body))
}

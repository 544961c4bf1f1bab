//! `/admin/dlq…`: the dead-letter queue for admins — peek, replay, purge. Replays and purges
//! are recorded in the audit trail with the queue depth before and after.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{RawQuery, State, rejection::BytesRejection},
    http::HeaderMap,
};
use fraudsense_actors::{
    auth::Principal,
    dlq::{self, DeadLetter, DlqError},
    transaction::FieldError,
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    body::json_body,
    problem::ApiError,
    routes::query::{field_error, known_pairs, object_fields},
    state::AppState,
};

/// Most messages one call peeks at or replays.
pub const MAX_LIMIT: usize = 1000;

/// `GET /admin/dlq`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetters {
    /// Messages in the dead-letter queue now.
    pub depth: u32,
    /// The oldest of them (up to `limit`), left in place.
    pub messages: Vec<DeadLetter>,
}

/// What a replay or purge did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeadLetterOutcome {
    /// Messages republished (replay) or deleted (purge).
    pub count: u64,
}

fn broker_failed(error: DlqError) -> ApiError {
    tracing::error!(%error, "dead-letter queue operation failed");
    ApiError::Unavailable { detail: "the broker or the database is unavailable; retry later", retry_after: 1 }
}

/// `limit` from a query or a body: 1 to [`MAX_LIMIT`].
fn limit(value: Option<&Value>, default: usize) -> Result<usize, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(default),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| field_error("limit", "must be an integer from 1 to 1000")),
    }
}

/// The oldest dead letters with why they died, left where they are.
#[utoipa::path(
    get,
    path = "/admin/dlq",
    operation_id = "list_dead_letters",
    tag = "admin",
    params(("limit" = Option<u32>, Query, description = "How many to show, 1 to 1000 (default 100)", minimum = 1, maximum = 1000, nullable = false)),
    responses(
        (status = 200, description = "The queue's depth and its oldest messages", body = DeadLetters),
        (status = 422, description = "Invalid limit", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<DeadLetters>, ApiError> {
    let mut errors = Vec::new();
    let pairs = known_pairs(query.as_deref(), &["limit"], &mut errors);
    // A number stays a number; anything else stays text, which `limit` refuses.
    let given =
        pairs.first().map(|(_, v)| v.parse::<u64>().map_or_else(|_| Value::from(v.as_str()), Value::from));
    let limit = limit(given.as_ref(), 100);
    let limit = limit.map_err(|e| errors.push(e)).ok();
    let (Some(limit), true) = (limit, errors.is_empty()) else {
        return Err(ApiError::Validation(errors));
    };
    let (depth, messages) = dlq::peek(&state.amqp, limit).await.map_err(broker_failed)?;
    Ok(Json(DeadLetters { depth, messages }))
}

/// The request body of a replay: `{}` or `{"limit": N}` (default 100).
fn replay_limit(body: &Value) -> Result<usize, Vec<FieldError>> {
    let (fields, mut errors) = object_fields(body, &["limit"])?;
    let limit = limit(fields.get("limit"), 100).map_err(|e| errors.push(e)).ok();
    match limit {
        Some(limit) if errors.is_empty() => Ok(limit),
        _ => Err(errors),
    }
}

/// Republishes up to `limit` dead letters (oldest first) for another round of attempts;
/// each leaves the dead-letter queue only once the broker confirmed its replay. Audited.
#[utoipa::path(
    post,
    path = "/admin/dlq/replay",
    operation_id = "replay_dead_letters",
    tag = "admin",
    request_body(content = crate::openapi::ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were replayed", body = DeadLetterOutcome),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker or database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn replay(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeadLetterOutcome>, ApiError> {
    let limit = replay_limit(&json_body(&headers, body)?).map_err(ApiError::Validation)?;
    let replayed =
        dlq::replay_audited(&state.pool, &state.amqp, limit, &actor).await.map_err(broker_failed)?;
    tracing::info!(actor = actor.subject, replayed, "dead letters replayed");
    Ok(Json(DeadLetterOutcome { count: replayed as u64 }))
}

/// Deletes every dead letter. Irreversible, so the body must say so: `{"confirm": true}`.
/// Audited with how many there were.
#[utoipa::path(
    post,
    path = "/admin/dlq/purge",
    operation_id = "purge_dead_letters",
    tag = "admin",
    request_body(content = crate::openapi::PurgeRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "How many were deleted", body = DeadLetterOutcome),
        (status = 400, description = "Malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "`confirm` is not `true`, or unknown fields", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Broker or database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn purge(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<DeadLetterOutcome>, ApiError> {
    let body = json_body(&headers, body)?;
    let (fields, mut errors) = object_fields(&body, &["confirm"]).map_err(ApiError::Validation)?;
    if fields.get("confirm") != Some(&Value::Bool(true)) {
        errors.push(field_error("confirm", "must be true: purging deletes every dead letter"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let purged = dlq::purge_audited(&state.pool, &state.amqp, &actor).await.map_err(broker_failed)?;
    tracing::info!(actor = actor.subject, purged, "dead letters purged");
    Ok(Json(DeadLetterOutcome { count: u64::from(purged) }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn replay_bodies_are_checked() {
        assert_eq!(replay_limit(&json!({})), Ok(100));
        assert_eq!(replay_limit(&json!({"limit": 5})), Ok(5));
        let fields =
            |v| replay_limit(&v).err().unwrap_or_default().into_iter().map(|e| e.field).collect::<Vec<_>>();
        assert_eq!(fields(json!({"limit": 0, "x": 1})), ["x", "limit"]);
        assert_eq!(fields(json!({"limit": "5"})), ["limit"]);
        assert_eq!(fields(json!([])), ["body"]);
    }
}

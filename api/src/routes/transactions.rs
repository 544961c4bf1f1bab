//! `POST /transactions` (validate, publish, confirm, 202) and `GET /transactions/{id}`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use chrono::Utc;
use fraudsense_actors::{Transaction, TransactionCreated, store, transaction::MAX_ID_LEN};
use serde_json::{Value, json};

use crate::{problem::ApiError, publisher::PublishError, state::AppState};

/// Validates the body and answers `202` once the broker confirmed the persistent message.
#[tracing::instrument(skip_all, fields(component = "api", transaction_id, account_id))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let body = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        _ => ApiError::BadRequest(rejection.body_text()),
    })?;
    let raw: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("body is not valid JSON: {e}")))?;
    let transaction = Transaction::parse(&raw, Utc::now()).map_err(ApiError::Validation)?;
    let span = tracing::Span::current();
    span.record("transaction_id", transaction.transaction_id.as_str());
    span.record("account_id", transaction.account_id.as_str());

    let transaction_id = transaction.transaction_id.clone();
    let event = TransactionCreated::new(transaction, raw, Utc::now());
    state.publisher.publish(&event).await.map_err(|error| {
        tracing::warn!(%error, "publish not confirmed");
        match error {
            PublishError::Encode(e) => ApiError::Internal(e.into()),
            _ => ApiError::Unavailable {
                detail: "the transaction could not be queued; retry later",
                retry_after: 1,
            },
        }
    })?;
    tracing::info!("transaction queued");
    Ok((StatusCode::ACCEPTED, Json(json!({ "transaction_id": transaction_id, "status": "queued" }))))
}

/// The transaction with its score and alerts.
#[tracing::instrument(skip_all, fields(component = "api", transaction_id = %id))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(ApiError::BadRequest(format!("transaction_id must be 1 to {MAX_ID_LEN} characters")));
    }
    match store::transaction_view(&state.pool, &id).await {
        Ok(Some(view)) => Ok(Json(view)),
        Ok(None) => Err(ApiError::NotFound("transaction")),
        Err(error) => {
            tracing::error!(%error, "transaction lookup failed");
            Err(ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 })
        }
    }
}

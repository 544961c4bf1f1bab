//! `POST /transactions` (validate, admit, publish, confirm, 202) and `GET /transactions/{id}`.

use std::time::Duration;

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::Utc;
use fraudsense_actors::{
    Transaction, TransactionCreated,
    auth::Principal,
    labels::{Label, LabelValue, NewLabel},
    store::{self, LabelOutcome},
};
use serde_json::{Value, json};

use crate::{
    backstop::Lookup,
    body::json_body,
    gate::{Admission, Prior, RateStatus, fingerprint},
    problem::{ApiError, rate_limit_headers},
    publisher::PublishError,
    state::AppState,
};

/// How often a request polls while a racing request with the same id is publishing.
const RACE_POLL: Duration = Duration::from_millis(20);

/// Validates the body and answers `202` once the broker confirmed the persistent message.
/// The same `transaction_id` with the same body answers the same `202` without publishing
/// again; with a different body, `409`.
#[utoipa::path(
    post,
    path = "/transactions",
    tag = "transactions",
    request_body(content = crate::openapi::TransactionRequest, content_type = "application/json"),
    responses(
        (status = 202, description = "Confirmed by the broker: durably queued for scoring", body = crate::openapi::Accepted,
            headers(
                ("RateLimit-Limit" = u32, description = "Submissions allowed per window for this account"),
                ("RateLimit-Remaining" = u32, description = "Submissions left in the window"),
                ("RateLimit-Reset" = u32, description = "Seconds until the window resets"),
                ("Idempotent-Replayed" = String, description = "`true` when this answers an earlier identical request"),
            )),
        (status = 400, description = "Malformed JSON or bad UTF-8", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "This transaction_id was already submitted with a different body", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (unknown, duplicate, missing, wrong type or out of range), each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The account exceeded its rate limit", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
        (status = 503, description = "Not queued (broker unreachable, blocked or not confirming, or the server is at capacity): retry", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", transaction_id, account_id))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let result = ingest(&state, &headers, body).await;
    let outcome = match &result {
        Ok(response) if response.headers().contains_key(REPLAYED) => "replayed",
        Ok(_) => "accepted",
        Err(ApiError::Conflict(_)) => "conflict",
        Err(ApiError::RateLimited(_)) => "rate_limited",
        Err(ApiError::Unavailable { .. } | ApiError::Internal(_)) => "unavailable",
        Err(_) => "rejected",
    };
    metrics::counter!("transactions_ingested_total", "outcome" => outcome).increment(1);
    result
}

/// Header marking an answer that repeats an earlier identical request's.
const REPLAYED: &str = "idempotent-replayed";

/// The body of [`create`].
async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = json_body(headers, body)?;
    let transaction = Transaction::parse(&raw, Utc::now()).map_err(ApiError::Validation)?;
    let span = tracing::Span::current();
    span.record("transaction_id", transaction.transaction_id.as_str());
    span.record("account_id", transaction.account_id.as_str());
    let id = transaction.transaction_id.clone();
    let fp = fingerprint(&raw);

    // 1. Idempotency and 2. the rate limit, in one Redis script (replays are not counted),
    // together with 3. the backstop for ids whose Redis entry expired (the database's copy
    // decides): independent lookups, so one wait instead of two. A replay pays for a
    // backstop lookup it does not need, but lookups are batched (one query for up to 512
    // ids), so a client replaying in a loop cannot multiply PostgreSQL's queries.
    let (rate, stored) = match admit(state, &id, &fp, &transaction.account_id).await? {
        Admitted::Ours { rate, stored } => (rate, stored),
        Admitted::Answered(answer) => return Ok(answer),
    };
    if !rate.allowed {
        return Err(ApiError::RateLimited(rate));
    }
    match stored {
        Ok(Some(stored)) => {
            let stored_fp = fingerprint(&stored);
            state.gate.mark_queued(&id, &stored_fp).await.map_err(redis_down)?;
            return if stored_fp == fp { Ok(accepted(&id, Some(&rate), true)) } else { Err(conflict(&id)) };
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "idempotency backstop skipped: database unavailable"),
    }

    // 4. Publish and wait for the broker's confirm.
    let event = TransactionCreated::new(transaction, raw, Utc::now());
    if let Err(error) = state.publisher.publish(&event).await {
        tracing::warn!(%error, "publish not confirmed");
        release(state, &id, &fp).await;
        return Err(match error {
            PublishError::Encode(e) => ApiError::Internal(e.into()),
            _ => ApiError::Unavailable {
                detail: "the transaction could not be queued; retry later",
                retry_after: 1,
            },
        });
    }
    if let Err(error) = state.gate.mark_queued(&id, &fp).await {
        // The message is safely queued; a retry would be recognised by the worker's
        // idempotent writes, so this is worth a warning, not a failed request.
        tracing::warn!(%error, "could not record the queued state");
    }
    tracing::debug!("transaction queued");
    Ok(accepted(&id, Some(&rate), false))
}

/// How admission came out for a request that may go on.
enum Admitted {
    /// This request owns the id now (or was refused by the limit, which gave it back).
    Ours {
        /// How the account's count came out.
        rate: RateStatus,
        /// The backstop's answer for the id.
        stored: Lookup,
    },
    /// An earlier identical request was queued: this is the answer.
    Answered(Response),
}

/// Claims `id` and counts it, looking the id up in the database at the same time; waits
/// while a racing identical request publishes.
async fn admit(state: &AppState, id: &str, fp: &str, account_id: &str) -> Result<Admitted, ApiError> {
    let deadline = tokio::time::Instant::now() + state.publisher.confirm_timeout() + Duration::from_secs(1);
    loop {
        let (admission, stored) =
            tokio::join!(state.gate.admit(id, fp, account_id), state.backstop.raw_payload(id));
        match admission.map_err(redis_down)? {
            Admission::Counted(rate) => return Ok(Admitted::Ours { rate, stored }),
            Admission::Prior(Prior { fingerprint, .. }) if fingerprint != fp => return Err(conflict(id)),
            Admission::Prior(Prior { queued: true, .. }) => {
                return Ok(Admitted::Answered(accepted(id, None, true)));
            }
            Admission::Prior(Prior { queued: false, .. }) => {
                // A racing request with the same body is publishing: wait for its outcome.
                if tokio::time::Instant::now() >= deadline {
                    return Err(ApiError::Unavailable {
                        detail: "the same transaction is still being queued; retry later",
                        retry_after: 1,
                    });
                }
                tokio::time::sleep(RACE_POLL).await;
            }
        }
    }
}

async fn release(state: &AppState, id: &str, fp: &str) {
    if let Err(error) = state.gate.release(id, fp).await {
        tracing::warn!(%error, "could not release the idempotency claim; it expires with its TTL");
    }
}

fn accepted(id: &str, rate: Option<&RateStatus>, replayed: bool) -> Response {
    let mut response =
        (StatusCode::ACCEPTED, Json(json!({ "transaction_id": id, "status": "queued" }))).into_response();
    let headers = response.headers_mut();
    if let Some(rate) = rate {
        rate_limit_headers(headers, rate);
    }
    if replayed {
        headers.insert(REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

fn conflict(id: &str) -> ApiError {
    ApiError::Conflict(format!("transaction {id} was already submitted with a different body"))
}

fn redis_down(error: fred::prelude::Error) -> ApiError {
    tracing::error!(%error, "redis unavailable");
    ApiError::Unavailable { detail: "the idempotency store is unavailable; retry later", retry_after: 1 }
}

/// The transaction with its score and alerts; `{"status": "queued"}` while it waits for a worker.
#[utoipa::path(
    get,
    path = "/transactions/{transaction_id}",
    tag = "transactions",
    params(("transaction_id" = String, Path, description = "The client's transaction id")),
    responses(
        (status = 200, description = "The transaction, its decision and alerts (or only its queued status)", body = crate::openapi::TransactionView),
        (status = 400, description = "Malformed id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "Never accepted (or forgotten and not processed)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or Redis unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", transaction_id = %id))]
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    ApiError::check_id("transaction_id", &id)?;
    match store::transaction_view(&state.pool, &id).await {
        Ok(Some(view)) => Ok(Json(view)),
        Ok(None) => match state.gate.lookup(&id).await {
            Ok(Some(Prior { queued: true, .. })) => {
                Ok(Json(json!({ "transaction_id": id, "status": "queued" })))
            }
            Ok(_) => Err(ApiError::NotFound("transaction")),
            Err(error) => Err(redis_down(error)),
        },
        Err(error) => {
            tracing::error!(%error, "transaction lookup failed");
            Err(ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 })
        }
    }
}

/// Records a fraud/legit label for a processed transaction (feedback for supervised
/// training). Idempotent: the same label again answers `200` with the stored label; a
/// different label answers `409` and leaves the first one in place.
#[utoipa::path(
    post,
    path = "/transactions/{transaction_id}/label",
    tag = "labels",
    params(("transaction_id" = String, Path, description = "The transaction to label")),
    request_body(content = crate::openapi::LabelRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Label recorded", body = Label),
        (status = 200, description = "The same label was already recorded", body = Label),
        (status = 400, description = "Malformed JSON or id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No processed transaction with this id", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A different label is already recorded", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", transaction_id = %id))]
pub async fn label(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    ApiError::check_id("transaction_id", &id)?;
    let raw = json_body(&headers, body)?;
    let new = NewLabel::parse(&raw).map_err(ApiError::Validation)?;
    match record_label(&state, &id, &new, &actor).await? {
        Labelled::Created(label) => Ok((StatusCode::CREATED, Json(label)).into_response()),
        Labelled::Unchanged(label) => Ok((StatusCode::OK, Json(label)).into_response()),
    }
}

/// What [`record_label`] did.
pub(crate) enum Labelled {
    /// A new label was stored.
    Created(Label),
    /// The same label was already there.
    Unchanged(Label),
}

/// Records a label in PostgreSQL and in its merchant's label set in Redis (the merchant
/// risk feature learns from labels too): what `POST /transactions/{id}/label` and
/// `POST /alerts/{id}/resolve` both do. A different label already there is a `409`, an
/// unknown transaction a `404`, either store down a `503`. Recording in Redis is
/// idempotent, so a retry after a Redis failure completes it.
pub(crate) async fn record_label(
    state: &AppState,
    id: &str,
    new: &NewLabel,
    actor: &Principal,
) -> Result<Labelled, ApiError> {
    let outcome = store::record_label(&state.pool, id, new, actor).await.map_err(|error| {
        tracing::error!(%error, "label not recorded");
        ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 }
    })?;
    let feed = |label: Label| async move {
        let merchant = store::merchant_of(&state.pool, &label.transaction_id).await.ok().flatten();
        let recorded = match &merchant {
            Some(m) => state
                .windows
                .record_label(m, &label.transaction_id, label.label == LabelValue::Fraud, label.labeled_at)
                .await
                .map_err(|e| e.to_string()),
            None => Err("transaction not found".to_owned()),
        };
        recorded.map(|()| label).map_err(|error| {
            tracing::error!(%error, "label stored but not yet in the feature store");
            ApiError::Unavailable { detail: "the feature store is unavailable; retry later", retry_after: 1 }
        })
    };
    match outcome {
        LabelOutcome::Created(label) => {
            let label = feed(label).await?;
            tracing::info!(label = label.label.as_str(), source = %label.source, "label recorded");
            Ok(Labelled::Created(label))
        }
        LabelOutcome::Unchanged(label) => Ok(Labelled::Unchanged(feed(label).await?)),
        LabelOutcome::Conflict(existing) => Err(ApiError::Conflict(format!(
            "transaction {id} is already labelled {} (by {})",
            existing.label.as_str(),
            existing.source
        ))),
        LabelOutcome::UnknownTransaction => Err(ApiError::NotFound("processed transaction")),
    }
}

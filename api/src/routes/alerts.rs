//! The analysts' alert workflow: `GET /alerts` (filters, keyset pagination),
//! `GET /alerts/{alert_id}`, `POST /alerts/{alert_id}/ack` and
//! `POST /alerts/{alert_id}/resolve`.
//!
//! Acknowledging and resolving name their author (the token's `sub`), keep the first time
//! and author, and write the change to the audit trail in the same transaction. Resolving labels the alert's transaction exactly as
//! `POST /transactions/{id}/label` does (source `analyst`), so every verdict feeds training
//! and the merchant risk feature.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, RawQuery, State, rejection::BytesRejection},
    http::HeaderMap,
};
use chrono::{DateTime, Utc};
use fraudsense_actors::{
    auth::Principal,
    labels::{LabelValue, MAX_NOTE_CHARS, NewLabel},
    scoring::RiskLabel,
    store::{
        StoreError,
        alerts::{self, AlertFilter, AlertRecord, AlertStatus, Resolution},
    },
    transaction::{FieldError, identifier_problem},
};
use serde::Serialize;
use serde_json::Value;

use crate::{
    body::json_body,
    problem::ApiError,
    routes::{
        query::{field_error, known_pairs, object_fields, page},
        transactions::record_label,
    },
    state::AppState,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 500;

/// One page of `GET /alerts`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlertPage {
    /// Newest first.
    pub alerts: Vec<AlertRecord>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<i64>,
}

/// Reads the `GET /alerts` query, reporting every bad parameter by name. Parameters it
/// does not know are ignored; a known one given twice is an error.
pub fn parse_filter(query: Option<&str>) -> Result<AlertFilter, Vec<FieldError>> {
    let mut filter = AlertFilter {
        status: None,
        risk: None,
        account_id: None,
        from: None,
        to: None,
        before: None,
        limit: DEFAULT_LIMIT,
    };
    let mut errors = Vec::new();
    let known = ["status", "risk", "account_id", "from", "to", "limit", "cursor"];
    for (key, value) in known_pairs(query, &known, &mut errors) {
        let (key, value) = (key.as_str(), value.as_str());
        match key {
            "status" => match AlertStatus::parse(value) {
                Some(status) => filter.status = Some(status),
                None => errors.push(field_error(key, "must be open, acknowledged or resolved")),
            },
            "risk" => match [RiskLabel::High, RiskLabel::Medium, RiskLabel::Low]
                .into_iter()
                .find(|r| r.as_str() == value)
            {
                Some(risk) => filter.risk = Some(risk),
                None => errors.push(field_error(key, "must be HIGH, MEDIUM or LOW")),
            },
            "account_id" => match identifier_problem(value) {
                None => filter.account_id = Some(value.to_owned()),
                Some(why) => errors.push(field_error(key, &why)),
            },
            "from" | "to" => match timestamp(value) {
                Some(t) if key == "from" => filter.from = Some(t),
                Some(t) => filter.to = Some(t),
                None => errors.push(field_error(key, "must be an RFC 3339 timestamp")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                _ => errors.push(field_error(key, "must be an integer from 1 to 500")),
            },
            _ => match value.parse::<i64>() {
                Ok(n) if n > 0 => filter.before = Some(n),
                _ => errors.push(field_error(key, "must be a positive integer (an alert_id)")),
            },
        }
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        errors.push(field_error("to", "must not be before from"));
    }
    if errors.is_empty() { Ok(filter) } else { Err(errors) }
}

/// An RFC 3339 moment. A raw `+` offset arrives as a space after form decoding; no
/// timestamp contains a space.
fn timestamp(value: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&value.replace(' ', "+")).ok().map(|t| t.with_timezone(&Utc))
}

/// The `{alert_id}` path segment: a positive integer, else `400`.
fn alert_id(raw: &str) -> Result<i64, ApiError> {
    ApiError::check_id("alert_id", raw)?;
    match raw.parse::<i64>() {
        Ok(id) if id > 0 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(ApiError::BadRequest("alert_id must be a positive integer".into())),
    }
}

/// The store's failure as an answer: `503` with `Retry-After` when retrying can help, an
/// opaque `500` otherwise.
fn store_failed(error: StoreError) -> ApiError {
    if error.is_transient() {
        tracing::error!(%error, "alerts unavailable");
        ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 }
    } else {
        ApiError::Internal(anyhow::Error::new(error).context("alerts"))
    }
}

/// Alerts, newest first, filtered by status, risk, account and creation time, one page at
/// a time: pass the answer's `next_cursor` as `cursor` for the next page.
#[utoipa::path(
    get,
    path = "/alerts",
    operation_id = "list_alerts",
    tag = "alerts",
    params(
        ("status" = Option<AlertStatus>, Query, description = "Only alerts in this state"),
        ("risk" = Option<String>, Query, description = "Only alerts of this risk level",
            pattern = "^(HIGH|MEDIUM|LOW)$", nullable = false),
        ("account_id" = Option<String>, Query, description = "Only this account's alerts",
            pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128, nullable = false),
        ("from" = Option<String>, Query, description = "Raised at or after this RFC 3339 moment", format = DateTime, nullable = false),
        ("to" = Option<String>, Query, description = "Raised before this RFC 3339 moment (not before `from`)", format = DateTime, nullable = false),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500, nullable = false),
        ("cursor" = Option<i64>, Query, description = "The previous page's `next_cursor`: only alerts with a smaller `alert_id`",
            minimum = 1, nullable = false),
    ),
    responses(
        (status = 200, description = "One page of alerts, newest first", body = AlertPage),
        (status = 422, description = "Invalid query parameters, each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<AlertPage>, ApiError> {
    let mut filter = parse_filter(query.as_deref()).map_err(ApiError::Validation)?;
    let limit = filter.limit as usize;
    // One more than asked tells whether another page follows.
    filter.limit += 1;
    let alerts = alerts::list(&state.pool, &filter).await.map_err(store_failed)?;
    let (alerts, next_cursor) = page(alerts, limit, |a| a.alert_id);
    Ok(Json(AlertPage { alerts, next_cursor }))
}

/// One alert with its workflow state.
#[utoipa::path(
    get,
    path = "/alerts/{alert_id}",
    operation_id = "get_alert",
    tag = "alerts",
    params(("alert_id" = i64, Path, description = "The alert", minimum = 1)),
    responses(
        (status = 200, description = "The alert", body = AlertRecord),
        (status = 400, description = "alert_id is not a positive integer", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", alert_id = %raw))]
pub async fn get(
    State(state): State<AppState>,
    Path(raw): Path<String>,
) -> Result<Json<AlertRecord>, ApiError> {
    let id = alert_id(&raw)?;
    let alert = alerts::get(&state.pool, id).await.map_err(store_failed)?;
    alert.map(Json).ok_or(ApiError::NotFound("alert"))
}

/// Acknowledges an alert: an analyst is on it. Idempotent: acknowledging again answers the
/// alert with its first acknowledgement's time and author.
#[utoipa::path(
    post,
    path = "/alerts/{alert_id}/ack",
    operation_id = "acknowledge_alert",
    tag = "alerts",
    params(
        ("alert_id" = i64, Path, description = "The alert", minimum = 1),
    ),
    request_body(content = Option<crate::openapi::AckRequest>, description = "None, `null` or an empty object", content_type = "application/json"),
    responses(
        (status = 200, description = "The alert, acknowledged", body = AlertRecord),
        (status = 400, description = "alert_id is not a positive integer, or malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "A body other than `{}` or `null`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing changed", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", alert_id = %raw))]
pub async fn ack(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AlertRecord>, ApiError> {
    let id = alert_id(&raw)?;
    let empty = body.as_ref().is_ok_and(|b| b.is_empty());
    if !empty {
        let errors: Vec<FieldError> = match json_body(&headers, body)? {
            // `null` is how a JSON client says "no body".
            Value::Null => Vec::new(),
            Value::Object(fields) => fields.keys().map(|k| field_error(k, "unknown field")).collect(),
            _ => vec![field_error("body", "must be a JSON object (or absent)")],
        };
        if !errors.is_empty() {
            return Err(ApiError::Validation(errors));
        }
    }
    let alert = alerts::acknowledge(&state.pool, id, &actor).await.map_err(store_failed)?;
    let alert = alert.ok_or(ApiError::NotFound("alert"))?;
    tracing::info!(
        actor = actor.subject,
        acknowledged_by = alert.acknowledged_by.as_deref(),
        "alert acknowledged"
    );
    state.alerts.announce(&state.redis, &alert).await;
    Ok(Json(alert))
}

/// A validated `POST /alerts/{id}/resolve` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveBody {
    /// The verdict.
    pub resolution: LabelValue,
    /// Why, kept with the label.
    pub note: Option<String>,
}

impl ResolveBody {
    /// Validates a request body, reporting every problem.
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let (obj, mut errors) = object_fields(body, &["resolution", "note"])?;
        let resolution = match obj.get("resolution") {
            Some(Value::String(s)) if s == "fraud" => Some(LabelValue::Fraud),
            Some(Value::String(s)) if s == "legit" => Some(LabelValue::Legit),
            None | Some(Value::Null) => {
                errors.push(field_error("resolution", "is required"));
                None
            }
            Some(_) => {
                errors.push(field_error("resolution", "must be \"fraud\" or \"legit\""));
                None
            }
        };
        let note = match obj.get("note") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() <= MAX_NOTE_CHARS => Some(Some(s.clone())),
            Some(_) => {
                errors.push(field_error("note", "must be a string of at most 1000 characters"));
                None
            }
        };
        match (resolution, note) {
            (Some(resolution), Some(note)) if errors.is_empty() => Ok(Self { resolution, note }),
            _ => Err(errors),
        }
    }
}

/// Resolves an alert as fraud or legit, labelling its transaction (source `analyst`, with
/// the note) for training and the merchant risk feature; acknowledges it too if nobody had.
/// The same resolution again answers `200` unchanged; a different one (or a different
/// label already on the transaction) answers `409` and changes nothing.
#[utoipa::path(
    post,
    path = "/alerts/{alert_id}/resolve",
    operation_id = "resolve_alert",
    tag = "alerts",
    params(
        ("alert_id" = i64, Path, description = "The alert", minimum = 1),
    ),
    request_body(content = crate::openapi::ResolveRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The alert, resolved", body = AlertRecord),
        (status = 400, description = "alert_id is not a positive integer, or malformed JSON", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such alert", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already resolved the other way, or its transaction carries a different label", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 64 KiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields, each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database or Redis unavailable: retry (a retry completes what was started)", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", alert_id = %raw, transaction_id))]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    Path(raw): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AlertRecord>, ApiError> {
    let id = alert_id(&raw)?;
    let raw_body = json_body(&headers, body)?;
    let request = ResolveBody::parse(&raw_body).map_err(ApiError::Validation)?;
    let alert =
        alerts::get(&state.pool, id).await.map_err(store_failed)?.ok_or(ApiError::NotFound("alert"))?;
    tracing::Span::current().record("transaction_id", alert.transaction_id.as_str());
    if let Some(existing) = alert.resolution.filter(|r| *r != request.resolution) {
        return Err(conflict(id, existing));
    }
    // The label first: it is first-wins, so an alert's resolution always agrees with its
    // transaction's label, and a retry after a failure below finds it unchanged.
    let label = NewLabel { label: request.resolution, source: "analyst".to_owned(), note: request.note };
    record_label(&state, &alert.transaction_id, &label, &actor).await?;
    match alerts::resolve(&state.pool, id, request.resolution, &actor).await.map_err(store_failed)? {
        Resolution::Resolved(alert) => {
            tracing::info!(actor = actor.subject, resolution = request.resolution.as_str(), "alert resolved");
            state.alerts.announce(&state.redis, &alert).await;
            Ok(Json(alert))
        }
        Resolution::Conflict(alert) => Err(conflict(id, alert.resolution.unwrap_or(request.resolution))),
        Resolution::Unknown => Err(ApiError::NotFound("alert")),
    }
}

fn conflict(id: i64, existing: LabelValue) -> ApiError {
    ApiError::Conflict(format!("alert {id} is already resolved as {}", existing.as_str()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(query: &str) -> Vec<String> {
        match parse_filter(Some(query)) {
            Ok(filter) => panic!("accepted {filter:?}"),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn the_filter_has_defaults_and_reads_every_parameter() {
        let none = parse_filter(None).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((none.limit, none.status, none.before), (DEFAULT_LIMIT, None, None));
        let filter = parse_filter(Some(
            "status=acknowledged&risk=HIGH&account_id=acct-1&from=2026-11-01T10:00:00%2B01:00\
             &to=2026-11-02T00:00:00Z&limit=500&cursor=42&other=x",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(filter.status, Some(AlertStatus::Acknowledged));
        assert_eq!(filter.risk, Some(RiskLabel::High));
        assert_eq!(filter.account_id.as_deref(), Some("acct-1"));
        assert_eq!(filter.from.map(|t| t.to_rfc3339()).as_deref(), Some("2026-11-01T09:00:00+00:00"));
        assert_eq!((filter.limit, filter.before), (500, Some(42)));
        // An unencoded `+` offset decodes to a space.
        assert!(parse_filter(Some("from=2026-11-01T10:00:00+01:00")).is_ok());
    }

    #[test]
    fn every_bad_parameter_is_named() {
        assert_eq!(
            fields("status=closed&risk=high&account_id=a%20b&from=yesterday&limit=0&cursor=-1"),
            ["status", "risk", "account_id", "from", "limit", "cursor"]
        );
        assert_eq!(fields("limit=501"), ["limit"]);
        assert_eq!(fields("limit=ten&cursor=0"), ["limit", "cursor"]);
        assert_eq!(fields("status=open&status=open&status=resolved"), ["status"]);
        assert_eq!(fields("from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z"), ["to"]);
        assert_eq!(fields("account_id="), ["account_id"]);
    }

    #[test]
    fn alert_ids_are_positive_integers() {
        assert!(matches!(alert_id("7"), Ok(7)));
        for bad in ["0", "-1", "+1", "1.0", "x", "99999999999999999999", ""] {
            assert!(matches!(alert_id(bad), Err(ApiError::BadRequest(_))), "{bad}");
        }
    }

    #[test]
    fn the_resolve_body_is_strict() {
        let ok = ResolveBody::parse(&json!({"resolution": "fraud", "note": "card stolen"}));
        assert_eq!(
            ok.ok(),
            Some(ResolveBody { resolution: LabelValue::Fraud, note: Some("card stolen".into()) })
        );
        let bad = |body: Value| -> Vec<String> {
            ResolveBody::parse(&body).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
        };
        assert_eq!(
            bad(json!({"resolution": "maybe", "note": "n".repeat(1001), "x": 1})),
            ["x", "resolution", "note"]
        );
        assert_eq!(bad(json!({})), ["resolution"]);
        assert_eq!(bad(json!(["fraud"])), ["body"]);
    }
}

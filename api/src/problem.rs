//! The one error type every handler returns, rendered as RFC 9457 `application/problem+json`.
//!
//! 4xx answers explain exactly what to fix; 5xx answers are opaque and the cause is logged.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use fraudsense_actors::transaction::FieldError;

/// An RFC 9457 problem document (the body of every error answer).
#[derive(Debug, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI naming the kind of problem, e.g. `urn:fraudsense:problem:validation`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Short summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong this time, in words a client developer can act on.
    pub detail: String,
    /// For validation problems: each invalid field and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is well-formed JSON but some fields are invalid.
    #[error("{} invalid field(s)", .0.len())]
    Validation(Vec<FieldError>),
    /// The request cannot be read at all (bad JSON, bad encoding, bad path parameter).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is not JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// The body exceeds the route's limit (in bytes).
    #[error("payload too large")]
    PayloadTooLarge {
        /// The limit it exceeds.
        limit: usize,
    },
    /// No valid bearer token: missing, expired, not yet valid, forged or not for us.
    #[error("unauthorized: {0}")]
    Unauthorized(fraudsense_actors::auth::Rejection),
    /// A valid token without a role the route needs.
    #[error("forbidden")]
    Forbidden {
        /// The roles that would do, for the detail.
        needs: &'static str,
    },
    /// The request's header section exceeds the limit (in bytes).
    #[error("request headers too large")]
    HeadersTooLarge {
        /// The limit they exceed.
        limit: usize,
    },
    /// The request contradicts what is already recorded (same id, different content).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The account exceeded its rate limit.
    #[error("rate limited")]
    RateLimited(crate::gate::RateStatus),
    /// The resource does not exist.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A dependency is down or slow; the client should retry after the given seconds.
    #[error("service unavailable: {detail}")]
    Unavailable {
        /// What is unavailable (safe to show: no internals).
        detail: &'static str,
        /// Seconds the client should wait.
        retry_after: u32,
    },
    /// Anything else: logged in full, answered opaquely.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// `Ok` if `value` is a valid identifier, else a `400` naming `field`.
    pub fn check_id(field: &str, value: &str) -> Result<(), ApiError> {
        match fraudsense_actors::transaction::identifier_problem(value) {
            Some(why) => Err(ApiError::BadRequest(format!("{field} {why}"))),
            None => Ok(()),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            ApiError::Validation(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation", "Invalid request"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad-request", "Malformed request"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type")
            }
            ApiError::PayloadTooLarge { .. } => {
                (StatusCode::PAYLOAD_TOO_LARGE, "payload-too-large", "Payload too large")
            }
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found", "Not found"),
            ApiError::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "Authentication required")
            }
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", "Not allowed"),
            ApiError::HeadersTooLarge { .. } => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers-too-large",
                "Request header fields too large",
            ),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "Conflict"),
            ApiError::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests"),
            ApiError::Unavailable { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable")
            }
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, slug, title) = self.parts();
        let detail = match &self {
            ApiError::Validation(errors) => {
                errors.iter().map(|e| format!("{}: {}", e.field, e.reason)).collect::<Vec<_>>().join("; ")
            }
            ApiError::BadRequest(why) => why.clone(),
            ApiError::UnsupportedMediaType => "send the body as application/json".into(),
            ApiError::PayloadTooLarge { limit } => format!("the body exceeds the {} limit", size(*limit)),
            ApiError::NotFound(what) => format!("{what} not found"),
            ApiError::Unauthorized(why) => format!("{why}; send Authorization: Bearer <token>"),
            ApiError::Forbidden { needs } => format!("this route needs the role {needs}"),
            ApiError::HeadersTooLarge { limit } => {
                format!("the request headers exceed the {} limit", size(*limit))
            }
            ApiError::Conflict(why) => why.clone(),
            ApiError::RateLimited(rate) => format!(
                "this account may submit {} transactions per window; retry in {} s",
                rate.limit, rate.reset_secs
            ),
            ApiError::Unavailable { detail, .. } => (*detail).into(),
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "internal error");
                "an internal error occurred; it has been logged".into()
            }
        };
        let errors = match self {
            ApiError::Validation(ref errors) => Some(errors.clone()),
            _ => None,
        };
        let body = Problem {
            kind: format!("urn:fraudsense:problem:{slug}"),
            title: title.into(),
            status: status.as_u16(),
            detail,
            errors,
        };
        let body = serde_json::to_string(&body).unwrap_or_default();
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match self {
            ApiError::Unavailable { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            ApiError::RateLimited(rate) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(rate.reset_secs));
                rate_limit_headers(headers, &rate);
            }
            ApiError::Unauthorized(why) => {
                // RFC 6750 §3: a missing token gets the bare challenge, a bad one the error code.
                let challenge = match why {
                    fraudsense_actors::auth::Rejection::Missing => "Bearer realm=\"fraudsense\"".to_owned(),
                    _ => format!(
                        "Bearer realm=\"fraudsense\", error=\"invalid_token\", error_description=\"{why}\""
                    ),
                };
                if let Ok(value) = HeaderValue::from_str(&challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, value);
                }
            }
            _ => {}
        }
        response
    }
}

/// A byte count as people write limits: `64 KiB`, `8 MiB`.
fn size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / 1024)
    }
}

/// The IETF `RateLimit-*` headers describing the caller's window.
pub fn rate_limit_headers(headers: &mut axum::http::HeaderMap, rate: &crate::gate::RateStatus) {
    headers.insert("ratelimit-limit", HeaderValue::from(rate.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(rate.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(rate.reset_secs));
}

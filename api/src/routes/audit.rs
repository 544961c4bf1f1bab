//! `GET /audit`: the audit trail, newest first, for admins.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use chrono::{DateTime, Utc};
use fraudsense_actors::{
    store::audit::{self, ACTIONS, AuditFilter, AuditRecord},
    transaction::FieldError,
};
use serde::Serialize;

use crate::{
    problem::ApiError,
    routes::query::{field_error, known_pairs, page},
    state::AppState,
};

/// Page size when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// Largest accepted `limit`.
pub const MAX_LIMIT: u32 = 500;
/// Longest accepted `actor` or `subject` filter.
const MAX_FILTER_CHARS: usize = 256;

/// One page of `GET /audit`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditRecord>,
    /// Pass as `cursor` for the next (older) page; `null` on the last page.
    pub next_cursor: Option<i64>,
}

/// Reads the `GET /audit` query, reporting every bad parameter by name; unknown ones are
/// ignored, a known one given twice is an error.
pub fn parse_filter(query: Option<&str>) -> Result<AuditFilter, Vec<FieldError>> {
    let mut filter = AuditFilter { limit: DEFAULT_LIMIT, ..AuditFilter::default() };
    let mut errors = Vec::new();
    let known = ["actor", "action", "subject", "since", "limit", "cursor"];
    for (key, value) in known_pairs(query, &known, &mut errors) {
        let (key, value) = (key.as_str(), value.as_str());
        match key {
            "actor" | "subject" => {
                if value.is_empty()
                    || value.chars().count() > MAX_FILTER_CHARS
                    || value.chars().any(char::is_control)
                {
                    errors.push(field_error(key, "must be 1 to 256 printable characters"));
                } else if key == "actor" {
                    filter.actor = Some(value.to_owned());
                } else {
                    filter.subject = Some(value.to_owned());
                }
            }
            "action" => match ACTIONS.iter().find(|a| **a == value) {
                Some(action) => filter.action = Some((*action).to_owned()),
                None => errors.push(field_error(key, &format!("must be one of {}", ACTIONS.join(", ")))),
            },
            "since" => match DateTime::parse_from_rfc3339(&value.replace(' ', "+")) {
                Ok(t) => filter.since = Some(t.with_timezone(&Utc)),
                Err(_) => errors.push(field_error(key, "must be an RFC 3339 timestamp")),
            },
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => filter.limit = n,
                _ => errors.push(field_error(key, "must be an integer from 1 to 500")),
            },
            _ => match value.parse::<i64>() {
                Ok(n) if n > 0 => filter.before = Some(n),
                _ => errors.push(field_error(key, "must be a positive integer (an audit_id)")),
            },
        }
    }
    if errors.is_empty() { Ok(filter) } else { Err(errors) }
}

/// Who did what and when, with the state before and after: every acknowledgement,
/// resolution, label, rule-set change, model status change and dead-letter replay or purge,
/// newest first. Filter by `actor` (the token subject), `action`, `subject` and `since`;
/// page with `cursor`.
#[utoipa::path(
    get,
    path = "/audit",
    operation_id = "list_audit",
    tag = "admin",
    params(
        ("actor" = Option<String>, Query, description = "Only this token subject's actions", min_length = 1, max_length = 256, nullable = false),
        ("action" = Option<String>, Query, description = "Only this action",
            pattern = "^(alert\\.acknowledge|alert\\.resolve|transaction\\.label|rules\\.create|rules\\.activate|model\\.activate|model\\.shadow|model\\.retire|model\\.candidate|dlq\\.replay|dlq\\.purge)$", nullable = false),
        ("subject" = Option<String>, Query, description = "Only actions on this subject (`alert:17`, `rules-4`, a model version, a transaction id)", min_length = 1, max_length = 256, nullable = false),
        ("since" = Option<String>, Query, description = "Only actions at or after this RFC 3339 moment", format = DateTime, nullable = false),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 500 (default 100)", minimum = 1, maximum = 500, nullable = false),
        ("cursor" = Option<i64>, Query, description = "The previous page's `next_cursor`", minimum = 1, nullable = false),
    ),
    responses(
        (status = 200, description = "One page of the audit trail, newest first", body = AuditPage),
        (status = 422, description = "Invalid query parameters, each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>, ApiError> {
    let mut filter = parse_filter(query.as_deref()).map_err(ApiError::Validation)?;
    let limit = filter.limit as usize;
    filter.limit += 1;
    let entries = audit::list(&state.pool, &filter).await.map_err(|error| {
        tracing::error!(%error, "audit trail unavailable");
        ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 }
    })?;
    let (entries, next_cursor) = page(entries, limit, |e| e.audit_id);
    Ok(Json(AuditPage { entries, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(query: &str) -> Vec<String> {
        parse_filter(Some(query)).err().unwrap_or_default().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn filters_are_read_and_bad_ones_named() {
        let f = parse_filter(Some(
            "actor=alice&action=alert.resolve&limit=5&cursor=9&since=2026-12-01T00:00:00Z",
        ))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (f.actor.as_deref(), f.action.as_deref(), f.limit, f.before),
            (Some("alice"), Some("alert.resolve"), 5, Some(9))
        );
        assert!(f.since.is_some());
        assert_eq!(
            fields("action=drop.tables&limit=0&cursor=-1&since=yesterday&actor="),
            ["action", "limit", "cursor", "since", "actor"]
        );
        assert_eq!(fields("actor=a&actor=b"), ["actor"]);
        assert!(parse_filter(Some("unknown=1")).is_ok());
    }
}

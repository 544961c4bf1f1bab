//! `GET /accounts/{account_id}`: the account's live window state, so an analyst can see what
//! the next decision will be based on.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use chrono::{DateTime, Utc};
use fraudsense_actors::features::AccountState;

use crate::{problem::ApiError, state::AppState};

/// The account's sliding windows (count and sum per 5 min, 1 h, 24 h, 7 d), its latest
/// event, location and merchant. Windows end at the account's latest event unless `at`
/// (RFC 3339) names another moment.
#[utoipa::path(
    get,
    path = "/accounts/{account_id}",
    tag = "accounts",
    params(
        ("account_id" = String, Path, description = "The account"),
        ("at" = Option<String>, Query, description = "RFC 3339 moment the windows end at (default: the account's latest event)"),
    ),
    responses(
        (status = 200, description = "Window state", body = AccountState),
        (status = 400, description = "Malformed account id or `at`", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No activity for this account within the longest window", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Redis unavailable", body = crate::problem::Problem, content_type = "application/problem+json"),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", account_id = %account_id))]
pub async fn get(
    State(state): State<AppState>,
    Path(account_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<AccountState>, ApiError> {
    ApiError::check_id("account_id", &account_id)?;
    let at = parse_at(query.as_deref())?;
    match state.windows.account_state(&account_id, at).await {
        Ok(Some(account)) => Ok(Json(account)),
        Ok(None) => Err(ApiError::NotFound("account activity")),
        Err(error) => {
            tracing::error!(%error, "account state unavailable");
            Err(ApiError::Unavailable {
                detail: "the feature store is unavailable; retry later",
                retry_after: 1,
            })
        }
    }
}

/// The `at` query parameter; anything else in the query is ignored.
fn parse_at(query: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    let Some(query) = query else { return Ok(None) };
    let Some((_, value)) = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "at") else {
        return Ok(None);
    };
    // A raw `+` offset arrives as a space after form decoding; no timestamp contains a space.
    let value = value.replace(' ', "+");
    DateTime::parse_from_rfc3339(&value)
        .map(|t| Some(t.with_timezone(&Utc)))
        .map_err(|_| ApiError::BadRequest("at must be an RFC 3339 timestamp".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_is_optional_and_strict() {
        assert!(matches!(parse_at(None), Ok(None)));
        assert!(matches!(parse_at(Some("x=1")), Ok(None)));
        assert!(matches!(parse_at(Some("at=2026-11-01T10%3A00%3A00Z")), Ok(Some(_))));
        assert!(matches!(parse_at(Some("at=2026-11-01T10:00:00%2B01:00")), Ok(Some(_))));
        assert!(matches!(parse_at(Some("at=2026-11-01T10:00:00+01:00")), Ok(Some(_))));
        assert!(matches!(parse_at(Some("at=yesterday")), Err(ApiError::BadRequest(_))));
    }
}

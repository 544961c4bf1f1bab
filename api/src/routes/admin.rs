//! Rule sets and model versions: `/admin/rules…` and `/admin/models…`.
//!
//! Analysts publish a new version of the rules (validated in full, stored and activated in
//! one transaction) and roll back by activating an older one; operators move model versions
//! between candidate, shadow, active and retired. Nothing here talks to the workers: they
//! poll the active versions every `ENGINE_REFRESH_MS` and swap engines without a restart.
//! These routes change how every transaction is decided: only the admin role reaches them.
//! Every change names its author (the token's `sub`) in `created_by` and in the audit trail
//! (`audit_log`, with the state before and after), written in the same transaction.
//!
//! Two invariants the handlers keep: a model version only becomes active or shadow if this
//! build can load its artifact, and the active model cannot be retired or shadowed (activate
//! its successor instead, which retires it), so there is always a model to decide with.

use axum::{
    Extension, Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use deadpool_postgres::tokio_postgres::error::SqlState;
use fraudsense_actors::{
    auth::Principal,
    labels::MAX_NOTE_CHARS,
    rules::RuleConfig,
    store::{
        StoreError,
        catalog::{self, ModelRecord, ModelStatus, RuleSetRecord},
    },
    transaction::FieldError,
};
use serde_json::Value;

use crate::{
    body::json_body_within,
    problem::ApiError,
    routes::query::{field_error, object_fields},
    state::AppState,
};

/// Largest accepted rule document body: enough for every list at its maximum length
/// ([`fraudsense_actors::rules::MAX_LIST_ENTRIES`] identifiers of up to 128 characters,
/// five lists), which the default 64 KiB limit is not.
pub const MAX_RULES_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Every field a `POST /admin/rules` body may have.
const FIELDS: [&str; 3] = ["rules", "note", "activate"];

/// A validated `POST /admin/rules` body.
#[derive(Debug, Clone, PartialEq)]
pub struct NewRuleSet {
    /// The rules document.
    pub rules: RuleConfig,
    /// Why this version exists, for the history.
    pub note: Option<String>,
    /// Whether it replaces the active rule set at once (default) or is only stored.
    pub activate: bool,
}

impl NewRuleSet {
    /// Validates a request body, reporting every problem; those inside the document are
    /// named by their dotted path under `rules.` (e.g. `rules.velocity.max_1h`).
    pub fn parse(body: &Value) -> Result<Self, Vec<FieldError>> {
        let (obj, mut errors) = object_fields(body, &FIELDS)?;
        let rules = match obj.get("rules") {
            None | Some(Value::Null) => {
                errors.push(field_error("rules", "is required (`{}` is the default rule set)"));
                None
            }
            Some(doc) => match RuleConfig::parse(doc) {
                Ok(rules) => Some(rules),
                Err(problems) => {
                    errors.extend(
                        problems.into_iter().map(|e| FieldError { field: under_rules(&e.field), ..e }),
                    );
                    None
                }
            },
        };
        let note = match obj.get("note") {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if s.chars().count() <= MAX_NOTE_CHARS => Some(Some(s.clone())),
            Some(_) => {
                errors.push(field_error("note", "must be a string of at most 1000 characters"));
                None
            }
        };
        let activate = match obj.get("activate") {
            None | Some(Value::Null) => Some(true),
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => {
                errors.push(field_error("activate", "must be true or false"));
                None
            }
        };
        match (rules, note, activate) {
            (Some(rules), Some(note), Some(activate)) if errors.is_empty() => {
                Ok(Self { rules, note, activate })
            }
            _ => Err(errors),
        }
    }
}

/// A field of the rules document, as seen from the request body.
fn under_rules(field: &str) -> String {
    // RuleConfig::parse names the document itself `body`.
    if field == "body" { "rules".to_owned() } else { format!("rules.{field}") }
}

/// The store's failure as an answer: `503` when retrying can help, `409` when a concurrent
/// change won the race for the one active (or shadow) slot, an opaque `500` otherwise.
fn store_failed(error: StoreError) -> ApiError {
    if error.is_transient() {
        tracing::error!(%error, "catalog unavailable");
        return ApiError::Unavailable { detail: "the database is unavailable; retry later", retry_after: 1 };
    }
    if let StoreError::Refused(reason) = &error {
        return ApiError::Conflict(reason.clone());
    }
    if let StoreError::Statement(e) = &error
        && e.code() == Some(&SqlState::UNIQUE_VIOLATION)
    {
        tracing::warn!(%error, "concurrent admin change");
        return ApiError::Conflict(
            "another change of the active versions happened at the same moment; retry".into(),
        );
    }
    ApiError::Internal(anyhow::Error::new(error).context("catalog"))
}

/// Every stored rule set, newest first.
#[utoipa::path(
    get,
    path = "/admin/rules",
    tag = "admin",
    responses(
        (status = 200, description = "Every rule set, newest first", body = Vec<RuleSetRecord>),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn rule_sets(State(state): State<AppState>) -> Result<Json<Vec<RuleSetRecord>>, ApiError> {
    Ok(Json(catalog::rule_sets(&state.pool).await.map_err(store_failed)?))
}

/// The rule set the workers decide with.
#[utoipa::path(
    get,
    path = "/admin/rules/active",
    tag = "admin",
    responses(
        (status = 200, description = "The active rule set", body = RuleSetRecord),
        (status = 404, description = "No rule set is active (migrations not applied)", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn active_rule_set(State(state): State<AppState>) -> Result<Json<RuleSetRecord>, ApiError> {
    let active = catalog::active_rule_set(&state.pool).await.map_err(store_failed)?;
    active.map(Json).ok_or(ApiError::NotFound("active rule set"))
}

/// Stores a new version of the rules (`rules-N`) and, unless `"activate": false`, makes it
/// the active one in the same transaction. The document is validated in full first; when
/// anything is wrong nothing is stored. Workers pick an activated version up within
/// `ENGINE_REFRESH_MS`.
#[utoipa::path(
    post,
    path = "/admin/rules",
    tag = "admin",
    request_body(content = crate::openapi::RuleSetRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored (and active unless `activate` was false)", body = RuleSetRecord),
        (status = 400, description = "Malformed JSON or bad UTF-8", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another change of the active rule set happened at the same moment: retry", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body over 8 MiB", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Body is not application/json", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields (those of the document as `rules.<path>`), each named", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing stored", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", version))]
pub async fn create_rule_set(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = json_body_within(&headers, body, MAX_RULES_BODY_BYTES)?;
    let new = NewRuleSet::parse(&raw).map_err(ApiError::Validation)?;
    let record = catalog::create_rule_set(&state.pool, &new.rules, &actor, new.note.as_deref(), new.activate)
        .await
        .map_err(store_failed)?;
    tracing::Span::current().record("version", record.version.as_str());
    tracing::info!(actor = actor.subject, active = record.active, "rule set stored");
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

/// Makes a stored rule set the active one; rolling back is activating an older version.
/// Workers pick it up within `ENGINE_REFRESH_MS`.
#[utoipa::path(
    post,
    path = "/admin/rules/{version}/activate",
    tag = "admin",
    params(
        ("version" = String, Path, description = "The rule set version", example = "rules-1",
            pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128),
    ),
    responses(
        (status = 200, description = "The rule set, now active", body = RuleSetRecord),
        (status = 400, description = "Malformed version", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such rule set", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another change of the active rule set happened at the same moment: retry", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing changed", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", version = %version))]
pub async fn activate_rule_set(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    Path(version): Path<String>,
) -> Result<Json<RuleSetRecord>, ApiError> {
    ApiError::check_id("version", &version)?;
    let record = catalog::activate_rule_set(&state.pool, &version, &actor)
        .await
        .map_err(store_failed)?
        .ok_or(ApiError::NotFound("rule set"))?;
    tracing::info!(actor = actor.subject, "rule set activated");
    Ok(Json(record))
}

/// Every stored model version (without its artifact), newest first.
#[utoipa::path(
    get,
    path = "/admin/models",
    tag = "admin",
    responses(
        (status = 200, description = "Every model version, newest first", body = Vec<ModelRecord>),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api"))]
pub async fn models(State(state): State<AppState>) -> Result<Json<Vec<ModelRecord>>, ApiError> {
    Ok(Json(catalog::models(&state.pool).await.map_err(store_failed)?))
}

/// One model version: its status, how it was trained and how it evaluated.
#[utoipa::path(
    get,
    path = "/admin/models/{version}",
    tag = "admin",
    params(("version" = String, Path, description = "The model version", example = "bootstrap-1",
            pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "The model version", body = ModelRecord),
        (status = 400, description = "Malformed version", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model version", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", version = %version))]
pub async fn model(
    State(state): State<AppState>,
    Path(version): Path<String>,
) -> Result<Json<ModelRecord>, ApiError> {
    ApiError::check_id("version", &version)?;
    catalog::model_record_of(&state.pool, &version)
        .await
        .map_err(store_failed)?
        .map(Json)
        .ok_or(ApiError::NotFound("model version"))
}

/// Moves a model version through its lifecycle. `activate`: it decides from now on and the
/// previous active version is retired (rolling back is activating the previous version
/// again). `shadow`: scored beside the active one and stored, never acted on; the previous
/// shadow is retired. `retire`: out of use; the active version cannot be retired (activate
/// its successor, which retires it). Workers follow within `ENGINE_REFRESH_MS`.
#[utoipa::path(
    post,
    path = "/admin/models/{version}/{action}",
    tag = "admin",
    params(
        ("version" = String, Path, description = "The model version", example = "bootstrap-1",
            pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128),
        ("action" = String, Path, description = "`activate`, `shadow` or `retire`", example = "shadow",
            pattern = r"^(activate|shadow|retire)$"),
    ),
    responses(
        (status = 200, description = "The model version in its new state", body = ModelRecord),
        (status = 400, description = "Malformed version", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such model version or action", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the active model (shadow, retire), its artifact cannot be loaded by this build (activate, shadow), or a concurrent change won: nothing changed", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable: nothing changed", body = crate::problem::Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u32, description = "Seconds to wait"))),
    )
)]
#[tracing::instrument(skip_all, fields(component = "api", version = %version, action = %action))]
pub async fn change_model(
    State(state): State<AppState>,
    Extension(actor): Extension<Principal>,
    Path((version, action)): Path<(String, String)>,
) -> Result<Json<ModelRecord>, ApiError> {
    let status = match action.as_str() {
        "activate" => ModelStatus::Active,
        "shadow" => ModelStatus::Shadow,
        "retire" => ModelStatus::Retired,
        _ => return Err(ApiError::NotFound("model action")),
    };
    set_status(&state, &version, &actor, status).await
}

/// The body of the three model transitions.
async fn set_status(
    state: &AppState,
    version: &str,
    actor: &Principal,
    status: ModelStatus,
) -> Result<Json<ModelRecord>, ApiError> {
    ApiError::check_id("version", version)?;
    let current = catalog::model_record_of(&state.pool, version)
        .await
        .map_err(store_failed)?
        .ok_or(ApiError::NotFound("model version"))?;
    if matches!(status, ModelStatus::Active | ModelStatus::Shadow) && current.status != status {
        // Workers load the artifact as soon as it is active or shadow: check that it loads
        // here rather than have every worker log that it cannot.
        match catalog::model(&state.pool, version).await {
            Ok(Some(_)) => {}
            Ok(None) => return Err(ApiError::NotFound("model version")),
            Err(error @ StoreError::Corrupt(_)) => {
                tracing::error!(%error, "model artifact unusable; status unchanged");
                return Err(ApiError::Conflict(format!(
                    "model {version} is stored but this build cannot load its artifact; nothing changed"
                )));
            }
            Err(error) => return Err(store_failed(error)),
        }
    }
    let record = catalog::set_model_status(&state.pool, version, status, actor)
        .await
        .map_err(store_failed)?
        .ok_or(ApiError::NotFound("model version"))?;
    tracing::info!(actor = actor.subject, status = status.as_str(), "model status changed");
    Ok(Json(record))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(body: Value) -> Vec<String> {
        match NewRuleSet::parse(&body) {
            Ok(new) => panic!("accepted {new:?}"),
            Err(errors) => errors.into_iter().map(|e| e.field).collect(),
        }
    }

    #[test]
    fn parses_with_defaults() {
        let new = NewRuleSet::parse(&json!({"rules": {}})).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(new, NewRuleSet { rules: RuleConfig::default(), note: None, activate: true });
        let new = NewRuleSet::parse(&json!({
            "rules": {"velocity": {"max_1h": 20}}, "note": "busier", "activate": false
        }))
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(
            (new.rules.velocity.max_1h, new.note.as_deref(), new.activate),
            (20, Some("busier"), false)
        );
    }

    #[test]
    fn names_every_problem_with_the_rules_prefix() {
        assert_eq!(
            fields(json!({
                "rules": {"velocity": {"max_1h": 0}, "colour": 1, "lists": {"deny_countries": ["de"]}},
                "note": "n".repeat(1001),
                "activate": "yes",
                "extra": 1
            })),
            [
                "extra",
                "rules.colour",
                "rules.velocity.max_1h",
                "rules.lists.deny_countries[0]",
                "note",
                "activate"
            ]
        );
        assert_eq!(fields(json!({"rules": [1]})), ["rules"]);
        assert_eq!(fields(json!({"rules": null})), ["rules"]);
        assert_eq!(fields(json!({})), ["rules"]);
        assert_eq!(fields(json!("rules")), ["body"]);
    }
}

//! The OpenAPI 3.1 description served at `GET /openapi.json`, generated from the handlers'
//! annotations and the types below (which document bodies the handlers build as JSON).
//! A test runs schemathesis against the live api to keep the two honest.

use std::collections::BTreeMap;

use fraudsense_actors::{
    features::{AccountState, Location, WindowState},
    labels::{Label, LabelValue},
    rules::RuleConfig,
    store::{
        alerts::{AlertRecord, AlertStatus},
        catalog::{ModelRecord, ModelStatus, RuleSetRecord},
    },
    transaction::{FieldError, iso},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{OpenApi, ToSchema};

use fraudsense_actors::{dlq::DeadLetter, store::audit::AuditRecord};

use crate::{
    problem::Problem,
    routes::{
        alerts::AlertPage,
        audit::AuditPage,
        dlq::{DeadLetterOutcome, DeadLetters},
    },
};

/// The whole document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "FraudSense",
        description = "Real-time fraud detection: submit payments, read decisions with their explanations, label outcomes, work alerts, manage rule sets and model versions.",
        license(name = "MIT")
    ),
    paths(
        crate::routes::transactions::create,
        crate::routes::transactions::get,
        crate::routes::transactions::label,
        crate::routes::accounts::get,
        crate::routes::alerts::list,
        crate::routes::alerts::get,
        crate::routes::alerts::ack,
        crate::routes::alerts::resolve,
        crate::routes::admin::rule_sets,
        crate::routes::admin::active_rule_set,
        crate::routes::admin::create_rule_set,
        crate::routes::admin::activate_rule_set,
        crate::routes::admin::models,
        crate::routes::admin::model,
        crate::routes::admin::change_model,
        crate::routes::audit::list,
        crate::routes::dlq::list,
        crate::routes::dlq::replay,
        crate::routes::dlq::purge,
        crate::routes::health::health,
        crate::routes::health::ready,
    ),
    components(schemas(
        TransactionRequest, Accepted, TransactionView, ScoreView, ReasonView, AlertView, LabelRequest,
        Problem, FieldError, AccountState, WindowState, Location, Label, LabelValue, Health, Readiness,
        RuleSetRequest, RuleSetRecord, RuleConfig, ModelRecord, ModelStatus, AlertPage, AlertRecord,
        AlertStatus, AckRequest, ResolveRequest, AuditPage, AuditRecord,
        DeadLetters, DeadLetter, DeadLetterOutcome, ReplayRequest, PurgeRequest,
    )),
    tags(
        (name = "transactions", description = "Ingest and decisions"),
        (name = "labels", description = "Ground truth for supervised training"),
        (name = "accounts", description = "Live per-account window state"),
        (name = "alerts", description = "The analysts' workflow: list, acknowledge and resolve alerts"),
        (name = "operations", description = "Health and readiness"),
        (name = "admin", description = "Rule sets, model versions and the audit trail (the admin role). \
            Workers pick up a change within `ENGINE_REFRESH_MS` (they poll the active versions)."),
    )
)]
pub struct ApiDoc;

/// The document as served: the generated one, with the ISO code lists spelled out as enums
/// (too long for an attribute) so generated clients and fuzzers know the valid values.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let properties = &mut doc["components"]["schemas"]["TransactionRequest"]["properties"];
    if properties.is_object() {
        properties["currency"]["enum"] = iso::CURRENCIES.iter().map(|c| Value::from(*c)).collect();
        properties["country"]["enum"] =
            iso::COUNTRIES.iter().map(|c| Value::from(*c)).chain([Value::Null]).collect();
    }
    secure(&mut doc);
    doc
}

/// Operations anyone may call; every other one needs a bearer token.
const PUBLIC_OPERATIONS: &[&str] = &["/health", "/ready"];

/// Declares the bearer scheme and, on every guarded operation, the requirement and its
/// `401` and `403` answers (the guard answers them before the handler runs).
fn secure(doc: &mut Value) {
    doc["components"]["securitySchemes"]["bearer"] = serde_json::json!({
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A JWT with `iss`, `aud`, `sub`, `exp`, `nbf` and `roles` (ingest, analyst, admin): \
            HS256 with the configured secret or RS256 with a key of the configured JWKS.",
    });
    let problem = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
        })
    };
    let Some(paths) = doc["paths"].as_object_mut() else { return };
    for (path, item) in paths.iter_mut() {
        if PUBLIC_OPERATIONS.contains(&path.as_str()) {
            continue;
        }
        let Some(item) = item.as_object_mut() else { continue };
        for operation in item.values_mut() {
            if !operation.is_object() {
                continue;
            }
            operation["security"] = serde_json::json!([{"bearer": []}]);
            operation["responses"]["401"] = problem(
                "No valid bearer token (missing, expired, not yet valid, bad signature, wrong issuer or audience)",
            );
            operation["responses"]["403"] = problem("The token lacks the role this operation needs");
        }
    }
}

/// A payment to score. Unknown fields and duplicate keys are rejected.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransactionRequest {
    /// The client's unique id; the idempotency key.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128)]
    pub transaction_id: String,
    /// The paying account.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128)]
    pub account_id: String,
    /// Positive decimal, at most 4 fractional digits, at most 1e9; a JSON number is also
    /// accepted and read exactly as written.
    #[schema(pattern = r"^[0-9]{1,10}(\.[0-9]{1,4})?$", example = "125.50")]
    pub amount: String,
    /// ISO 4217 alphabetic code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    pub currency: String,
    /// When the payment happened: RFC 3339 with offset, at most 5 minutes in the future.
    #[schema(format = DateTime, example = "2026-11-01T10:15:00Z")]
    pub timestamp: String,
    /// The merchant being paid.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,128}$", min_length = 1, max_length = 128)]
    pub merchant_id: String,
    /// Latitude, with `geo_lon`.
    #[schema(minimum = -90.0, maximum = 90.0)]
    pub geo_lat: Option<f64>,
    /// Longitude, with `geo_lat`.
    #[schema(minimum = -180.0, maximum = 180.0)]
    pub geo_lon: Option<f64>,
    /// ISO 3166-1 alpha-2 country.
    #[schema(pattern = "^[A-Z]{2}$", example = "FR")]
    pub country: Option<String>,
    /// Payment channel.
    #[schema(value_type = Option<String>, example = "web")]
    pub channel: Option<ChannelName>,
    /// Free-form client data (object, at most 8 KiB serialised).
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// Payment channels.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelName {
    /// Card present.
    Pos,
    /// Online.
    Web,
    /// Mobile app.
    Mobile,
    /// Cash machine.
    Atm,
    /// Mail or telephone order.
    Moto,
}

/// The answer to an accepted (or idempotently replayed) submission.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    /// The submitted id.
    pub transaction_id: String,
    /// Always `queued`: durably on the broker, waiting for a worker.
    #[schema(example = "queued")]
    pub status: String,
}

/// Processing state of a transaction.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ViewStatus {
    /// Accepted, not processed yet.
    Queued,
    /// Recorded without a score (not produced by this version).
    Received,
    /// Scored: `score` is present.
    Scored,
}

/// A transaction with its decision and alerts. While it is queued only `transaction_id` and
/// `status` are present.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TransactionView {
    /// The client's id.
    pub transaction_id: String,
    /// Where it is in the pipeline.
    pub status: ViewStatus,
    /// The paying account.
    pub account_id: Option<String>,
    /// Decimal amount as a string.
    pub amount: Option<String>,
    /// ISO 4217 code.
    pub currency: Option<String>,
    /// Event time.
    #[schema(format = DateTime)]
    pub timestamp: Option<String>,
    /// The merchant.
    pub merchant_id: Option<String>,
    /// Latitude.
    pub geo_lat: Option<f64>,
    /// Longitude.
    pub geo_lon: Option<f64>,
    /// Country.
    pub country: Option<String>,
    /// Channel.
    pub channel: Option<String>,
    /// Client metadata.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
    /// When the api accepted it.
    #[schema(format = DateTime)]
    pub received_at: Option<String>,
    /// When the worker recorded it.
    #[schema(format = DateTime)]
    pub processed_at: Option<String>,
    /// The OpenTelemetry trace (32 hex digits) that carried it from the api to the database:
    /// search for it in Jaeger.
    pub trace_id: Option<String>,
    /// The decision, once scored.
    pub score: Option<ScoreView>,
    /// Alerts raised for it.
    pub alerts: Option<Vec<AlertView>>,
}

/// A decision and its explanation.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ScoreView {
    /// Model that produced the score.
    pub model_version: String,
    /// Rule set that produced the reasons.
    pub rules_version: String,
    /// Risk in [0, 1].
    #[schema(minimum = 0.0, maximum = 1.0)]
    pub score: f64,
    /// LOW, MEDIUM or HIGH.
    #[schema(example = "HIGH")]
    pub risk_label: String,
    /// Rules that fired.
    pub reasons: Vec<ReasonView>,
    /// The feature vector.
    #[schema(value_type = Object)]
    pub features: Value,
    /// Each input's contribution to the score.
    pub contributions: BTreeMap<String, f64>,
    /// Decided without the account's windows (feature store unavailable).
    pub degraded: bool,
    /// The worker node that decided.
    pub processed_by: Option<String>,
    /// When it was scored.
    #[schema(format = DateTime)]
    pub scored_at: String,
}

/// A fired rule.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct ReasonView {
    /// Stable reason code.
    pub code: String,
    /// Explanation with the numbers.
    pub detail: String,
}

/// An alert raised for a transaction.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct AlertView {
    /// Monotonic alert id.
    pub alert_id: i64,
    /// Risk label at the time.
    pub risk_label: String,
    /// Score at the time.
    pub score: f64,
    /// Comma-separated reason codes.
    pub reason: String,
    /// The threshold the score crossed.
    pub threshold: f64,
    /// When it was raised.
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When an analyst acknowledged it.
    #[schema(format = DateTime)]
    pub acknowledged_at: Option<String>,
}

/// A label for a processed transaction.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelRequest {
    /// Fraud or legit.
    pub label: LabelValue,
    /// Who or what says so (default `analyst`).
    #[schema(pattern = "^[a-z0-9_-]{1,64}$")]
    pub source: Option<String>,
    /// Free text for the audit trail (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

/// The body of `POST /admin/dlq/replay`.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Most messages to replay, oldest first (default 100).
    #[schema(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// The body of `POST /admin/dlq/purge`: purging is irreversible, so it must be confirmed.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Must be `true`.
    #[schema(value_type = bool, example = true)]
    pub confirm: bool,
}

/// The optional body of `POST /alerts/{alert_id}/ack`: nothing, or an empty object.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {}

/// An analyst's verdict on an alert. Unknown fields and duplicate keys are rejected.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// Fraud or legit: also recorded as the transaction's label.
    pub resolution: LabelValue,
    /// Why, kept with the label (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub note: Option<String>,
}

/// A new version of the rules. Unknown fields and duplicate keys are rejected.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleSetRequest {
    /// The rules document: every section and field is optional and takes its default
    /// (`{}` is the default rule set); unknown fields are rejected at any depth.
    pub rules: RuleConfig,
    /// Why this version exists (at most 1000 characters).
    #[schema(max_length = 1000)]
    pub note: Option<String>,
    /// Make it the active rule set at once (default `true`); `false` only stores it.
    pub activate: Option<bool>,
}

/// Liveness.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// Readiness with each dependency's state.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not ready`.
    pub status: String,
    /// `up` or `down` per dependency.
    pub checks: BTreeMap<String, String>,
}

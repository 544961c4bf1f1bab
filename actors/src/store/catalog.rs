//! Rule sets and model versions: what is stored, which is active, and who changed it.

use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use deadpool_postgres::GenericClient;
use serde_json::json;

use super::{
    StoreError,
    audit::{self, Entry},
};
use crate::{auth::Principal, model::Model, rules::RuleConfig, scoring::RuleSet};

/// The model artifact that ships with the binary, trained on generated data, so the very
/// first decision is already made by a model (`fraudsense-worker train` reproduces it).
pub const BOOTSTRAP_MODEL: &str = include_str!("../../models/bootstrap.json");

/// A model with how it was trained and how it evaluated: the shipped file's layout.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelPackage {
    /// The artifact.
    pub model: Model,
    /// Data, period and parameters it was trained with.
    pub training: Value,
    /// Its evaluation.
    pub metrics: Value,
}

/// The active rule set, active model and shadow model versions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActiveVersions {
    /// Active rule set.
    pub rules: Option<String>,
    /// Active model.
    pub model: Option<String>,
    /// Shadow model.
    pub shadow: Option<String>,
}

/// Reads which versions are active: one cheap statement, polled by every worker.
pub async fn active_versions(pool: &Pool) -> Result<ActiveVersions, StoreError> {
    let row = pool
        .get()
        .await?
        .query_one(
            "SELECT (SELECT version FROM rule_sets WHERE active),
                    (SELECT version FROM models WHERE status = 'active'),
                    (SELECT version FROM models WHERE status = 'shadow')",
            &[],
        )
        .await?;
    Ok(ActiveVersions { rules: row.get(0), model: row.get(1), shadow: row.get(2) })
}

/// A stored rule set with its history fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RuleSetRecord {
    /// Version tag (`rules-<n>`).
    pub version: String,
    /// The document.
    pub rules: RuleConfig,
    /// Whether workers use it now.
    pub active: bool,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// Who stored it.
    pub created_by: String,
    /// Why.
    pub note: Option<String>,
    /// When it was last activated.
    pub activated_at: Option<DateTime<Utc>>,
}

/// Why a stored rule set or model could not be used.
fn corrupt(what: &str, version: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what} {version}: {e}"))
}

fn rule_set_record(row: &tokio_postgres::Row) -> Result<RuleSetRecord, StoreError> {
    let version: String = row.get(0);
    let rules = RuleConfig::parse(&row.get::<_, Value>(1))
        .map_err(|e| corrupt("rule set", &version, format!("{e:?}")))?;
    Ok(RuleSetRecord {
        version,
        rules,
        active: row.get(2),
        created_at: row.get(3),
        created_by: row.get(4),
        note: row.get(5),
        activated_at: row.get(6),
    })
}

const RULE_SET_COLUMNS: &str = "version, rules, active, created_at, created_by, note, activated_at";

/// Every rule set, newest first.
pub async fn rule_sets(pool: &Pool) -> Result<Vec<RuleSetRecord>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT {RULE_SET_COLUMNS} FROM rule_sets ORDER BY created_at DESC, version DESC"),
            &[],
        )
        .await?;
    rows.iter().map(rule_set_record).collect()
}

/// The active rule set with its history fields, if any.
pub async fn active_rule_set(pool: &Pool) -> Result<Option<RuleSetRecord>, StoreError> {
    let client = pool.get().await?;
    let row =
        client.query_opt(&format!("SELECT {RULE_SET_COLUMNS} FROM rule_sets WHERE active"), &[]).await?;
    row.as_ref().map(rule_set_record).transpose()
}

/// One rule set, ready to score with.
pub async fn rule_set(pool: &Pool, version: &str) -> Result<Option<RuleSet>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(&format!("SELECT {RULE_SET_COLUMNS} FROM rule_sets WHERE version = $1"), &[&version])
        .await?;
    Ok(row
        .as_ref()
        .map(rule_set_record)
        .transpose()?
        .map(|r| RuleSet { version: r.version, config: r.rules }))
}

/// Stores a new version of the rules and (by default) activates it in the same transaction.
pub async fn create_rule_set(
    pool: &Pool,
    rules: &RuleConfig,
    created_by: &Principal,
    note: Option<&str>,
    activate: bool,
) -> Result<RuleSetRecord, StoreError> {
    let doc = serde_json::to_value(rules).map_err(|source| StoreError::Encode { what: "rules", source })?;
    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let before = active_rules_version(&db).await?;
    if activate {
        db.execute("UPDATE rule_sets SET active = false WHERE active", &[]).await?;
    }
    let row = db
        .query_one(
            &format!(
                "INSERT INTO rule_sets (version, rules, active, created_by, note, activated_at)
                 VALUES ('rules-' || nextval('rule_set_number'), $1, $2, $3, $4, CASE WHEN $2 THEN now() END)
                 RETURNING {RULE_SET_COLUMNS}"
            ),
            &[&doc, &activate, &created_by.subject, &note],
        )
        .await?;
    let record = rule_set_record(&row)?;
    let after =
        json!({"version": record.version, "active": record.active, "note": record.note, "rules": doc});
    let entry = Entry {
        actor: created_by,
        action: "rules.create",
        subject: record.version.clone(),
        before: Some(json!({"active_version": before})),
        after: Some(after),
    };
    audit::record(&db, &entry).await?;
    db.commit().await?;
    Ok(record)
}

/// The active rule set's version, if any, as seen by `db`.
async fn active_rules_version(db: &impl GenericClient) -> Result<Option<String>, StoreError> {
    Ok(db.query_opt("SELECT version FROM rule_sets WHERE active", &[]).await?.map(|r| r.get(0)))
}

/// Makes `version` the active rule set (a roll-back is activating an older one). `None`
/// if there is no such version.
pub async fn activate_rule_set(
    pool: &Pool,
    version: &str,
    actor: &Principal,
) -> Result<Option<RuleSetRecord>, StoreError> {
    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    if db.query_opt("SELECT 1 FROM rule_sets WHERE version = $1 FOR UPDATE", &[&version]).await?.is_none() {
        return Ok(None);
    }
    let before = active_rules_version(&db).await?;
    db.execute("UPDATE rule_sets SET active = false WHERE active AND version <> $1", &[&version]).await?;
    let row = db
        .query_one(
            &format!(
                "UPDATE rule_sets SET active = true, activated_at = now() WHERE version = $1
                 RETURNING {RULE_SET_COLUMNS}"
            ),
            &[&version],
        )
        .await?;
    let record = rule_set_record(&row)?;
    let entry = Entry {
        actor,
        action: "rules.activate",
        subject: version.to_owned(),
        before: Some(json!({"active_version": before})),
        after: Some(json!({"active_version": version})),
    };
    audit::record(&db, &entry).await?;
    db.commit().await?;
    Ok(Some(record))
}

/// Lifecycle state of a model version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ModelStatus {
    /// Stored, not used.
    Candidate,
    /// Decides.
    Active,
    /// Scored and stored beside the active one, never acted on.
    Shadow,
    /// Was active or shadow once.
    Retired,
}

impl ModelStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelStatus::Candidate => "candidate",
            ModelStatus::Active => "active",
            ModelStatus::Shadow => "shadow",
            ModelStatus::Retired => "retired",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "active" => ModelStatus::Active,
            "shadow" => ModelStatus::Shadow,
            "retired" => ModelStatus::Retired,
            _ => ModelStatus::Candidate,
        }
    }
}

/// A stored model version without its (large) artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ModelRecord {
    /// Version tag.
    pub version: String,
    /// Lifecycle state.
    pub status: ModelStatus,
    /// How it was trained (data, period, parameters).
    pub training: Value,
    /// How it evaluated (per component and combined).
    pub metrics: Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When it last became active or shadow.
    pub activated_at: Option<DateTime<Utc>>,
}

const MODEL_COLUMNS: &str = "version, status, training, metrics, created_at, activated_at";

fn model_record(row: &tokio_postgres::Row) -> ModelRecord {
    ModelRecord {
        version: row.get(0),
        status: ModelStatus::parse(row.get(1)),
        training: row.get(2),
        metrics: row.get(3),
        created_at: row.get(4),
        activated_at: row.get(5),
    }
}

/// Every model version, newest first.
pub async fn models(pool: &Pool) -> Result<Vec<ModelRecord>, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(&format!("SELECT {MODEL_COLUMNS} FROM models ORDER BY created_at DESC, version DESC"), &[])
        .await?;
    Ok(rows.iter().map(model_record).collect())
}

/// One model version's record.
pub async fn model_record_of(pool: &Pool, version: &str) -> Result<Option<ModelRecord>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(&format!("SELECT {MODEL_COLUMNS} FROM models WHERE version = $1"), &[&version])
        .await?;
    Ok(row.as_ref().map(model_record))
}

/// Loads and checks one model artifact.
pub async fn model(pool: &Pool, version: &str) -> Result<Option<Model>, StoreError> {
    let client = pool.get().await?;
    let Some(row) = client.query_opt("SELECT artifact FROM models WHERE version = $1", &[&version]).await?
    else {
        return Ok(None);
    };
    let model: Model =
        serde_json::from_slice(row.get::<_, &[u8]>(0)).map_err(|e| corrupt("model", version, e))?;
    model.validate().map_err(|e| corrupt("model", version, e))?;
    Ok(Some(model))
}

/// Stores a new model version as a candidate. Storing the same version again changes
/// nothing (returns false).
pub async fn save_model(
    pool: &Pool,
    model: &Model,
    training: &Value,
    metrics: &Value,
) -> Result<bool, StoreError> {
    let artifact =
        serde_json::to_vec(model).map_err(|source| StoreError::Encode { what: "model", source })?;
    let client = pool.get().await?;
    let n = client
        .execute(
            "INSERT INTO models (version, artifact, training, metrics) VALUES ($1, $2, $3, $4)
             ON CONFLICT (version) DO NOTHING",
            &[&model.version, &artifact, training, metrics],
        )
        .await?;
    Ok(n == 1)
}

/// Sets a model's status: `Active` retires the previous active one, `Shadow` retires the
/// previous shadow, in one transaction. `None` if there is no such version.
pub async fn set_model_status(
    pool: &Pool,
    version: &str,
    status: ModelStatus,
    actor: &Principal,
) -> Result<Option<ModelRecord>, StoreError> {
    let mut client = pool.get().await?;
    let db = client.transaction().await?;
    let Some(current) =
        db.query_opt("SELECT status FROM models WHERE version = $1 FOR UPDATE", &[&version]).await?
    else {
        return Ok(None);
    };
    // Checked under the row lock, so no concurrent change can slip between check and update.
    if current.get::<_, &str>(0) == "active" && status != ModelStatus::Active {
        return Err(StoreError::Refused(format!(
            "model {version} is the active model; activate another version instead (that retires this one)"
        )));
    }
    if matches!(status, ModelStatus::Active | ModelStatus::Shadow) {
        db.execute(
            "UPDATE models SET status = 'retired' WHERE status = $1 AND version <> $2",
            &[&status.as_str(), &version],
        )
        .await?;
    }
    let row = db
        .query_one(
            &format!(
                "UPDATE models SET status = $2,
                     activated_at = CASE WHEN $2 IN ('active', 'shadow') THEN now() ELSE activated_at END
                 WHERE version = $1 RETURNING {MODEL_COLUMNS}"
            ),
            &[&version, &status.as_str()],
        )
        .await?;
    let action = match status {
        ModelStatus::Active => "model.activate",
        ModelStatus::Shadow => "model.shadow",
        ModelStatus::Retired => "model.retire",
        ModelStatus::Candidate => "model.candidate",
    };
    let before: String = current.get(0);
    let entry = Entry {
        actor,
        action,
        subject: version.to_owned(),
        before: Some(json!({"status": before})),
        after: Some(json!({"status": status.as_str()})),
    };
    audit::record(&db, &entry).await?;
    db.commit().await?;
    Ok(Some(model_record(&row)))
}

/// Makes sure a model is active: on a fresh database, stores and activates the shipped
/// bootstrap model. Returns the version it activated, if it did.
pub async fn ensure_active_model(pool: &Pool) -> Result<Option<String>, StoreError> {
    if active_versions(pool).await?.model.is_some() {
        return Ok(None);
    }
    let ModelPackage { model, training, metrics } =
        serde_json::from_str(BOOTSTRAP_MODEL).map_err(|e| corrupt("model", "bootstrap", e))?;
    model.validate().map_err(|e| corrupt("model", "bootstrap", e))?;
    save_model(pool, &model, &training, &metrics).await?;
    // Two processes starting at once: the unique index lets one win; the loser's error
    // leaves the winner's choice in place.
    match set_model_status(pool, &model.version, ModelStatus::Active, &Principal::operator("bootstrap")).await
    {
        Ok(_) => Ok(Some(model.version)),
        Err(_) if active_versions(pool).await?.model.is_some() => Ok(None),
        Err(e) => Err(e),
    }
}

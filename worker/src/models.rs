//! Model work behind the CLI: train (on generated data or on stored labels), evaluate,
//! change a version's status, and replay stored decisions.
//!
//! Every feature computed here goes through the live code path ([`WindowStore::observe`])
//! under a scratch Redis prefix that is deleted afterwards.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::Pool;
use fraudsense_actors::{
    Settings, connect_redis,
    features::{Features, RETENTION_MS, WindowStore},
    model::{Example, FitParams, Model, ModelError},
    scoring::{RuleSet, decide},
    store::{
        self,
        catalog::{self, ModelPackage, ModelStatus},
    },
    synth::{self, SynthConfig},
    training::{self, Evaluation, Row},
};
use serde::Serialize;
use serde_json::{Value, json};

/// When a newly trained version becomes active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Activate {
    /// Store it as a candidate only.
    Never,
    /// Activate it if its final decisions rank fraud better (average precision) than the
    /// active model's on the same evaluation days.
    IfBetter,
    /// Activate it regardless.
    Always,
}

/// How to train on generated data.
#[derive(Debug, Clone)]
pub struct SyntheticOptions {
    /// The generated history.
    pub data: SynthConfig,
    /// Model parameters (forest size, regularisation, labels required).
    pub params: FitParams,
    /// Version tag (default: `synthetic-<seed>-<time>`).
    pub version: Option<String>,
    /// Also write the model, its training facts and metrics to this file.
    pub output: Option<PathBuf>,
    /// Whether to store it in PostgreSQL (off for producing the shipped bootstrap file).
    pub store: bool,
    /// When to activate it.
    pub activate: Activate,
}

/// How to train on stored labels.
#[derive(Debug, Clone)]
pub struct LabelOptions {
    /// Days of stored decisions to learn from.
    pub days: u32,
    /// The most recent days, held out for evaluation.
    pub eval_days: u32,
    /// Model parameters; with fewer labels than `params.min_labels` / `min_fraud` only the
    /// forest is refit.
    pub params: FitParams,
    /// Version tag (default: `labels-<time>`).
    pub version: Option<String>,
    /// When to activate it.
    pub activate: Activate,
}

/// A scratch window store that deletes its keys when done.
struct Scratch {
    client: fred::clients::Client,
    prefix: String,
    windows: WindowStore,
}

impl Scratch {
    async fn new(settings: &Settings) -> anyhow::Result<Self> {
        let client = connect_redis(&settings.redis).await.context("connecting to Redis")?;
        let nanos = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        let prefix = format!("{}scratch:{nanos:x}:", settings.redis.key_prefix);
        let windows = WindowStore::new(client.clone(), &prefix, &settings.scoring);
        Ok(Self { client, prefix, windows })
    }

    async fn purge(self) {
        if let Err(error) = training::purge_prefix(&self.client, &self.prefix).await {
            tracing::warn!(prefix = self.prefix, %error, "scratch keys left behind (they expire)");
        }
    }
}

/// Generated history with features computed through Redis.
async fn synthetic_rows(settings: &Settings, data: &SynthConfig) -> anyhow::Result<Vec<Row>> {
    let history = synth::generate(data);
    let scratch = Scratch::new(settings).await?;
    let rows = training::synthetic_rows(&scratch.windows, &history).await;
    scratch.purge().await;
    rows.context("computing features of the generated history")
}

/// The periods of a generated history, as if training ran at `test_from` (75 % of the
/// way): only transactions older than the label maturity have all their labels by then, so
/// the supervised parts learn from `[start, mature_until)`, the forest also sees the
/// unlabelled `[mature_until, test_from)`, and evaluation is on `[test_from, end)` with the
/// labels as they eventually arrived.
#[derive(Debug, Clone, Copy)]
struct SyntheticSplit {
    mature_until: DateTime<Utc>,
    test_from: DateTime<Utc>,
}

fn synthetic_split(data: &SynthConfig) -> SyntheticSplit {
    let test_from = data.start + (data.end() - data.start) * 75 / 100;
    let mature_until = (test_from - Duration::seconds(synth::LABEL_MATURITY_SECS)).max(data.start);
    SyntheticSplit { mature_until, test_from }
}

/// Examples as known at `at`: labels that arrived later are unknown.
fn examples_at(rows: &[Row], at: DateTime<Utc>) -> Vec<Example> {
    rows.iter().map(|r| r.example_at(at)).collect()
}

fn examples(rows: &[Row]) -> Vec<Example> {
    rows.iter().map(Row::example).collect()
}

/// Trains on a generated history, evaluates on its last days, stores and maybe activates.
/// Returns the report.
pub async fn train_synthetic(settings: &Settings, options: &SyntheticOptions) -> anyhow::Result<String> {
    let started = std::time::Instant::now();
    let rows = synthetic_rows(settings, &options.data).await?;
    let feature_secs = started.elapsed().as_secs_f64();
    let split = synthetic_split(&options.data);
    let [train, recent, test] = training::split_at(&rows, split.mature_until, split.test_from);
    let version = options
        .version
        .clone()
        .unwrap_or_else(|| format!("synthetic-{}-{}", options.data.seed, Utc::now().format("%Y%m%d%H%M%S")));
    let params = options.params;
    let known = |set: &[Row]| examples_at(set, split.test_from);
    let forest_rows: Vec<Example> = known(train)
        .into_iter()
        .chain(known(recent).into_iter().map(|e| Example { fraud: None, ..e }))
        .collect();
    let model = Model::fit(&version, &forest_rows, params)?;
    let pool = if options.store { Some(pool(settings).await?) } else { None };
    let rules = match &pool {
        Some(pool) => active_rules(pool).await?,
        None => training::default_rules(),
    };
    let evaluation = training::evaluate(&model, &rules, test);
    let training_facts = json!({
        "source": "synthetic",
        "seed": options.data.seed,
        "accounts": options.data.accounts,
        "merchants": options.data.merchants,
        "days": options.data.days,
        "start": options.data.start,
        "rows": {"labelled": train.len(), "unlabelled": recent.len(), "test": test.len()},
        "labels_mature_until": split.mature_until,
        "test_from": split.test_from,
        "params": params,
    });
    let mut report = format!(
        "generated {} transactions ({} fraud) over {} days; features through Redis in {feature_secs:.1} s\n\
         labelled (events before {}, all labels known by {}) {} / forest-only {} / test {} (from {})\n\n{}",
        rows.len(),
        rows.iter().filter(|r| r.fraud == Some(true)).count(),
        options.data.days,
        split.mature_until.format("%Y-%m-%d"),
        split.test_from.format("%Y-%m-%d"),
        train.len(),
        recent.len(),
        test.len(),
        split.test_from.format("%Y-%m-%d"),
        evaluation.report()
    );
    let metrics = json!({ "evaluation": evaluation });
    if let Some(path) = &options.output {
        let package =
            ModelPackage { model: model.clone(), training: training_facts.clone(), metrics: metrics.clone() };
        std::fs::write(path, serde_json::to_string(&package)?)
            .with_context(|| format!("writing {}", path.display()))?;
        report.push_str(&format!("\nwrote {}\n", path.display()));
    }
    if let Some(pool) = &pool {
        let active = active_model(pool).await?;
        let baseline = active.as_ref().map(|m| training::evaluate(m, &rules, test));
        let outcome = store_and_activate(
            pool,
            &model,
            &training_facts,
            &metrics,
            &evaluation,
            baseline,
            options.activate,
        );
        report.push_str(&outcome.await?);
    }
    Ok(report)
}

async fn pool(settings: &Settings) -> anyhow::Result<Pool> {
    let pool = store::connect(&settings.database)?;
    store::migrate(&pool).await.context("applying migrations")?;
    catalog::ensure_active_model(&pool).await.context("installing the bootstrap model")?;
    Ok(pool)
}

async fn active_rules(pool: &Pool) -> anyhow::Result<RuleSet> {
    Ok(match catalog::active_versions(pool).await?.rules {
        Some(v) => catalog::rule_set(pool, &v).await?.unwrap_or_else(training::default_rules),
        None => training::default_rules(),
    })
}

async fn active_model(pool: &Pool) -> anyhow::Result<Option<Model>> {
    let versions = catalog::active_versions(pool).await?;
    Ok(match versions.model {
        Some(v) => catalog::model(pool, &v).await?,
        None => None,
    })
}

/// Stores `model` and activates it per `activate`; returns what happened, for the report.
async fn store_and_activate(
    pool: &Pool,
    model: &Model,
    training_facts: &Value,
    metrics: &Value,
    evaluation: &Evaluation,
    baseline: Option<Evaluation>,
    activate: Activate,
) -> anyhow::Result<String> {
    let mut metrics = metrics.clone();
    if let (Some(b), Some(m)) = (&baseline, metrics.as_object_mut()) {
        m.insert("baseline".into(), json!(b));
    }
    if !catalog::save_model(pool, model, training_facts, &metrics).await? {
        bail!("model version {} already exists: choose another --version", model.version);
    }
    let mut out = format!("\nstored model {} as a candidate\n", model.version);
    let beats = match &baseline {
        Some(b) => {
            let (new, old) = (evaluation.decision.average_precision, b.decision.average_precision);
            out.push_str(&format!(
                "average precision of final decisions on the same days: {new:.4} (new) vs {old:.4} (active {})\n",
                b.model_version
            ));
            evaluation.decision.fraud > 0 && new > old
        }
        None => true,
    };
    if activate == Activate::Always || (activate == Activate::IfBetter && beats) {
        catalog::set_model_status(
            pool,
            &model.version,
            ModelStatus::Active,
            &fraudsense_actors::auth::Principal::command_line(),
        )
        .await?;
        out.push_str(&format!("activated {} (workers switch within ENGINE_REFRESH_MS)\n", model.version));
    } else if activate == Activate::IfBetter {
        out.push_str("not activated: it does not beat the active model\n");
    }
    Ok(out)
}

/// Labelled and unlabelled stored decisions of the last `days`, made with features.
async fn stored_rows(pool: &Pool, from: DateTime<Utc>, to: DateTime<Utc>) -> anyhow::Result<Vec<Row>> {
    Ok(store::stored_decisions(pool, from, to)
        .await?
        .into_iter()
        .filter(|d| !d.degraded)
        .map(|d| Row {
            transaction: d.transaction,
            features: d.features,
            fraud: d.fraud,
            labeled_at: d.labeled_at,
            scenario: None,
        })
        .collect())
}

/// Retrains on the feature vectors stored with each decision (point-in-time correct) and
/// the labels that arrived since. With too few labels only the forest is refit on the
/// recent vectors, keeping the active model's supervised part and calibration.
pub async fn train_from_labels(settings: &Settings, options: &LabelOptions) -> anyhow::Result<String> {
    let pool = pool(settings).await?;
    let now = Utc::now();
    let rows = stored_rows(&pool, now - Duration::days(i64::from(options.days)), now).await?;
    if rows.len() < 2 {
        bail!(
            "only {} stored decisions in the last {} days: nothing to learn from",
            rows.len(),
            options.days
        );
    }
    let eval_from = now - Duration::days(i64::from(options.eval_days));
    let first = rows[0].transaction.event_time();
    let [train, _, eval] = training::split_at(&rows, eval_from, eval_from);
    let version = options.version.clone().unwrap_or_else(|| format!("labels-{}", now.format("%Y%m%d%H%M%S")));
    let params = options.params;
    let active = active_model(&pool).await?.context("no active model")?;
    let labelled = rows.iter().filter(|r| r.fraud.is_some()).count();
    let (model, kind) = match Model::fit(&version, &examples(train), params) {
        Ok(m) => (m, "full (forest + supervised + calibrator)"),
        Err(ModelError::NotEnoughLabels { .. }) => (
            active.refit_forest(&version, &examples(train), params.forest)?,
            "forest refit only (too few labels)",
        ),
        Err(e) => return Err(e.into()),
    };
    let rules = active_rules(&pool).await?;
    let evaluation = training::evaluate(&model, &rules, eval);
    let baseline = training::evaluate(&active, &rules, eval);
    let facts = json!({
        "source": "labels",
        "kind": kind,
        "from": first,
        "to": now,
        "rows": {"train": train.len(), "eval": eval.len(), "labelled": labelled},
        "eval_from": eval_from,
        "params": params,
    });
    let mut report = format!(
        "{} stored decisions ({labelled} labelled) since {}; trained: {kind}\n\n{}",
        rows.len(),
        first.format("%Y-%m-%d"),
        evaluation.report()
    );
    let metrics = json!({ "evaluation": evaluation });
    report.push_str(
        &store_and_activate(&pool, &model, &facts, &metrics, &evaluation, Some(baseline), options.activate)
            .await?,
    );
    Ok(report)
}

/// Evaluates a stored version on a generated history or on the stored labelled decisions
/// of the last `days`; with `shadow`, compares a shadow model's live scores to the active
/// ones on the transactions labelled since.
pub async fn evaluate(
    settings: &Settings,
    version: Option<&str>,
    data: Option<&SynthConfig>,
    days: u32,
) -> anyhow::Result<String> {
    let pool = pool(settings).await?;
    let versions = catalog::active_versions(&pool).await?;
    let version =
        version.map(str::to_owned).or(versions.model).context("no model version given or active")?;
    let model = catalog::model(&pool, &version).await?.with_context(|| format!("no model {version}"))?;
    let rules = active_rules(&pool).await?;
    let mut report = match data {
        Some(data) => {
            let rows = synthetic_rows(settings, data).await?;
            let test_from = synthetic_split(data).test_from;
            let [_, _, test] = training::split_at(&rows, test_from, test_from);
            format!(
                "generated data (seed {}), last {} %\n\n{}",
                data.seed,
                25,
                training::evaluate(&model, &rules, test).report()
            )
        }
        None => {
            let now = Utc::now();
            let rows = stored_rows(&pool, now - Duration::days(i64::from(days)), now).await?;
            format!(
                "stored labelled decisions of the last {days} days\n\n{}",
                training::evaluate(&model, &rules, &rows).report()
            )
        }
    };
    let pairs = store::shadow_comparison(&pool, &version).await?;
    if !pairs.is_empty() {
        let labels: Vec<bool> = pairs.iter().map(|p| p.2).collect();
        let live: Vec<f64> = pairs.iter().map(|p| p.0).collect();
        let shadow: Vec<f64> = pairs.iter().map(|p| p.1).collect();
        let (a, b) = (
            fraudsense_actors::model::Metrics::compute(&live, &labels),
            fraudsense_actors::model::Metrics::compute(&shadow, &labels),
        );
        report.push_str(&format!(
            "\nshadow comparison on {} labelled transactions ({} fraud):\n\
             | scorer | AUC-ROC | average precision |\n|---|---|---|\n\
             | active at the time | {:.4} | {:.4} |\n| {version} (shadow) | {:.4} | {:.4} |\n",
            a.rows, a.fraud, a.auc_roc, a.average_precision, b.auc_roc, b.average_precision
        ));
    }
    Ok(report)
}

/// Sets a model version's status (activate, shadow, retire).
pub async fn set_status(settings: &Settings, version: &str, status: ModelStatus) -> anyhow::Result<String> {
    let pool = pool(settings).await?;
    match catalog::set_model_status(
        &pool,
        version,
        status,
        &fraudsense_actors::auth::Principal::command_line(),
    )
    .await?
    {
        Some(r) => Ok(serde_json::to_string_pretty(&r)?),
        None => bail!("no model version {version}"),
    }
}

/// Every model version.
pub async fn list(settings: &Settings) -> anyhow::Result<String> {
    let pool = pool(settings).await?;
    Ok(serde_json::to_string_pretty(&catalog::models(&pool).await?)?)
}

/// One replayed decision that came out different.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// The transaction.
    pub transaction_id: String,
    /// What differs: `features`, `score`, `risk_label`, `reasons`.
    pub fields: Vec<&'static str>,
    /// Which features differ, if any (a changed feature explains a changed score).
    pub features: Vec<String>,
    /// Stored score and label.
    pub stored: (f64, String),
    /// Recomputed score and label.
    pub replayed: (f64, String),
}

/// What a replay found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    /// Decisions in the period.
    pub decisions: usize,
    /// Recomputed identically.
    pub identical: usize,
    /// Recomputed differently.
    pub differing: Vec<Difference>,
    /// Made degraded (without features): not reproducible by design, skipped.
    pub degraded: usize,
    /// Made by a model or rule set that is no longer stored, skipped.
    pub unavailable: usize,
}

/// Recomputes the decisions of transactions with event time in `[from, to)`: features
/// from fresh windows (fed from 7 days earlier, with the labels as they arrived), scored
/// with the model and rule-set versions recorded on each row, compared with what was stored.
pub async fn replay(
    settings: &Settings,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> anyhow::Result<ReplayReport> {
    if from >= to {
        bail!("--from must be before --to");
    }
    let pool = pool(settings).await?;
    let history = store::transactions_between(&pool, from - Duration::milliseconds(RETENTION_MS), to).await?;
    let mut labels = store::labels_until(&pool, to).await?;
    let scratch = Scratch::new(settings).await?;
    let computed = async {
        training::record_labels(&scratch.windows, &mut labels).await?;
        let refs: Vec<_> = history.iter().collect();
        anyhow::Ok(training::features_of(&scratch.windows, &refs).await?)
    }
    .await;
    scratch.purge().await;
    let features: HashMap<&str, Features> =
        history.iter().map(|t| t.transaction_id.as_str()).zip(computed?).collect();

    let mut report = ReplayReport::default();
    let mut models: HashMap<String, Option<Arc<Model>>> = HashMap::new();
    let mut rule_sets: HashMap<String, Option<Arc<RuleSet>>> = HashMap::new();
    for stored in store::stored_decisions(&pool, from, to).await? {
        report.decisions += 1;
        if stored.degraded {
            report.degraded += 1;
            continue;
        }
        if !models.contains_key(&stored.model_version) {
            let m = catalog::model(&pool, &stored.model_version).await.ok().flatten().map(Arc::new);
            models.insert(stored.model_version.clone(), m);
        }
        if !rule_sets.contains_key(&stored.rules_version) {
            let r = catalog::rule_set(&pool, &stored.rules_version).await.ok().flatten().map(Arc::new);
            rule_sets.insert(stored.rules_version.clone(), r);
        }
        let tx = &stored.transaction;
        let (Some(Some(model)), Some(Some(rules)), Some(f)) = (
            models.get(&stored.model_version),
            rule_sets.get(&stored.rules_version),
            features.get(tx.transaction_id.as_str()),
        ) else {
            report.unavailable += 1;
            continue;
        };
        let d = decide(model, rules, tx, Some(f));
        let codes: Vec<&str> = d.reasons.iter().map(|r| r.code.as_str()).collect();
        let mut fields = Vec::new();
        let changed = changed_features(f, &stored.features);
        if !changed.is_empty() {
            fields.push("features");
        }
        if (d.score - stored.score).abs() > 1e-9 {
            fields.push("score");
        }
        if d.risk_label.as_str() != stored.risk_label {
            fields.push("risk_label");
        }
        if codes != stored.reason_codes {
            fields.push("reasons");
        }
        if fields.is_empty() {
            report.identical += 1;
        } else {
            report.differing.push(Difference {
                transaction_id: tx.transaction_id.clone(),
                fields,
                features: changed,
                stored: (stored.score, stored.risk_label.clone()),
                replayed: (d.score, d.risk_label.as_str().to_owned()),
            });
        }
    }
    Ok(report)
}

/// Names of the features whose values differ.
fn changed_features(a: &Features, b: &Features) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) = (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["(unreadable)".into()];
    };
    a.iter().filter(|(k, v)| b.get(k.as_str()) != Some(v)).map(|(k, _)| k.clone()).collect()
}

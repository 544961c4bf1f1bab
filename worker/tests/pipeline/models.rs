//! Rules and models change at run time; training, evaluation and replay work on what the
//! pipeline stored.

use chrono::{Duration, Utc};
use fraudsense_actors::auth::Principal;
use fraudsense_actors::{
    iforest,
    model::FitParams,
    rules::RuleConfig,
    store::catalog::{self, ModelStatus},
    synth::{self, SynthConfig},
    testing::eventually,
};
use fraudsense_worker::models::{self, Activate, LabelOptions, SyntheticOptions};
use serde_json::{Value, json};

use crate::helpers::{DEADLINE, Pipeline, spawn_pipeline, transaction};

/// Posts fresh transactions (one new account each) until one is scored with `check`
/// true: the worker picks up activations within ENGINE_REFRESH_MS, not at a known instant.
async fn until_scored_with(p: &Pipeline, tag: &str, amount: &str, check: impl Fn(&Value) -> bool) -> Value {
    let mut n = 0;
    let check = &check;
    eventually(DEADLINE, &format!("a decision with {tag}"), || {
        n += 1;
        let id = format!("{tag}-{n}");
        async move {
            assert_eq!(
                p.post(&transaction(&id, &format!("acct-{id}"), amount, "2026-11-20T10:00:00Z")).await,
                202
            );
            let view = p.scored(&id).await;
            Ok(check(&view["score"]).then_some(view))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test]
async fn a_new_rule_set_applies_without_a_restart_and_can_be_rolled_back() {
    let p = spawn_pipeline().await;
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let before = until_scored_with(&p, "r0", "500", |s| s["rules_version"] == "rules-1").await;
    assert_ne!(before["score"]["risk_label"], "HIGH", "500 is below the default amount rules");

    let doc = json!({"amount": {"medium": "100", "high": "400"}, "thresholds": {"medium": 0.4, "high": 0.7}});
    let rules = RuleConfig::parse(&doc).unwrap_or_else(|e| panic!("{e:?}"));
    let created =
        catalog::create_rule_set(&pool, &rules, &Principal::operator("test"), Some("tighter amounts"), true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(created.version, "rules-2");
    let after = until_scored_with(&p, "r2", "500", |s| s["rules_version"] == "rules-2").await;
    let score = &after["score"];
    assert_eq!(score["risk_label"], "HIGH");
    assert_eq!(score["thresholds"]["high"], 0.7);
    assert!(
        score["reasons"].as_array().is_some_and(|r| r.iter().any(|r| r["code"] == "HIGH_AMOUNT")),
        "{score}"
    );
    assert_eq!(after["alerts"][0]["threshold"], 0.7, "the alert records the threshold it crossed");

    catalog::activate_rule_set(&pool, "rules-1", &Principal::operator("test"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until_scored_with(&p, "r1", "500", |s| s["rules_version"] == "rules-1").await;
    p.teardown().await;
}

#[tokio::test]
async fn a_shadow_model_is_scored_and_stored_apart_then_promoted() {
    let p = spawn_pipeline().await;
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let bootstrap =
        catalog::model(&pool, "bootstrap-1").await.ok().flatten().unwrap_or_else(|| panic!("no bootstrap"));
    // A challenger: the same supervised part with a differently seeded forest.
    let rows: Vec<_> = (0..300)
        .map(|i| fraudsense_actors::model::Example {
            x: fraudsense_actors::features::Features { amount: f64::from(i), ..Default::default() }.vector(),
            fraud: None,
        })
        .collect();
    let challenger = bootstrap
        .refit_forest("challenger-1", &rows, iforest::Params { trees: 20, sample_size: 64, seed: 9 })
        .unwrap_or_else(|e| panic!("{e}"));
    catalog::save_model(&pool, &challenger, &json!({}), &json!({})).await.unwrap_or_else(|e| panic!("{e}"));
    catalog::set_model_status(&pool, "challenger-1", ModelStatus::Shadow, &Principal::operator("test"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let view = until_scored_with(&p, "s", "30", |s| s["shadow"].is_array()).await;
    let id = view["transaction_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(view["score"]["model_version"], "bootstrap-1", "the shadow is not acted on");
    assert_eq!(view["score"]["shadow"][0]["model_version"], "challenger-1");
    assert_eq!(p.count("SELECT count(*) FROM shadow_scores WHERE transaction_id = $1", &id).await, 1);

    catalog::set_model_status(&pool, "challenger-1", ModelStatus::Active, &Principal::operator("test"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    until_scored_with(&p, "a", "30", |s| s["model_version"] == "challenger-1").await;
    let statuses: Vec<(String, ModelStatus)> = catalog::models(&pool)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|m| (m.version, m.status))
        .collect();
    assert!(statuses.contains(&("bootstrap-1".into(), ModelStatus::Retired)), "{statuses:?}");
    assert!(statuses.contains(&("challenger-1".into(), ModelStatus::Active)), "{statuses:?}");
    p.teardown().await;
}

#[tokio::test]
async fn training_on_generated_data_stores_evaluates_and_activates_a_model() {
    let p = spawn_pipeline().await;
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let options = SyntheticOptions {
        data: SynthConfig { seed: 11, accounts: 120, merchants: 60, days: 28, ..SynthConfig::default() },
        params: FitParams {
            forest: iforest::Params { trees: 50, sample_size: 256, seed: 1 },
            ..FitParams::default()
        },
        version: Some("synthetic-test".into()),
        output: None,
        store: true,
        activate: Activate::Always,
    };
    let report = models::train_synthetic(&p.env.settings, &options).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.contains("| final decision (model + rules) |"), "{report}");
    assert!(report.contains("activated synthetic-test"), "{report}");
    let record = catalog::model_record_of(&pool, "synthetic-test")
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(record.status, ModelStatus::Active);
    let auc = record.metrics["evaluation"]["model"]["auc_roc"].as_f64().unwrap_or_default();
    assert!(auc > 0.75, "a model on generated data must rank fraud well: AUC {auc}");
    // The scratch windows were deleted.
    let redis =
        fraudsense_actors::connect_redis(&p.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let scratch: Vec<String> = fred::interfaces::ClientLike::custom(
        &redis,
        fred::cmd!("KEYS"),
        vec![format!("{}scratch:*", p.env.settings.redis.key_prefix)],
    )
    .await
    .unwrap_or_default();
    assert!(scratch.is_empty(), "{scratch:?}");
    // Workers switch to it; `evaluate` reproduces its metrics on the same data.
    until_scored_with(&p, "t", "30", |s| s["model_version"] == "synthetic-test").await;
    let again = models::evaluate(&p.env.settings, Some("synthetic-test"), Some(&options.data), 30)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let line = |r: &str| r.lines().find(|l| l.starts_with("| final decision")).map(str::to_owned);
    assert_eq!(line(&again), line(&report), "evaluate reproduces train's evaluation");
    p.teardown().await;
}

/// Posts a small generated history of the last three days through the api and waits
/// until every transaction is scored; returns it.
async fn post_recent_history(p: &Pipeline) -> Vec<synth::SynthTransaction> {
    let days = 3;
    let start = Utc::now() - Duration::days(days) - Duration::minutes(5);
    let history =
        synth::generate(&SynthConfig { seed: 5, accounts: 40, merchants: 25, days: days as u32, start });
    for s in &history {
        let body = serde_json::to_value(&s.transaction).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.post(&body).await, 202, "{body}");
    }
    let n = history.len() as i64;
    eventually(DEADLINE * 3, "the history to be scored", || async {
        Ok((p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "syn-%").await == n)
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    history
}

#[tokio::test]
async fn replay_reproduces_stored_decisions_and_reports_one_that_differs() {
    let p = spawn_pipeline().await;
    let history = post_recent_history(&p).await;
    let (from, to) = (Utc::now() - Duration::days(4), Utc::now() + Duration::minutes(1));
    let report = models::replay(&p.env.settings, from, to).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(report.decisions, history.len());
    // Shards run concurrently, so live, a merchant's window may not yet hold another
    // account's payment of the same instant that replay (in strict event order) counts.
    // Anything else must reproduce exactly.
    let unexplained: Vec<_> = report
        .differing
        .iter()
        .filter(|d| d.features.is_empty() || d.features.iter().any(|f| !f.starts_with("merchant_tx_count")))
        .collect();
    assert!(unexplained.is_empty(), "{unexplained:?}");
    assert!(report.identical * 10 >= history.len() * 9, "{report:?}");

    // Tamper with one stored score: replay names it.
    let victim = &history[history.len() / 2].transaction.transaction_id;
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    client
        .execute("UPDATE scores SET score = 0.123 WHERE transaction_id = $1", &[victim])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let report = models::replay(&p.env.settings, from, to).await.unwrap_or_else(|e| panic!("{e:#}"));
    let found =
        report.differing.iter().find(|d| &d.transaction_id == victim).unwrap_or_else(|| panic!("{report:?}"));
    assert!(found.fields.contains(&"score"));
    assert_eq!(found.stored.0, 0.123);
    p.teardown().await;
}

#[tokio::test]
async fn retraining_from_labels_uses_the_stored_feature_vectors() {
    let p = spawn_pipeline().await;
    let history = post_recent_history(&p).await;
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    for s in &history {
        let label = fraudsense_actors::labels::NewLabel {
            label: if s.fraud {
                fraudsense_actors::labels::LabelValue::Fraud
            } else {
                fraudsense_actors::labels::LabelValue::Legit
            },
            source: "chargeback".into(),
            note: None,
        };
        fraudsense_actors::store::record_label(
            &pool,
            &s.transaction.transaction_id,
            &label,
            &Principal::operator("test"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let fraud = history.iter().filter(|s| s.fraud).count();
    assert!(fraud >= 4, "the generated history has fraud to learn from ({fraud})");
    let options = LabelOptions {
        days: 10,
        eval_days: 1,
        params: FitParams { min_labels: 40, min_fraud: 2, ..FitParams::default() },
        version: Some("labels-test".into()),
        activate: Activate::Never,
    };
    let report =
        models::train_from_labels(&p.env.settings, &options).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        report.contains(&format!("{} stored decisions ({} labelled)", history.len(), history.len())),
        "{report}"
    );
    assert!(report.contains("stored model labels-test as a candidate"), "{report}");
    assert!(report.contains("(active bootstrap-1)"), "compared with the active model: {report}");
    let record = catalog::model_record_of(&pool, "labels-test")
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(record.status, ModelStatus::Candidate, "--activate never");
    assert_eq!(record.training["source"], "labels");
    // With too few labels only the forest is refit, on the recent vectors.
    let options = LabelOptions {
        params: FitParams { min_labels: 100_000, ..options.params },
        version: Some("labels-refit".into()),
        ..options
    };
    let report =
        models::train_from_labels(&p.env.settings, &options).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert!(report.contains("forest refit only"), "{report}");
    p.teardown().await;
}

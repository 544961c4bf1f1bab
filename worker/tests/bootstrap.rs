//! The model that ships in the binary is exactly what `fraudsense-worker train` produces
//! from the generated history with the documented command, and it is a model worth shipping.

use fraudsense_actors::{
    model::{FitParams, Model},
    store::catalog,
    synth::SynthConfig,
    testing::TestEnv,
};
use fraudsense_worker::models::{self, Activate, SyntheticOptions};

#[tokio::test]
async fn the_shipped_bootstrap_model_is_reproducible_from_generated_data() {
    let shipped: catalog::ModelPackage =
        serde_json::from_str(catalog::BOOTSTRAP_MODEL).unwrap_or_else(|e| panic!("bootstrap.json: {e}"));
    shipped.model.validate().unwrap_or_else(|e| panic!("{e}"));
    let auc = shipped.metrics["evaluation"]["model"]["auc_roc"].as_f64().unwrap_or_default();
    assert!(auc > 0.85, "the shipped model ranks generated fraud with AUC {auc}");

    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let output = std::env::temp_dir().join(format!("fs-bootstrap-{}.json", std::process::id()));
    // `fraudsense-worker train --no-store --output FILE --version bootstrap-1`, defaults.
    let options = SyntheticOptions {
        data: SynthConfig::default(),
        params: FitParams::default(),
        version: Some("bootstrap-1".into()),
        output: Some(output.clone()),
        store: false,
        activate: Activate::Never,
    };
    models::train_synthetic(&env.settings, &options).await.unwrap_or_else(|e| panic!("{e:#}"));
    let text = std::fs::read_to_string(&output).unwrap_or_default();
    let _ = std::fs::remove_file(&output);
    let rebuilt: catalog::ModelPackage = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
    let same_time = Model { created_at: shipped.model.created_at, ..rebuilt.model };
    assert!(
        same_time == shipped.model,
        "actors/models/bootstrap.json is stale: regenerate it with \
         `fraudsense-worker train --no-store --output actors/models/bootstrap.json --version bootstrap-1`"
    );
    assert_eq!(rebuilt.metrics, shipped.metrics);
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

//! The model that ships in the binary is exactly what `fraudsense-worker train` produces
//! from the generated history with the documented command, and it is a model worth shipping.

use fraudsense_actors::{
    model::{FitParams, Model},
    store::catalog,
    synth::SynthConfig,
    testing::TestEnv,
};
use fraudsense_worker::models::{self, Activate, SyntheticOptions};
use serde_json::Value;

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
    // Debug and release builds may round the last bit of a float differently (`powi`), so
    // numbers are compared to a relative 1e-9; everything else must be identical.
    let as_json = |m: &Model| serde_json::to_value(m).unwrap_or_default();
    let mismatch = differs(&as_json(&same_time), &as_json(&shipped.model), "model")
        .or_else(|| differs(&rebuilt.metrics, &shipped.metrics, "metrics"));
    assert!(
        mismatch.is_none(),
        "actors/models/bootstrap.json is stale at {mismatch:?}: regenerate it with \
         `fraudsense-worker train --no-store --output actors/models/bootstrap.json --version bootstrap-1`"
    );
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));
}

/// The first path where `a` and `b` differ (numbers: by more than a relative 1e-9).
fn differs(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(f64::NAN), y.as_f64().unwrap_or(f64::NAN));
            ((x - y).abs() > 1e-9 * x.abs().max(y.abs()).max(1.0)).then(|| format!("{path}: {x} vs {y}"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (x, y))| differs(x, y, &format!("{path}[{i}]")))
        }
        (Value::Object(x), Value::Object(y)) if x.len() == y.len() => x.iter().find_map(|(k, v)| {
            y.get(k).map_or(Some(format!("{path}.{k}")), |w| differs(v, w, &format!("{path}.{k}")))
        }),
        _ => (a != b).then(|| path.to_owned()),
    }
}

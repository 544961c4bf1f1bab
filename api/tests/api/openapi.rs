//! The OpenAPI document against the live api, checked by schemathesis (from PyPI, installed
//! into `.venv` by `infra/test-tools.sh`, which `make test` runs).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use fraudsense_actors::auth::Role;
use serde_json::Value;

use crate::helpers::spawn_app_with;

/// Longest the whole schemathesis run may take.
const BUDGET: Duration = Duration::from_secs(300);

#[tokio::test]
async fn the_openapi_document_is_3_1_and_covers_every_route() {
    let app = spawn_app_with(|_| {}).await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap_or_default();
    assert_eq!(doc["openapi"], "3.1.0");
    for (path, method) in [
        ("/transactions", "post"),
        ("/transactions/{transaction_id}", "get"),
        ("/transactions/{transaction_id}/label", "post"),
        ("/accounts/{account_id}", "get"),
        ("/alerts", "get"),
        ("/alerts/{alert_id}", "get"),
        ("/alerts/{alert_id}/ack", "post"),
        ("/alerts/{alert_id}/resolve", "post"),
        ("/admin/rules", "get"),
        ("/admin/rules", "post"),
        ("/admin/rules/active", "get"),
        ("/admin/rules/{version}/activate", "post"),
        ("/admin/models", "get"),
        ("/admin/models/{version}", "get"),
        ("/admin/models/{version}/{action}", "post"),
        ("/admin/dlq", "get"),
        ("/admin/dlq/replay", "post"),
        ("/admin/dlq/purge", "post"),
        ("/audit", "get"),
        ("/health", "get"),
        ("/ready", "get"),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()));
    }
    let post = &doc["paths"]["/transactions"]["post"]["responses"];
    for status in ["202", "400", "409", "413", "415", "422", "429", "503"] {
        assert!(post[status].is_object(), "POST /transactions lacks {status}");
    }
    assert!(doc["components"]["schemas"]["Problem"].is_object());
    // Every operation but health and readiness declares the bearer requirement and its 401/403.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let public = ["/health", "/ready"].contains(&path.as_str());
            assert_eq!(op["security"].is_array(), !public, "{method} {path}");
            assert_eq!(op["responses"]["401"].is_object(), !public, "{method} {path}");
        }
    }
    app.teardown().await;
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_schema_violation() {
    let binary = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/schemathesis");
    assert!(binary.exists(), "{} missing: run `bash infra/test-tools.sh` (make test does)", binary.display());
    let app = spawn_app_with(|s| s.http.rate_limit = 100_000).await;
    let scratch = std::env::temp_dir().join(format!("fs-schemathesis-{}", app.env.db_name));
    std::fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("{e}"));
    let config = scratch.join("schemathesis.toml");
    let log = scratch.join("output.txt");
    std::fs::write(&config, "[cache]\nenabled = false\n\n[generation]\ndatabase = \"none\"\n")
        .unwrap_or_else(|e| panic!("{e}"));

    let mut child = Command::new(&binary)
        .current_dir(&scratch)
        .env_remove("SCHEMATHESIS_HOOKS")
        .env("NO_COLOR", "1")
        .env("HYPOTHESIS_STORAGE_DIRECTORY", scratch.join("hypothesis"))
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--url", &app.url("")])
        // Every role: the fuzzing is of the inputs; who may call what is tests/api/access.rs.
        .args(["--header", &format!("Authorization: Bearer {}", app.env.token("schemathesis", &Role::ALL))])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "42",
            "--generation-database",
            "none",
            "--request-timeout",
            "10",
            "--no-color",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}")))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run schemathesis: {e}"));

    // The child runs on its own; wait for it off the runtime, with a hard deadline.
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > BUDGET => {
                let _ = child.kill();
                panic!("schemathesis still running after {BUDGET:?}");
            }
            Ok(None) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(e) => panic!("{e}"),
        }
    };
    let stdout = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(status.code(), Some(0), "schemathesis found problems:\n{stdout}");
    // It really exercised the api: every operation was tested.
    println!("{stdout}");
    assert!(stdout.contains("Tested: 21"), "not every operation ran:\n{stdout}");
    app.teardown().await;
}

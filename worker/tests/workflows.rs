//! The GitHub Actions workflows in `.github/workflows` lint clean with actionlint and do what
//! the project relies on: `ci.yml` lints, runs the tests against PostgreSQL, Redis and RabbitMQ
//! (with its plugins), builds both images and pushes them only from main; `cd.yml` runs only
//! for `v*` tags, deploys the aks overlay and smoke-tests `/health`.
//!
//! actionlint comes from `ACTIONLINT`, else `<repo>/.venv/bin/actionlint`, else `PATH`; the
//! YAML is read by `<repo>/.venv/bin/python` with PyYAML. `infra/test-tools.sh` installs both.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde_json::Value;

const CI: &str = ".github/workflows/ci.yml";
const CD: &str = ".github/workflows/cd.yml";
const DOCKERFILE: &str = "infra/docker/Dockerfile";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------- actionlint

fn actionlint() -> PathBuf {
    if let Some(path) = std::env::var_os("ACTIONLINT") {
        return path.into();
    }
    let venv = repo().join(".venv/bin/actionlint");
    if venv.is_file() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("actionlint")).find(|p| p.is_file()))
        .unwrap_or(venv)
}

#[test]
fn workflows_pass_actionlint() {
    let tool = actionlint();
    let output = Command::new(&tool).args([CI, CD]).current_dir(repo()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run actionlint ({}): {e}. Install the test tools with `bash infra/test-tools.sh` \
             (or point ACTIONLINT at an actionlint binary)",
            tool.display()
        )
    });
    let report =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && report.trim().is_empty(),
        "actionlint found problems in the workflows ({}):\n{report}",
        output.status
    );
}

// ---------------------------------------------------------------------------- YAML as JSON

/// Parses a YAML file with PyYAML (in the test tools' virtualenv) and returns it as JSON.
fn yaml(relative: &str) -> Value {
    let python = repo().join(".venv/bin/python");
    let text = std::fs::read(repo().join(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
    let mut child = Command::new(&python)
        .args(["-c", "import sys, yaml, json; print(json.dumps(yaml.safe_load(sys.stdin)))"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {}: {e}. Create the virtualenv with `bash infra/test-tools.sh`",
                python.display()
            )
        });
    let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("python's stdin is piped"));
    stdin.write_all(&text).unwrap_or_else(|e| panic!("writing {relative} to python: {e}"));
    drop(stdin);
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("waiting for python: {e}"));
    assert!(
        output.status.success(),
        "{relative} is not valid YAML, or PyYAML is missing from .venv (run `bash infra/test-tools.sh`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{relative}: python printed no JSON: {e}"))
}

/// The workflow's `on:` block. YAML 1.1 (PyYAML) reads the bare key `on` as the boolean true.
fn triggers(workflow: &Value) -> &Value {
    workflow
        .get("on")
        .or_else(|| workflow.get("true"))
        .unwrap_or_else(|| panic!("the workflow has no `on:` block"))
}

fn jobs(workflow: &Value) -> Vec<(&String, &Value)> {
    workflow["jobs"].as_object().unwrap_or_else(|| panic!("the workflow has no jobs")).iter().collect()
}

fn steps(job: &Value) -> &[Value] {
    job["steps"].as_array().map(Vec::as_slice).unwrap_or_default()
}

fn all_steps(workflow: &Value) -> Vec<&Value> {
    jobs(workflow).into_iter().flat_map(|(_, job)| steps(job)).collect()
}

fn run(step: &Value) -> &str {
    step["run"].as_str().unwrap_or_default()
}

fn uses(step: &Value) -> &str {
    step["uses"].as_str().unwrap_or_default()
}

/// Every action is pinned to at least a major version (`owner/repo@vN`, a tag or a sha).
fn assert_actions_pinned(name: &str, workflow: &Value) {
    for step in all_steps(workflow) {
        let action = uses(step);
        if action.is_empty() || action.starts_with("./") {
            continue;
        }
        let (_, version) =
            action.split_once('@').unwrap_or_else(|| panic!("{name}: `{action}` is not pinned"));
        assert!(
            !version.is_empty() && !["main", "master", "latest"].contains(&version),
            "{name}: `{action}` must be pinned to a version"
        );
    }
}

fn assert_minimal_permissions(name: &str, workflow: &Value) {
    assert_eq!(
        workflow["permissions"],
        serde_json::json!({"contents": "read"}),
        "{name}: the workflow's default token permissions must be `contents: read`"
    );
    assert!(workflow["concurrency"].is_object(), "{name}: the workflow needs a concurrency group");
}

// ---------------------------------------------------------------------------- ci.yml

/// The build steps (docker/build-push-action) of a workflow, by Dockerfile target.
fn image_builds(workflow: &Value) -> Vec<(&str, &Value)> {
    all_steps(workflow)
        .into_iter()
        .filter(|step| uses(step).starts_with("docker/build-push-action@"))
        .map(|step| (step["with"]["target"].as_str().unwrap_or_default(), step))
        .collect()
}

#[test]
fn ci_lints_and_tests_against_the_three_services() {
    let ci = yaml(CI);
    assert_minimal_permissions(CI, &ci);
    assert_actions_pinned(CI, &ci);

    let on = triggers(&ci);
    assert!(
        on.get("push").is_some() && on.get("pull_request").is_some(),
        "{CI} must run on push and pull_request"
    );

    let every_step = all_steps(&ci);
    let runs = |needle: &str| every_step.iter().any(|step| run(step).contains(needle));
    assert!(
        runs("make lint") || (runs("cargo fmt") && runs("clippy") && runs("-D warnings")),
        "{CI} must run `make lint` (or cargo fmt --check and clippy -D warnings)"
    );
    assert!(
        runs("make test") || runs("nextest run"),
        "{CI} must run the tests (`make test` or cargo nextest)"
    );

    // PostgreSQL and Redis as service containers (or started in a step), RabbitMQ started in a
    // step with the consistent-hash exchange, management and prometheus plugins enabled.
    let (_, test_job) = jobs(&ci)
        .into_iter()
        .find(|(_, job)| {
            steps(job).iter().any(|step| run(step).contains("make test") || run(step).contains("nextest run"))
        })
        .unwrap_or_else(|| panic!("{CI}: no job runs the tests"));
    let text = test_job.to_string();
    for (service, image) in [("PostgreSQL", "postgres:"), ("Redis", "redis:"), ("RabbitMQ", "rabbitmq:")] {
        assert!(text.contains(image), "{CI}: the test job must start {service} (an `{image}…` image)");
    }
    for plugin in ["rabbitmq_consistent_hash_exchange", "rabbitmq_management", "rabbitmq_prometheus"] {
        assert!(text.contains(plugin), "{CI}: the test job's RabbitMQ must have {plugin} enabled");
    }
    assert!(
        text.contains("infra/test-tools.sh") || runs("make test"),
        "{CI}: the test job must install the test tools"
    );
}

#[test]
fn ci_builds_both_images_and_pushes_only_from_main() {
    let ci = yaml(CI);
    let dockerfile = std::fs::read_to_string(repo().join(DOCKERFILE)).unwrap_or_default();
    let builds = image_builds(&ci);
    for target in ["api", "worker"] {
        let (_, step) = builds
            .iter()
            .find(|(t, _)| *t == target)
            .unwrap_or_else(|| panic!("{CI} must build the `{target}` image with docker/build-push-action"));
        assert_eq!(step["with"]["file"], DOCKERFILE, "{CI}: the {target} image is built from {DOCKERFILE}");
        if !dockerfile.is_empty() {
            assert!(
                dockerfile.contains(&format!(" AS {target}")),
                "{DOCKERFILE} has no `{target}` stage for {CI} to build"
            );
        }
        let push = step["with"]["push"].to_string();
        assert!(
            push.contains("refs/heads/main") && push.contains("github.event_name == 'push'"),
            "{CI}: the {target} image may be pushed only by a push to main, not on `push: {push}`"
        );
        assert!(
            step["with"]["tags"].as_str().unwrap_or_default().contains("sha"),
            "{CI}: the {target} image is tagged with the commit sha"
        );
    }
    // Logging in to Azure (and so to the registry) happens only on main, too.
    for step in all_steps(&ci) {
        if uses(step).starts_with("azure/login@") || run(step).contains("az acr login") {
            let condition = step["if"].as_str().unwrap_or_default();
            assert!(
                condition.contains("refs/heads/main"),
                "{CI}: `{}` must run only on main (if: … refs/heads/main)",
                step["name"].as_str().unwrap_or(uses(step))
            );
        }
    }
}

// ---------------------------------------------------------------------------- cd.yml

#[test]
fn cd_runs_only_for_version_tags() {
    let cd = yaml(CD);
    assert_minimal_permissions(CD, &cd);
    assert_actions_pinned(CD, &cd);
    let on = triggers(&cd);
    let events: Vec<&String> =
        on.as_object().unwrap_or_else(|| panic!("{CD}: `on:` is not a mapping")).keys().collect();
    assert_eq!(events, ["push"], "{CD} must be triggered by a push and nothing else");
    assert_eq!(on["push"]["tags"], serde_json::json!(["v*"]), "{CD} must run on `v*` tags only");
    assert!(on["push"].get("branches").is_none(), "{CD} must not run on branch pushes");
}

#[test]
fn cd_deploys_the_aks_overlay_and_smoke_tests_health() {
    let cd = yaml(CD);
    let every_step = all_steps(&cd);
    let runs = |needle: &str| every_step.iter().any(|step| run(step).contains(needle));
    let used = |action: &str| every_step.iter().any(|step| uses(step).starts_with(action));

    assert!(used("azure/login@"), "{CD} must log in to Azure (OIDC)");
    assert!(used("azure/aks-set-context@"), "{CD} must set the AKS context");
    assert!(runs("kustomize edit set image"), "{CD} must set the release's images on the overlay");
    assert!(runs("kubectl apply -k k8s/overlays/aks"), "{CD} must apply k8s/overlays/aks");
    assert!(runs("rollout status"), "{CD} must wait for the rollout");

    let smoke = every_step
        .iter()
        .map(|step| run(step))
        .find(|script| script.contains("/health"))
        .unwrap_or_else(|| panic!("{CD} must smoke-test /health"));
    assert!(smoke.contains("curl"), "{CD}: the /health smoke test must request it");
    assert!(smoke.contains("seq 1 "), "{CD}: the /health smoke test must retry a bounded number of times");

    // The images it deploys exist: built or re-tagged in the same workflow, for both targets.
    for target in ["api", "worker"] {
        assert!(
            image_builds(&cd).iter().any(|(t, _)| *t == target),
            "{CD} must be able to build the {target} image when CI did not push it"
        );
    }
}

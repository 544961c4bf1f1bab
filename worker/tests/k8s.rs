//! The Kubernetes manifests in `k8s/` render, validate and say what the binaries expect.
//!
//! For every overlay under `k8s/overlays`:
//! - `kubectl kustomize` renders it (offline);
//! - the core kinds pass `kubernetes-validate --strict` against the oldest and the newest
//!   Kubernetes version we support (the schemas ship with the PyPI package, no cluster needed);
//! - the custom resources (KEDA, Prometheus Operator, external-secrets), for which that tool has
//!   no schemas, get structural checks here instead: apiVersion, kind and the fields their
//!   operators require, and that what they reference exists in the same render;
//! - `checkov --framework kubernetes` reports no failed check; the only skipped ones are those
//!   listed in [`ACCEPTED_CHECKOV_SKIPS`], each with a reason in the manifest's annotation;
//! - every workload is hardened (probes, resources, non-root read-only securityContext, no
//!   service-account token), its environment holds only variables the binaries read and they
//!   parse with [`Settings::from_lookup`], the worker outlives `SHUTDOWN_TIMEOUT_SECS`, KEDA stops
//!   at `AMQP_SHARDS` workers, and the aks overlay's images come from Azure Container Registry.
//!
//! Tools: `kubectl` from `KUBECTL`, else `PATH`; `kubernetes-validate`, `checkov` and `python`
//! (for YAML to JSON) from `<repo>/.venv/bin` (`infra/test-tools.sh` installs them).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Command, Output},
};

use anyhow::{Context, Result, ensure};
use fraudsense_actors::{Settings, settings::VARIABLES, topology::Topology};
use serde_json::Value;

/// Kubernetes versions the core kinds are validated against: 1.30 is the oldest we support
/// (the api's `preStop` uses the native `sleep` action), 1.33 a current AKS release.
const KUBERNETES_VERSIONS: &[&str] = &["1.30.0", "1.33.0"];

/// Kinds `kubernetes-validate` has schemas for (validated strictly).
const CORE_KINDS: &[&str] = &[
    "Namespace",
    "ServiceAccount",
    "ConfigMap",
    "Secret",
    "Service",
    "Deployment",
    "Job",
    "Ingress",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "NetworkPolicy",
];

/// Custom resources, with the one apiVersion each must have; checked structurally below.
const CUSTOM_KINDS: &[(&str, &str)] = &[
    ("ScaledObject", "keda.sh/v1alpha1"),
    ("TriggerAuthentication", "keda.sh/v1alpha1"),
    ("ServiceMonitor", "monitoring.coreos.com/v1"),
    ("ExternalSecret", "external-secrets.io/v1"),
    ("SecretStore", "external-secrets.io/v1"),
];

/// checkov findings we accept, each skipped in the manifests with a
/// `checkov.io/skipN: CKV_K8S_xx=reason` annotation:
/// - CKV_K8S_43 (image digest): images are set by tag through kustomize `images:`; a release can
///   pin a digest with `kustomize edit set image`, but the manifests cannot know it in advance.
/// - CKV_K8S_35 (secrets as files): both binaries read their connection strings only from the
///   environment (`actors/src/settings.rs`); they are `secrecy` types and never logged.
/// - CKV_K8S_15 (pull policy Always): local overlay only; its `:dev` images are loaded into the
///   cluster and exist in no registry.
const ACCEPTED_CHECKOV_SKIPS: &[&str] = &["CKV_K8S_43", "CKV_K8S_35", "CKV_K8S_15"];

/// Environment variables set in the manifests that are not in `VARIABLES`. None so far: every
/// setting the binaries need is one of theirs (no `TZ`, `RUST_BACKTRACE`, ...).
const STANDARD_VARIABLES: &[&str] = &[];

/// The UID the images run as.
const UID: i64 = 10001;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn venv_tool(name: &str) -> PathBuf {
    let path = repo().join(".venv/bin").join(name);
    assert!(path.is_file(), "{} is missing: run infra/test-tools.sh", path.display());
    path
}

fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return path.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("kubectl")).find(|p| p.is_file()))
        .unwrap_or_else(|| "/usr/local/bin/kubectl".into())
}

fn run(command: &mut Command) -> Result<Output> {
    let output = command.output().with_context(|| format!("cannot run {command:?}"))?;
    Ok(output)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A scratch directory for one test and overlay, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str, overlay: &str) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("fraudsense-k8s-{}-{test}-{overlay}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One rendered overlay.
struct Rendered {
    overlay: String,
    yaml: String,
    docs: Vec<Value>,
}

impl Rendered {
    fn of_kind(&self, kind: &str) -> impl Iterator<Item = &Value> + '_ {
        let kind = kind.to_owned();
        self.docs.iter().filter(move |d| d["kind"] == kind.as_str())
    }

    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.of_kind(kind).find(|d| d["metadata"]["name"] == name)
    }

    /// Deployments, Jobs, ...: (document, pod spec, pod template metadata).
    fn workloads(&self) -> Vec<(&Value, &Value, &Value)> {
        self.docs
            .iter()
            .filter_map(|d| match d["kind"].as_str() {
                Some("Deployment" | "StatefulSet" | "DaemonSet" | "Job") => {
                    Some((d, &d["spec"]["template"]["spec"], &d["spec"]["template"]["metadata"]))
                }
                Some("CronJob") => Some((
                    d,
                    &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                    &d["spec"]["jobTemplate"]["spec"]["template"]["metadata"],
                )),
                _ => None,
            })
            .collect()
    }

    /// The names of the ConfigMaps and Secrets workloads load into their environment.
    fn env_sources(&self) -> (BTreeSet<String>, BTreeSet<String>) {
        let (mut maps, mut secrets) = (BTreeSet::new(), BTreeSet::new());
        for (_, pod, _) in self.workloads() {
            for c in containers(pod, true) {
                for from in arr(&c["envFrom"]) {
                    if let Some(n) = from["configMapRef"]["name"].as_str() {
                        maps.insert(n.to_owned());
                    }
                    if let Some(n) = from["secretRef"]["name"].as_str() {
                        secrets.insert(n.to_owned());
                    }
                }
                for e in arr(&c["env"]) {
                    if let Some(n) = e["valueFrom"]["configMapKeyRef"]["name"].as_str() {
                        maps.insert(n.to_owned());
                    }
                    if let Some(n) = e["valueFrom"]["secretKeyRef"]["name"].as_str() {
                        secrets.insert(n.to_owned());
                    }
                }
            }
        }
        (maps, secrets)
    }

    /// The non-secret settings: the ConfigMaps loaded into the environment, merged.
    fn config(&self) -> BTreeMap<String, String> {
        let (maps, _) = self.env_sources();
        self.of_kind("ConfigMap")
            .filter(|m| m["metadata"]["name"].as_str().is_some_and(|n| maps.contains(n)))
            .flat_map(|m| string_map(&m["data"]))
            .collect()
    }

    /// Keys (and values, when the render holds them) of the Secrets loaded into the
    /// environment: a Secret in the render, or one an ExternalSecret creates (keys only).
    fn secret_env(&self) -> BTreeMap<String, Option<String>> {
        let (_, secrets) = self.env_sources();
        let mut env = BTreeMap::new();
        for s in self.of_kind("Secret").filter(|s| name_in(s, &secrets)) {
            for (k, v) in string_map(&s["stringData"]) {
                env.insert(k, Some(v));
            }
            for (k, v) in string_map(&s["data"]) {
                env.insert(k, base64_decode(&v));
            }
        }
        for e in self.of_kind("ExternalSecret") {
            if e["spec"]["target"]["name"].as_str().is_some_and(|n| secrets.contains(n)) {
                for d in arr(&e["spec"]["data"]) {
                    if let Some(k) = d["secretKey"].as_str() {
                        env.entry(k.to_owned()).or_insert(None);
                    }
                }
            }
        }
        env
    }

    /// Whether a Secret named `name` exists after apply (in the render or via an ExternalSecret),
    /// and its keys.
    fn secret_keys(&self, name: &str) -> Option<BTreeSet<String>> {
        if let Some(s) = self.named("Secret", name) {
            return Some(
                string_map(&s["stringData"]).into_keys().chain(string_map(&s["data"]).into_keys()).collect(),
            );
        }
        self.of_kind("ExternalSecret").find(|e| e["spec"]["target"]["name"] == name).map(|e| {
            arr(&e["spec"]["data"])
                .iter()
                .filter_map(|d| d["secretKey"].as_str().map(str::to_owned))
                .collect()
        })
    }

    /// The parsed settings the ConfigMap and Secret give the binaries.
    fn settings(&self) -> Result<Settings> {
        let mut env = self.config();
        for (k, v) in self.secret_env() {
            if let Some(v) = v {
                env.insert(k, v);
            }
        }
        Settings::from_lookup(|k| env.get(k).cloned()).with_context(|| format!("{}: settings", self.overlay))
    }
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or_default()
}

fn name_in(doc: &Value, names: &BTreeSet<String>) -> bool {
    doc["metadata"]["name"].as_str().is_some_and(|n| names.contains(n))
}

fn string_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned())).collect())
        .unwrap_or_default()
}

/// Containers of a pod spec, with the init containers if `init`.
fn containers(pod: &Value, init: bool) -> Vec<&Value> {
    let inits = if init { arr(&pod["initContainers"]) } else { &[] };
    arr(&pod["containers"]).iter().chain(inits).collect()
}

fn base64_decode(s: &str) -> Option<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = ALPHABET.iter().position(|a| *a == c)? as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    String::from_utf8(out).ok()
}

fn overlays() -> Vec<String> {
    let dir = repo().join("k8s/overlays");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kustomization.yaml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.contains(&"local".to_owned()) && names.contains(&"aks".to_owned()), "overlays: {names:?}");
    names
}

fn render(overlay: &str) -> Result<Rendered> {
    let dir = repo().join("k8s/overlays").join(overlay);
    let out = run(Command::new(kubectl()).arg("kustomize").arg(&dir))?;
    ensure!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), text(&out.stderr));
    let yaml = text(&out.stdout);
    let docs = yaml_to_json(&yaml)?;
    ensure!(!docs.is_empty(), "{overlay} renders nothing");
    Ok(Rendered { overlay: overlay.to_owned(), yaml, docs })
}

fn yaml_to_json(yaml: &str) -> Result<Vec<Value>> {
    use std::io::Write;
    let mut child = Command::new(venv_tool("python"))
        .args([
            "-c",
            "import sys, yaml, json; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    child.stdin.take().context("python stdin")?.write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "YAML to JSON: {}", text(&out.stderr));
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// Runs `check` on every overlay and reports every overlay's problems together.
fn for_each_overlay(check: impl Fn(&Rendered) -> Result<Vec<String>>) -> Result<()> {
    let mut problems = Vec::new();
    for overlay in overlays() {
        let rendered = render(&overlay)?;
        problems.extend(check(&rendered)?.into_iter().map(|p| format!("{overlay}: {p}")));
    }
    ensure!(problems.is_empty(), "\n{}", problems.join("\n"));
    Ok(())
}

// ----------------------------------------------------------------------- schema validation

#[test]
fn core_kinds_pass_strict_schema_validation() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let custom: BTreeSet<&str> = CUSTOM_KINDS.iter().map(|(k, _)| *k).collect();
        let mut core = Vec::new();
        for d in &r.docs {
            let kind = d["kind"].as_str().unwrap_or_default();
            if CORE_KINDS.contains(&kind) {
                core.push(serde_json::to_string(d)?);
            } else if !custom.contains(kind) {
                problems.push(format!("kind {kind} is neither validated by schema nor checked here"));
            }
        }
        let scratch = Scratch::new("schema", &r.overlay)?;
        let file = scratch.0.join("core.yaml");
        // JSON documents are YAML documents.
        std::fs::write(&file, core.join("\n---\n"))?;
        let mut cmd = Command::new(venv_tool("kubernetes-validate"));
        cmd.arg("--strict");
        for v in KUBERNETES_VERSIONS {
            cmd.args(["-k", v]);
        }
        let out = run(cmd.arg(&file))?;
        let stdout = text(&out.stdout);
        let passed = stdout.lines().filter(|l| l.starts_with("INFO") && l.contains(" passed ")).count();
        if !out.status.success() || passed != core.len() * KUBERNETES_VERSIONS.len() {
            problems.push(format!(
                "kubernetes-validate: {passed} of {} passed:\n{stdout}{}",
                core.len() * KUBERNETES_VERSIONS.len(),
                text(&out.stderr)
            ));
        }
        problems.extend(stdout.lines().filter(|l| !l.starts_with("INFO")).map(str::to_owned));
        Ok(problems)
    })
}

#[test]
fn custom_resources_are_well_formed() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let mut problem = |ok: bool, what: String| {
            if !ok {
                problems.push(what);
            }
        };
        for (kind, api_version) in CUSTOM_KINDS {
            for d in r.of_kind(kind) {
                let name = d["metadata"]["name"].as_str().unwrap_or_default();
                let id = format!("{kind}/{name}");
                problem(
                    d["apiVersion"] == *api_version,
                    format!("{id}: apiVersion {} != {api_version}", d["apiVersion"]),
                );
                problem(!name.is_empty(), format!("{id}: no metadata.name"));
                problem(
                    d["metadata"]["namespace"] == "fraudsense",
                    format!("{id}: not in namespace fraudsense"),
                );
                problem(d["spec"].is_object(), format!("{id}: no spec"));
            }
        }
        for so in r.of_kind("ScaledObject") {
            let target = &so["spec"]["scaleTargetRef"];
            let kind = target["kind"].as_str().unwrap_or("Deployment");
            problem(
                target["name"].as_str().is_some_and(|n| r.named(kind, n).is_some()),
                format!("ScaledObject: scaleTargetRef {target} is not in the render"),
            );
            let triggers = arr(&so["spec"]["triggers"]);
            problem(!triggers.is_empty(), "ScaledObject: no triggers".into());
            for t in triggers {
                problem(
                    t["type"].is_string() && t["metadata"].is_object(),
                    format!("ScaledObject: trigger without type or metadata: {t}"),
                );
                if let Some(auth) = t["authenticationRef"]["name"].as_str() {
                    problem(
                        r.named("TriggerAuthentication", auth).is_some(),
                        format!("ScaledObject: TriggerAuthentication {auth} missing"),
                    );
                }
            }
        }
        for ta in r.of_kind("TriggerAuthentication") {
            let refs = arr(&ta["spec"]["secretTargetRef"]);
            problem(!refs.is_empty(), "TriggerAuthentication: no secretTargetRef".into());
            for s in refs {
                let (param, name, key) = (s["parameter"].as_str(), s["name"].as_str(), s["key"].as_str());
                let exists = name
                    .and_then(|n| r.secret_keys(n))
                    .is_some_and(|keys| key.is_some_and(|k| keys.contains(k)));
                problem(
                    param.is_some() && exists,
                    format!("TriggerAuthentication: {s} names no existing secret key"),
                );
            }
        }
        for sm in r.of_kind("ServiceMonitor") {
            let name = sm["metadata"]["name"].as_str().unwrap_or_default();
            let selector = string_map(&sm["spec"]["selector"]["matchLabels"]);
            let services: Vec<&Value> = r
                .of_kind("Service")
                .filter(|s| {
                    !selector.is_empty()
                        && selector.iter().all(|(k, v)| s["metadata"]["labels"][k] == v.as_str())
                })
                .collect();
            problem(
                services.len() == 1,
                format!("ServiceMonitor {name}: selects {} Services", services.len()),
            );
            let endpoints = arr(&sm["spec"]["endpoints"]);
            problem(!endpoints.is_empty(), format!("ServiceMonitor {name}: no endpoints"));
            for e in endpoints {
                let port_ok =
                    services.iter().all(|s| arr(&s["spec"]["ports"]).iter().any(|p| p["name"] == e["port"]));
                problem(port_ok && e["path"] == "/metrics", format!("ServiceMonitor {name}: endpoint {e}"));
            }
        }
        let stores: BTreeSet<&str> =
            r.of_kind("SecretStore").filter_map(|s| s["metadata"]["name"].as_str()).collect();
        for s in r.of_kind("SecretStore") {
            let providers = s["spec"]["provider"].as_object().map(|p| p.len()).unwrap_or_default();
            problem(
                providers == 1,
                format!("SecretStore {}: needs exactly one provider", s["metadata"]["name"]),
            );
        }
        for e in r.of_kind("ExternalSecret") {
            let name = e["metadata"]["name"].as_str().unwrap_or_default();
            let store = &e["spec"]["secretStoreRef"];
            problem(
                store["kind"] == "SecretStore" && store["name"].as_str().is_some_and(|n| stores.contains(n)),
                format!("ExternalSecret {name}: secretStoreRef {store} is not in the render"),
            );
            problem(
                e["spec"]["target"]["name"].is_string(),
                format!("ExternalSecret {name}: no target.name"),
            );
            let data = arr(&e["spec"]["data"]);
            problem(!data.is_empty(), format!("ExternalSecret {name}: no data"));
            for d in data {
                problem(
                    d["secretKey"].is_string() && d["remoteRef"]["key"].is_string(),
                    format!("ExternalSecret {name}: entry {d} lacks secretKey or remoteRef.key"),
                );
            }
        }
        Ok(problems)
    })
}

// ----------------------------------------------------------------------------- checkov

#[test]
fn checkov_finds_nothing_but_justified_skips() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let scratch = Scratch::new("checkov", &r.overlay)?;
        let file = scratch.0.join(format!("{}.yaml", r.overlay));
        std::fs::write(&file, &r.yaml)?;
        let out = run(Command::new(venv_tool("checkov"))
            .args(["--framework", "kubernetes", "--skip-download", "--output", "json", "--file"])
            .arg(&file)
            .current_dir(&scratch.0)
            .env("BC_SKIP_MAPPING", "TRUE"))?;
        let report: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("checkov output: {}{}", text(&out.stdout), text(&out.stderr)))?;
        let summary = &report["summary"];
        if summary["failed"] != 0 || summary["parsing_errors"] != 0 {
            let failed: Vec<String> = arr(&report["results"]["failed_checks"])
                .iter()
                .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["check_name"]))
                .collect();
            problems.push(format!("checkov: {summary}: {failed:#?}"));
        }
        if summary["resource_count"].as_u64().unwrap_or_default() < r.docs.len() as u64 - 2 {
            problems.push(format!("checkov scanned only {} resources", summary["resource_count"]));
        }
        for c in arr(&report["results"]["skipped_checks"]) {
            let id = c["check_id"].as_str().unwrap_or_default();
            let reason = c["check_result"]["suppress_comment"].as_str().unwrap_or_default();
            if !ACCEPTED_CHECKOV_SKIPS.contains(&id) || reason.len() < 30 {
                problems.push(format!(
                    "checkov skip {id} on {} is not accepted or not justified: {reason:?}",
                    c["resource"]
                ));
            }
        }
        // Every skip annotation has the form checkov reads: CKV_..=reason.
        for d in &r.docs {
            for (k, v) in string_map(&d["metadata"]["annotations"]) {
                if k.starts_with("checkov.io/skip") && (!v.starts_with("CKV") || v.matches('=').count() != 1)
                {
                    problems.push(format!(
                        "{}: annotation {k}: {v:?} is not CKV_..=reason",
                        d["metadata"]["name"]
                    ));
                }
            }
        }
        Ok(problems)
    })
}

// ---------------------------------------------------------------------- workloads

#[test]
fn workloads_are_hardened_and_probed() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let workloads = r.workloads();
        if workloads.is_empty() {
            problems.push("no workloads".into());
        }
        for (doc, pod, _) in workloads {
            let id = format!(
                "{}/{}",
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            );
            let mut problem = |ok: bool, what: &str| {
                if !ok {
                    problems.push(format!("{id}: {what}"));
                }
            };
            problem(doc["metadata"]["namespace"] == "fraudsense", "not in namespace fraudsense");
            problem(
                pod["automountServiceAccountToken"] == false,
                "automountServiceAccountToken is not false",
            );
            let sa = pod["serviceAccountName"].as_str().unwrap_or("default");
            problem(
                sa != "default"
                    && r.named("ServiceAccount", sa)
                        .is_some_and(|s| s["automountServiceAccountToken"] == false),
                "no dedicated ServiceAccount without token",
            );
            let psc = &pod["securityContext"];
            problem(
                psc["runAsNonRoot"] == true && psc["runAsUser"] == UID,
                "pod does not run as non-root 10001",
            );
            problem(
                psc["seccompProfile"]["type"] == "RuntimeDefault",
                "pod seccompProfile is not RuntimeDefault",
            );
            for c in containers(pod, true) {
                let name = c["name"].as_str().unwrap_or_default();
                let mut problem = |ok: bool, what: &str| {
                    if !ok {
                        problems.push(format!("{id} container {name}: {what}"));
                    }
                };
                for part in ["requests", "limits"] {
                    for res in ["cpu", "memory"] {
                        problem(c["resources"][part][res].is_string(), &format!("no {part}.{res}"));
                    }
                }
                let sc = &c["securityContext"];
                problem(
                    sc["runAsNonRoot"] == true && sc["runAsUser"] == UID,
                    "not runAsNonRoot with runAsUser 10001",
                );
                problem(sc["readOnlyRootFilesystem"] == true, "root filesystem is writable");
                problem(sc["allowPrivilegeEscalation"] == false, "allowPrivilegeEscalation is not false");
                problem(sc["privileged"] != true, "privileged");
                problem(
                    arr(&sc["capabilities"]["drop"]).iter().any(|d| d == "ALL"),
                    "capabilities not dropped (ALL)",
                );
                problem(arr(&sc["capabilities"]["add"]).is_empty(), "adds capabilities");
                problem(
                    sc["seccompProfile"]["type"] == "RuntimeDefault",
                    "seccompProfile is not RuntimeDefault",
                );
                let image = c["image"].as_str().unwrap_or_default();
                problem(image.contains(':') && !image.ends_with(":latest"), "image without a fixed tag");
            }
            let is_service = doc["kind"] == "Deployment";
            for c in containers(pod, false).into_iter().filter(|_| is_service) {
                let name = c["name"].as_str().unwrap_or_default();
                let port = arr(&c["ports"]).first().map(|p| p["name"].clone()).unwrap_or_default();
                for (probe, path) in
                    [("startupProbe", "/health"), ("livenessProbe", "/health"), ("readinessProbe", "/ready")]
                {
                    let get = &c[probe]["httpGet"];
                    if get["path"] != path || get["port"] != port {
                        problems
                            .push(format!("{id} container {name}: {probe} is not GET {path} on port {port}"));
                    }
                }
                let migrate = arr(&c["env"])
                    .iter()
                    .find(|e| e["name"] == "MIGRATE_ON_START")
                    .map(|e| e["value"].clone());
                if migrate != Some(Value::from("false")) {
                    problems.push(format!("{id} container {name}: MIGRATE_ON_START is not \"false\""));
                }
            }
        }
        Ok(problems)
    })
}

/// Migrations run in exactly one place: the worker's init container, which applies them under
/// PostgreSQL's advisory lock and installs the bootstrap model (`fraudsense-worker migrate`).
#[test]
fn migrations_run_in_one_place_only() -> Result<()> {
    for_each_overlay(|r| {
        let mut migrators = Vec::new();
        for (doc, pod, _) in r.workloads() {
            for c in containers(pod, true) {
                let args: Vec<&str> =
                    arr(&c["args"]).iter().chain(arr(&c["command"])).filter_map(Value::as_str).collect();
                let runs_migrations = args.contains(&"migrate");
                let migrate_env =
                    arr(&c["env"]).iter().any(|e| e["name"] == "MIGRATE_ON_START" && e["value"] != "false");
                if runs_migrations || migrate_env {
                    let (workload, container) = (doc["metadata"]["name"].as_str(), c["name"].as_str());
                    migrators.push(format!(
                        "{}/{}",
                        workload.unwrap_or_default(),
                        container.unwrap_or_default()
                    ));
                }
            }
        }
        let config = r.config();
        let mut problems = Vec::new();
        if config.get("MIGRATE_ON_START").is_some_and(|v| v != "false") {
            problems.push("the ConfigMap turns MIGRATE_ON_START on".into());
        }
        if migrators != ["fraudsense-worker/migrate"] {
            problems.push(format!(
                "migrations should run only in the worker's init container, not in {migrators:?}"
            ));
        }
        Ok(problems)
    })
}

// ----------------------------------------------------------------------- configuration

#[test]
fn environment_holds_only_known_variables_that_parse() -> Result<()> {
    let known: BTreeSet<&str> =
        VARIABLES.iter().map(|(n, _, _)| *n).chain(STANDARD_VARIABLES.iter().copied()).collect();
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let (maps, secrets) = r.env_sources();
        for m in &maps {
            if r.named("ConfigMap", m).is_none() {
                problems.push(format!("ConfigMap {m} is referenced but not rendered"));
            }
        }
        for s in &secrets {
            if r.secret_keys(s).is_none() {
                problems.push(format!(
                    "Secret {s} is referenced but neither rendered nor created by an ExternalSecret"
                ));
            }
        }
        let mut names: BTreeSet<String> = r.config().into_keys().chain(r.secret_env().into_keys()).collect();
        for (_, pod, _) in r.workloads() {
            for c in containers(pod, true) {
                names.extend(arr(&c["env"]).iter().filter_map(|e| e["name"].as_str().map(str::to_owned)));
            }
        }
        problems.extend(
            names
                .iter()
                .filter(|n| !known.contains(n.as_str()))
                .map(|n| format!("{n} is not a variable the binaries read")),
        );
        let secret = r.secret_env();
        for var in ["DATABASE_URL", "REDIS_URL", "AMQP_URL"] {
            if !secret.contains_key(var) {
                problems.push(format!("{var} does not come from a Secret"));
            }
            if r.config().contains_key(var) {
                problems.push(format!("{var} is in a ConfigMap; it carries credentials"));
            }
        }
        match r.settings() {
            Err(e) => problems.push(format!("{e:#}")),
            Ok(s) => {
                let ports = container_ports(r);
                if !s.api_addr.ip().is_unspecified()
                    || ports.get("fraudsense-api") != Some(&s.api_addr.port())
                {
                    problems.push(format!(
                        "FRAUDSENSE_API_ADDR {} does not match the api container port {ports:?}",
                        s.api_addr
                    ));
                }
                if !s.worker_addr.ip().is_unspecified()
                    || ports.get("fraudsense-worker") != Some(&s.worker_addr.port())
                {
                    problems.push(format!(
                        "FRAUDSENSE_WORKER_ADDR {} does not match the worker container port",
                        s.worker_addr
                    ));
                }
                if s.migrate_on_start {
                    problems.push("MIGRATE_ON_START defaults to true in the ConfigMap".into());
                }
            }
        }
        Ok(problems)
    })
}

/// Deployment name → its first container's first port.
fn container_ports(r: &Rendered) -> BTreeMap<String, u16> {
    r.of_kind("Deployment")
        .filter_map(|d| {
            let port =
                d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].as_u64()?;
            Some((d["metadata"]["name"].as_str()?.to_owned(), u16::try_from(port).ok()?))
        })
        .collect()
}

#[test]
fn worker_outlives_its_shutdown_timeout_and_api_drains() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let settings = r.settings()?;
        let grace = |name: &str| {
            r.named("Deployment", name)
                .and_then(|d| d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"].as_u64())
        };
        let worker = grace("fraudsense-worker").unwrap_or(30);
        if worker <= settings.shutdown_timeout.as_secs() {
            problems.push(format!(
                "worker terminationGracePeriodSeconds {worker} <= SHUTDOWN_TIMEOUT_SECS {}",
                settings.shutdown_timeout.as_secs()
            ));
        }
        let api = r.named("Deployment", "fraudsense-api").context("no api Deployment")?;
        let sleep =
            api["spec"]["template"]["spec"]["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
                .as_u64();
        match (sleep, grace("fraudsense-api")) {
            (Some(s), Some(g)) if s > 0 && s < g => {}
            other => problems.push(format!(
                "api preStop sleep / grace period {other:?}: need a sleep shorter than the grace period"
            )),
        }
        Ok(problems)
    })
}

// ----------------------------------------------------------------------- scaling

#[test]
fn api_scales_with_an_hpa_and_workers_with_keda_up_to_the_shard_count() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        let settings = r.settings()?;
        let mut scalers: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for h in r.of_kind("HorizontalPodAutoscaler") {
            let target = h["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or_default();
            scalers.entry(target.to_owned()).or_default().push("HPA");
            let cpu = arr(&h["spec"]["metrics"]).iter().any(|m| m["resource"]["name"] == "cpu");
            if h["apiVersion"] != "autoscaling/v2" || !cpu {
                problems.push(format!("HPA {target}: not autoscaling/v2 on CPU"));
            }
        }
        for so in r.of_kind("ScaledObject") {
            let target = so["spec"]["scaleTargetRef"]["name"].as_str().unwrap_or_default();
            scalers.entry(target.to_owned()).or_default().push("KEDA");
        }
        let expected = BTreeMap::from([
            ("fraudsense-api".to_owned(), vec!["HPA"]),
            ("fraudsense-worker".to_owned(), vec!["KEDA"]),
        ]);
        if scalers != expected {
            problems.push(format!("autoscalers by target {scalers:?}, expected {expected:?} (KEDA makes its own HPA: never both)"));
        }
        let so = r.named("ScaledObject", "fraudsense-worker").context("no ScaledObject for the worker")?;
        let shards = u64::from(settings.amqp.shards);
        if so["spec"]["maxReplicaCount"].as_u64() != Some(shards) {
            problems.push(format!(
                "KEDA maxReplicaCount {} != AMQP_SHARDS {shards}",
                so["spec"]["maxReplicaCount"]
            ));
        }
        if !so["spec"]["minReplicaCount"].as_u64().is_some_and(|m| (1..=shards).contains(&m)) {
            problems.push(
                "KEDA minReplicaCount must be 1..=AMQP_SHARDS (0 would leave the shards without consumers)"
                    .into(),
            );
        }
        let triggers = arr(&so["spec"]["triggers"]);
        let types: BTreeSet<&str> = triggers.iter().filter_map(|t| t["type"].as_str()).collect();
        if types != BTreeSet::from(["rabbitmq", "cpu"]) {
            problems.push(format!("KEDA triggers {types:?}, expected rabbitmq and cpu"));
        }
        // The regex sums exactly the shard queues the topology declares for AMQP_PREFIX.
        let prefix = &settings.amqp.prefix;
        let topology = Topology::new(prefix, settings.amqp.shards, 5, 5000);
        let regex = format!("^{}shard\\.[0-9]+$", prefix.replace('.', "\\."));
        let expected_queues: Vec<String> =
            (0..settings.amqp.shards).map(|i| format!("{prefix}shard.{i}")).collect();
        if topology.shard_queues != expected_queues {
            problems.push(format!(
                "shard queues are {:?}; update the ScaledObject's queueName",
                topology.shard_queues
            ));
        }
        for t in triggers.iter().filter(|t| t["type"] == "rabbitmq") {
            let m = &t["metadata"];
            let value_ok = m["value"].as_str().and_then(|v| v.parse::<u64>().ok()).is_some_and(|v| v > 0);
            if m["queueName"] != regex.as_str()
                || m["useRegex"] != "true"
                || m["operation"] != "sum"
                || m["protocol"] != "http"
                || m["mode"] != "QueueLength"
                || !value_ok
            {
                problems.push(format!(
                    "rabbitmq trigger {m} should sum QueueLength over {regex} via the management API"
                ));
            }
        }
        for t in triggers.iter().filter(|t| t["type"] == "cpu") {
            if t["metricType"] != "Utilization" {
                problems.push("cpu trigger: metricType should be Utilization".into());
            }
        }
        Ok(problems)
    })
}

// ----------------------------------------------------------------------- availability and network

#[test]
fn every_deployment_has_a_pdb_and_network_policies_allow_only_what_is_needed() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        for d in r.of_kind("Deployment") {
            let labels = &d["spec"]["template"]["metadata"]["labels"];
            let matches = |sel: &Value| {
                let sel = string_map(&sel["matchLabels"]);
                !sel.is_empty() && sel.iter().all(|(k, v)| labels[k] == v.as_str())
            };
            let name = d["metadata"]["name"].as_str().unwrap_or_default();
            if !r
                .of_kind("PodDisruptionBudget")
                .any(|p| p["apiVersion"] == "policy/v1" && matches(&p["spec"]["selector"]))
            {
                problems.push(format!("{name}: no PodDisruptionBudget"));
            }
        }
        let deny = r.of_kind("NetworkPolicy").any(|n| {
            n["spec"]["podSelector"].as_object().is_some_and(|s| s.is_empty())
                && arr(&n["spec"]["policyTypes"]).len() == 2
                && n["spec"]["ingress"].is_null()
                && n["spec"]["egress"].is_null()
        });
        if !deny {
            problems.push("no default-deny NetworkPolicy (ingress and egress)".into());
        }
        // (pod, port, namespace allowed in)
        let needed = [
            ("fraudsense-api", 8080, "ingress-nginx"),
            ("fraudsense-api", 8080, "monitoring"),
            ("fraudsense-worker", 9100, "monitoring"),
        ];
        for (app, port, namespace) in needed {
            let allowed = r.of_kind("NetworkPolicy").any(|n| {
                n["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == app
                    && arr(&n["spec"]["ingress"]).iter().any(|rule| {
                        arr(&rule["from"]).iter().any(|f| {
                            f["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] == namespace
                        }) && arr(&rule["ports"]).iter().any(|p| p["port"] == port)
                    })
            });
            if !allowed {
                problems.push(format!("no NetworkPolicy lets {namespace} reach {app}:{port}"));
            }
        }
        // Pods without the operator read the prometheus.io annotations.
        for d in r.of_kind("Deployment") {
            let annotations = &d["spec"]["template"]["metadata"]["annotations"];
            let port =
                d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"].to_string();
            if annotations["prometheus.io/scrape"] != "true"
                || annotations["prometheus.io/port"] != port.as_str()
                || annotations["prometheus.io/path"] != "/metrics"
            {
                problems.push(format!(
                    "{}: prometheus.io annotations do not point at /metrics on {port}",
                    d["metadata"]["name"]
                ));
            }
        }
        // RabbitMQ, PostgreSQL and Redis come from operators or managed services, not from here.
        for (doc, pod, _) in r.workloads() {
            for c in containers(pod, true) {
                let image = c["image"].as_str().unwrap_or_default();
                if ["rabbitmq", "postgres", "redis"].iter().any(|s| image.contains(s))
                    || doc["kind"] == "StatefulSet"
                {
                    problems.push(format!("{}: hand-rolled data service ({image})", doc["metadata"]["name"]));
                }
            }
        }
        Ok(problems)
    })
}

// ----------------------------------------------------------------------- images

#[test]
fn images_suit_each_overlay() -> Result<()> {
    for_each_overlay(|r| {
        let mut problems = Vec::new();
        for (doc, pod, _) in r.workloads() {
            for c in containers(pod, true) {
                let image = c["image"].as_str().unwrap_or_default();
                let (repository, tag) = image.rsplit_once(':').unwrap_or((image, ""));
                let (registry, name) = repository.rsplit_once('/').unwrap_or(("", repository));
                let ok = match r.overlay.as_str() {
                    "aks" => {
                        let acr = registry
                            .strip_suffix(".azurecr.io")
                            .is_some_and(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric()));
                        acr && name.starts_with("fraudsense-") && !tag.is_empty() && tag != "latest"
                    }
                    "local" => registry.is_empty() && tag == "dev" && c["imagePullPolicy"] == "IfNotPresent",
                    _ => !tag.is_empty() && tag != "latest",
                };
                let component = doc["metadata"]["name"].as_str().unwrap_or_default();
                if !ok || name != component {
                    problems.push(format!(
                        "{component}/{}: image {image} (pull {}) does not suit the overlay",
                        c["name"], c["imagePullPolicy"]
                    ));
                }
            }
        }
        if r.overlay == "aks" && r.of_kind("Secret").next().is_some() {
            problems.push(
                "the aks overlay applies a Secret: its values come from Key Vault (ExternalSecret)".into(),
            );
        }
        Ok(problems)
    })
}

#[test]
fn base64_decoding_works() {
    assert_eq!(base64_decode("cG9zdGdyZXM6Ly94").as_deref(), Some("postgres://x"));
    assert_eq!(base64_decode("YQ==").as_deref(), Some("a"));
    assert!(base64_decode("!").is_none());
}

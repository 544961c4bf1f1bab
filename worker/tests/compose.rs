//! `infra/docker-compose.yml` and `infra/docker/Dockerfile`, checked without a Docker engine:
//! the compose file validates against the Compose Specification schema; the api's and the
//! workers' environment is exactly what the binaries read, parses, and names the services,
//! ports and credentials the compose file really defines; the broker it preloads has the
//! topology the workers declare; images are pinned, start order is health-gated, mounted files
//! exist; the Dockerfile is hadolint-clean and its health probe works.
//!
//! Tools (all installed by `infra/test-tools.sh`, which `make test` runs): `.venv/bin/python`
//! with PyYAML and jsonschema, `.venv/bin/hadolint`, the schema `.venv/share/compose_spec.json`
//! (`infra/docker/compose-schema.sh`), promtool (`PROMTOOL`, else `PATH`) and rustc.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read, Write},
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Command, Output},
    thread::JoinHandle,
};

use anyhow::{Context, Result, anyhow, bail, ensure};
use fraudsense_actors::{
    Settings,
    settings::{OtlpProtocol, VARIABLES},
    topology::Topology,
};
use reqwest::Url;
use serde_json::Value;

const COMPOSE: &str = "infra/docker-compose.yml";
const DOCKER_DIR: &str = "infra/docker";
const DOCKERFILE: &str = "infra/docker/Dockerfile";
const PROBE: &str = "infra/docker/healthcheck.rs";
const SCHEMA: &str = ".venv/share/compose_spec.json";
const PYTHON: &str = ".venv/bin/python";
const HADOLINT: &str = ".venv/bin/hadolint";
/// The Prometheus configuration every other deployment starts from (job names, rules).
const PROMETHEUS_CONFIG: &str = "infra/prometheus/prometheus.yml";
/// The services that run our binaries, and the stage of the Dockerfile each one builds.
const APPS: &[(&str, &str)] = &[("api", "api"), ("worker", "worker")];
/// The infrastructure both binaries need before they start.
const BACKENDS: &[&str] = &["postgres", "redis", "rabbitmq"];
/// The uid the images run as (k8s/ runs them with the same).
const RUNTIME_USER: &str = "10001:10001";

// ------------------------------------------------------------------------------ tools

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where the compose file's relative paths start.
fn infra() -> PathBuf {
    repo().join("infra")
}

/// A tool or file `infra/test-tools.sh` installs, or an error that says so.
fn installed(relative: &str) -> Result<PathBuf> {
    let path = repo().join(relative);
    ensure!(
        path.is_file(),
        "{} not found: run `make test` (or `bash infra/test-tools.sh`) to install the test tools",
        path.display()
    );
    Ok(path)
}

fn run(command: &mut Command) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    command.output().with_context(|| format!("cannot run {program}"))
}

/// Runs a Python script with the virtualenv's interpreter; its stdout, or its stderr as the error.
fn python(script: &str, args: &[&Path]) -> Result<String> {
    let output = run(Command::new(installed(PYTHON)?).arg("-c").arg(script).args(args))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let hint = if stderr.contains("ModuleNotFoundError") {
            " (a Python package is missing: run `make test` or `bash infra/test-tools.sh`)"
        } else {
            ""
        };
        bail!("python failed{hint}:\n{}{stderr}", String::from_utf8_lossy(&output.stdout));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A YAML file as JSON (PyYAML's safe loader: anchors and merge keys resolved as Compose does).
fn yaml(path: &Path) -> Result<Value> {
    let script =
        "import json, sys, yaml\nwith open(sys.argv[1]) as f:\n    json.dump(yaml.safe_load(f), sys.stdout)";
    let text = python(script, &[path]).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} as JSON", path.display()))
}

fn json_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

// ------------------------------------------------------------------------------ compose

/// A `ports:` entry: host IP and host port (when given) and the container port.
type Port = (Option<String>, Option<u16>, u16);

/// The compose file, with typed accessors for what the tests look at.
struct Compose {
    doc: Value,
}

impl Compose {
    fn load() -> Result<Self> {
        Ok(Self { doc: yaml(&repo().join(COMPOSE))? })
    }

    fn services(&self) -> Result<&serde_json::Map<String, Value>> {
        self.doc["services"].as_object().ok_or_else(|| anyhow!("{COMPOSE} has no services"))
    }

    fn service(&self, name: &str) -> Result<&Value> {
        self.services()?.get(name).ok_or_else(|| anyhow!("{COMPOSE} has no service {name:?}"))
    }

    /// A service's environment as Compose passes it (map or `KEY=value` list; numbers and
    /// booleans become strings).
    fn env(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let scalar = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            other => other.to_string(),
        };
        Ok(match &self.service(name)?["environment"] {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), scalar(v))).collect(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    let item = scalar(item);
                    match item.split_once('=') {
                        Some((k, v)) => (k.to_owned(), v.to_owned()),
                        None => (item, String::new()),
                    }
                })
                .collect(),
            _ => BTreeMap::new(),
        })
    }

    /// The settings a service's binary would start with.
    fn settings(&self, name: &str) -> Result<Settings> {
        let env = self.env(name)?;
        Settings::from_lookup(|k| env.get(k).cloned())
            .with_context(|| format!("service {name}: the binary would refuse this environment"))
    }

    /// `(host ip, host port, container port)` of every published port.
    fn ports(&self, name: &str) -> Result<Vec<Port>> {
        let port = |s: &str| s.parse::<u16>().with_context(|| format!("service {name}: port {s:?}"));
        let mut out = Vec::new();
        for entry in self.service(name)?["ports"].as_array().into_iter().flatten() {
            match entry {
                Value::Object(long) => {
                    let target =
                        long["target"].as_u64().ok_or_else(|| anyhow!("{name}: port without target"))?;
                    let published = match &long["published"] {
                        Value::Null => None,
                        v => Some(port(v.as_str().map_or_else(|| v.to_string(), str::to_owned).as_str())?),
                    };
                    out.push((
                        long["host_ip"].as_str().map(str::to_owned),
                        published,
                        u16::try_from(target)?,
                    ));
                }
                other => {
                    let text = other.as_str().map_or_else(|| other.to_string(), str::to_owned);
                    let text = text.split('/').next().unwrap_or_default();
                    let parts: Vec<&str> = text.rsplitn(3, ':').collect();
                    match parts.as_slice() {
                        [container] => out.push((None, None, port(container)?)),
                        [container, host] => out.push((None, Some(port(host)?), port(container)?)),
                        [container, host, ip] => {
                            out.push((Some((*ip).to_owned()), Some(port(host)?), port(container)?))
                        }
                        _ => bail!("service {name}: cannot read port {text:?}"),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Container ports a service exposes to the network, published or not.
    fn container_ports(&self, name: &str) -> Result<BTreeSet<u16>> {
        let mut ports: BTreeSet<u16> = self.ports(name)?.into_iter().map(|(_, _, c)| c).collect();
        for e in self.service(name)?["expose"].as_array().into_iter().flatten() {
            let text = e.as_str().map_or_else(|| e.to_string(), str::to_owned);
            ports.insert(text.parse().with_context(|| format!("service {name}: expose {text:?}"))?);
        }
        Ok(ports)
    }

    /// `(source, target)` of every volume entry (short or long syntax).
    fn volumes(&self, name: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for entry in self.service(name)?["volumes"].as_array().into_iter().flatten() {
            match entry {
                Value::String(short) => {
                    let mut parts = short.split(':');
                    let (Some(source), Some(target)) = (parts.next(), parts.next()) else {
                        bail!("service {name}: volume {short:?} has no target");
                    };
                    out.push((source.to_owned(), target.to_owned()));
                }
                long => out.push((
                    long["source"].as_str().unwrap_or_default().to_owned(),
                    long["target"].as_str().unwrap_or_default().to_owned(),
                )),
            }
        }
        Ok(out)
    }

    /// The repository file mounted at `target` in `service`.
    fn mounted_file(&self, service: &str, target: &str) -> Result<PathBuf> {
        let (source, _) = self
            .volumes(service)?
            .into_iter()
            .find(|(_, t)| t == target)
            .ok_or_else(|| anyhow!("service {service} mounts nothing at {target}"))?;
        Ok(infra().join(source))
    }

    /// The service's image, if it pulls one.
    fn image(&self, name: &str) -> Result<Option<&str>> {
        Ok(self.service(name)?["image"].as_str())
    }
}

fn is_bind(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

/// `repository[:tag][@digest]` → the repository without registry port confusion, and the tag.
fn split_image(image: &str) -> (&str, Option<&str>) {
    let image = image.split('@').next().unwrap_or(image);
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].split_once(':') {
        Some((_, tag)) => (&image[..slash + image[slash..].len() - tag.len() - 1], Some(tag)),
        None => (image, None),
    }
}

/// A tag or digest other than `latest` (`versioned`: and the tag names at least major.minor).
fn check_pinned(image: &str, versioned: bool) -> Result<()> {
    if image.contains("@sha256:") {
        return Ok(());
    }
    let (_, tag) = split_image(image);
    let tag = tag.ok_or_else(|| anyhow!("image {image:?} has no tag: pin one"))?;
    ensure!(!tag.contains("latest"), "image {image:?} uses a moving `latest` tag: pin a version");
    if versioned {
        let numbers: Vec<&str> = tag.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
        ensure!(
            numbers.len() >= 2 && tag.trim_start_matches('v').starts_with(|c: char| c.is_ascii_digit()),
            "image {image:?}: pin at least major.minor (e.g. 16.9), not just {tag:?}"
        );
    }
    Ok(())
}

fn host_of(url: &Url) -> &str {
    url.host_str().unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ------------------------------------------------------------------------------ Dockerfile

/// One build stage: its base, its name and its instructions (continuations joined).
#[derive(Debug)]
struct Stage {
    base: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, instruction: &str) -> impl Iterator<Item = &str> {
        self.instructions.iter().filter(move |(i, _)| i == instruction).map(|(_, a)| a.as_str())
    }

    /// `ENV` values set in this stage or the stages it builds on.
    fn env(&self, stages: &[Stage]) -> BTreeMap<String, String> {
        let mut env = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(self.base.as_str()))
            .map(|parent| parent.env(stages))
            .unwrap_or_default();
        for args in self.all("ENV") {
            for pair in args.split_whitespace() {
                if let Some((k, v)) = pair.split_once('=') {
                    env.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
            }
        }
        env
    }

    fn last(&self, instruction: &str, stages: &[Stage]) -> Option<String> {
        self.all(instruction).last().map(str::to_owned).or_else(|| {
            stages
                .iter()
                .find(|s| s.name.as_deref() == Some(self.base.as_str()))
                .and_then(|parent| parent.last(instruction, stages))
        })
    }
}

/// The stages of a Dockerfile, with `${ARG}` defaults declared before the first FROM expanded.
fn dockerfile(path: &Path) -> Result<Vec<Stage>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical.iter().filter(|l| !l.is_empty()) {
        let (instruction, rest) = line.split_once(char::is_whitespace).unwrap_or((line.as_str(), ""));
        let instruction = instruction.to_ascii_uppercase();
        let rest = rest.trim().to_owned();
        if instruction == "FROM" {
            let mut base = rest.split_whitespace().next().unwrap_or_default().to_owned();
            for (k, v) in &args {
                base = base.replace(&format!("${{{k}}}"), v);
            }
            let words: Vec<&str> = rest.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage { base, name, instructions: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.instructions.push((instruction, rest));
        } else if instruction == "ARG"
            && let Some((k, v)) = rest.split_once('=')
        {
            args.insert(k.to_owned(), v.to_owned());
        }
    }
    ensure!(!stages.is_empty(), "{} has no FROM", path.display());
    Ok(stages)
}

fn stage<'a>(stages: &'a [Stage], name: &str) -> Result<&'a Stage> {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .ok_or_else(|| anyhow!("{DOCKERFILE} has no stage {name:?}"))
}

/// Every Dockerfile under infra/docker (`Dockerfile`, `*.Dockerfile`, `Dockerfile.*`).
fn dockerfiles() -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(DOCKER_DIR))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains("Dockerfile")))
        .collect();
    files.sort();
    ensure!(!files.is_empty(), "no Dockerfile in {DOCKER_DIR}");
    Ok(files)
}

// ------------------------------------------------------------------------------ schema

#[test]
fn compose_file_validates_against_the_compose_specification() -> Result<()> {
    let schema = repo().join(SCHEMA);
    ensure!(
        schema.is_file(),
        "{} not found: run `make test` (or `bash infra/test-tools.sh`, which runs `infra/docker/compose-schema.sh`)",
        schema.display()
    );
    // Draft 2019-09 is what the schema declares; the second pass proves the validator is
    // strict (an unknown service key must be refused), so a pass is not vacuous.
    let script = r#"
import copy, json, sys, yaml, jsonschema
with open(sys.argv[1]) as f:
    schema = json.load(f)
with open(sys.argv[2]) as f:
    doc = yaml.safe_load(f)
Validator = jsonschema.Draft201909Validator
Validator.check_schema(schema)
validator = Validator(schema)
errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
for e in errors:
    print("/".join(str(p) for p in e.absolute_path) + ": " + e.message[:300])
bad = copy.deepcopy(doc)
bad["services"][next(iter(bad["services"]))]["not_a_compose_key"] = True
if not list(validator.iter_errors(bad)):
    print("the schema accepted an unknown service key: it does not validate anything")
    sys.exit(2)
sys.exit(1 if errors else 0)
"#;
    let compose = repo().join(COMPOSE);
    python(script, &[&schema, &compose])
        .with_context(|| format!("{COMPOSE} violates the Compose Specification"))?;
    let doc = Compose::load()?.doc;
    ensure!(doc.get("version").is_none(), "{COMPOSE}: the Compose Specification has no `version:` key");
    Ok(())
}

// ------------------------------------------------------------------------------ settings

#[test]
fn app_environment_is_what_the_binaries_read() -> Result<()> {
    let compose = Compose::load()?;
    let known: BTreeSet<&str> = VARIABLES.iter().map(|(name, _, _)| *name).collect();
    for (service, _) in APPS {
        let env = compose.env(service)?;
        let unknown: Vec<&String> = env.keys().filter(|k| !known.contains(k.as_str())).collect();
        ensure!(
            unknown.is_empty(),
            "service {service} sets {unknown:?}, which no binary reads (actors/src/settings.rs VARIABLES)"
        );
        compose.settings(service)?;
    }

    let prometheus = yaml(&compose.mounted_file("prometheus", "/etc/prometheus/prometheus.yml")?)?;
    let job = |name: &str| -> Result<Value> {
        prometheus["scrape_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["job_name"] == name)
            .cloned()
            .ok_or_else(|| anyhow!("the compose Prometheus config has no job {name}"))
    };
    let stages = dockerfile(&repo().join(DOCKERFILE))?;

    // api: listens on all interfaces, on the port that is published and scraped.
    let api = compose.settings("api")?;
    ensure!(
        api.api_addr.ip().is_unspecified(),
        "api must listen on 0.0.0.0 in a container, not {}",
        api.api_addr
    );
    let port = api.api_addr.port();
    ensure!(
        compose.ports("api")?.iter().any(|(_, host, container)| *container == port && host.is_some()),
        "api listens on {port} (FRAUDSENSE_API_ADDR) but does not publish it"
    );
    let api_job = job("fraudsense-api")?;
    let targets: Vec<&str> = api_job["static_configs"][0]["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    ensure!(targets == [format!("api:{port}")], "Prometheus scrapes the api at {targets:?}, not api:{port}");
    let image = stage(&stages, "api")?;
    ensure!(
        image.env(&stages).get("FRAUDSENSE_API_ADDR").map(String::as_str)
            == Some(api.api_addr.to_string().as_str()),
        "the api image's FRAUDSENSE_API_ADDR differs from the compose file's {}",
        api.api_addr
    );
    ensure!(
        image.all("EXPOSE").any(|p| p.split_whitespace().any(|p| p == port.to_string())),
        "the api image does not EXPOSE {port}"
    );

    // worker: all interfaces, exposed (not published: two replicas), every replica scraped.
    let worker = compose.settings("worker")?;
    ensure!(
        worker.worker_addr.ip().is_unspecified(),
        "worker must listen on 0.0.0.0 in a container, not {}",
        worker.worker_addr
    );
    let port = worker.worker_addr.port();
    ensure!(
        compose.container_ports("worker")?.contains(&port),
        "worker serves /metrics on {port} but does not expose it"
    );
    ensure!(compose.ports("worker")?.is_empty(), "worker publishes host ports: its replicas would collide");
    let sd = &job("fraudsense-worker")?["dns_sd_configs"][0];
    ensure!(
        sd["names"] == serde_json::json!(["worker"]) && sd["port"].as_u64() == Some(u64::from(port)),
        "Prometheus must discover every worker replica by DNS (names [worker], port {port}), not {sd}"
    );
    let image = stage(&stages, "worker")?;
    ensure!(
        image.env(&stages).get("FRAUDSENSE_WORKER_ADDR").map(String::as_str)
            == Some(worker.worker_addr.to_string().as_str()),
        "the worker image's FRAUDSENSE_WORKER_ADDR differs from the compose file's {}",
        worker.worker_addr
    );
    ensure!(
        image.all("EXPOSE").any(|p| p.split_whitespace().any(|p| p == port.to_string())),
        "the worker image does not EXPOSE {port}"
    );

    // RabbitMQ's Prometheus plugin: the scraped port is one the broker exposes.
    let targets = job("rabbitmq")?["static_configs"][0]["targets"].clone();
    let exposed = compose.container_ports("rabbitmq")?;
    for target in targets.as_array().into_iter().flatten().filter_map(Value::as_str) {
        let (host, port) = target.split_once(':').ok_or_else(|| anyhow!("target {target} has no port"))?;
        ensure!(
            host == "rabbitmq" && exposed.contains(&port.parse()?),
            "Prometheus scrapes {target}: not a rabbitmq port"
        );
    }
    Ok(())
}

#[test]
fn connection_strings_name_the_compose_services_and_their_credentials() -> Result<()> {
    let compose = Compose::load()?;
    let services = compose.services()?;
    let postgres = compose.env("postgres")?;
    let users = json_file(&compose.mounted_file("rabbitmq", "/etc/rabbitmq/definitions/00-users.json")?)?;
    for (service, _) in APPS {
        let env = compose.env(service)?;
        let settings = compose.settings(service)?;
        let url = |var: &str| -> Result<Url> {
            let value = env.get(var).ok_or_else(|| anyhow!("service {service} does not set {var}"))?;
            Url::parse(value).with_context(|| format!("service {service}: {var} is not a URL"))
        };

        let db = url("DATABASE_URL")?;
        ensure!(
            services.contains_key(host_of(&db)),
            "{service}: DATABASE_URL names no service: {}",
            host_of(&db)
        );
        ensure!(
            host_of(&db) == "postgres" && db.port().unwrap_or(5432) == 5432,
            "{service}: DATABASE_URL is not postgres:5432"
        );
        ensure!(
            Some(db.username()) == postgres.get("POSTGRES_USER").map(String::as_str)
                && db.password() == postgres.get("POSTGRES_PASSWORD").map(String::as_str),
            "{service}: DATABASE_URL's credentials are not POSTGRES_USER/POSTGRES_PASSWORD"
        );
        ensure!(
            db.path().trim_start_matches('/') == postgres.get("POSTGRES_DB").map_or("", String::as_str),
            "{service}: DATABASE_URL's database is not POSTGRES_DB"
        );

        let redis = url("REDIS_URL")?;
        ensure!(
            host_of(&redis) == "redis"
                && services.contains_key("redis")
                && redis.port().unwrap_or(6379) == 6379,
            "{service}: REDIS_URL is not the redis service on 6379"
        );

        let amqp = url("AMQP_URL")?;
        let rabbit_ports = compose.container_ports("rabbitmq")?;
        ensure!(
            host_of(&amqp) == "rabbitmq" && rabbit_ports.contains(&amqp.port().unwrap_or(5672)),
            "{service}: AMQP_URL is not a port of the rabbitmq service"
        );
        let (user, password) =
            (percent_decode(amqp.username()), percent_decode(amqp.password().unwrap_or_default()));
        let vhost = match amqp.path().trim_start_matches('/') {
            "" => "/".to_owned(),
            path => percent_decode(path),
        };
        let entry =
            users["users"].as_array().into_iter().flatten().find(|u| u["name"] == user.as_str()).ok_or_else(
                || anyhow!("{service}: AMQP_URL's user {user:?} is not defined in the broker's users.json"),
            )?;
        ensure!(
            entry["hashing_algorithm"] == "rabbit_password_hashing_sha256",
            "users.json: unexpected hashing algorithm"
        );
        let hash = entry["password_hash"].as_str().unwrap_or_default();
        let check = "import base64, hashlib, sys\nh = base64.b64decode(sys.argv[1])\nprint(hashlib.sha256(h[:4] + sys.argv[2].encode()).digest() == h[4:])";
        let matches = python(check, &[Path::new(hash), Path::new(&password)])?;
        ensure!(
            matches.trim() == "True",
            "{service}: AMQP_URL's password is not the one users.json hashes for {user:?}"
        );
        ensure!(
            users["permissions"].as_array().into_iter().flatten().any(|p| p["user"] == user.as_str()
                && p["vhost"] == vhost.as_str()
                && ["configure", "write", "read"].iter().all(|k| p[*k] == ".*")),
            "{service}: users.json does not give {user:?} full permissions on vhost {vhost:?}"
        );
        let tags = entry["tags"].as_array().cloned().unwrap_or_default();
        ensure!(
            tags.iter().any(|t| t == "administrator" || t == "monitoring" || t == "management"),
            "{service}: {user:?} needs a management tag to read shard ownership from the management API"
        );

        let balance =
            settings.amqp.balance.as_ref().ok_or_else(|| anyhow!("{service}: shard balancing is off"))?;
        let management = Url::parse(&balance.url)?;
        ensure!(
            host_of(&management) == "rabbitmq"
                && rabbit_ports.contains(&management.port_or_known_default().unwrap_or(0)),
            "{service}: RABBITMQ_MANAGEMENT_URL is not a port of the rabbitmq service"
        );
        ensure!(
            balance.user == user && balance.vhost == vhost,
            "{service}: management credentials differ from AMQP_URL's"
        );

        let endpoint = settings.tracing.otlp_endpoint.as_deref().ok_or_else(|| {
            anyhow!("{service}: OTEL_EXPORTER_OTLP_ENDPOINT is not set: no traces reach Jaeger")
        })?;
        let endpoint = Url::parse(endpoint)?;
        let expected = match settings.tracing.otlp_protocol {
            OtlpProtocol::Grpc => 4317,
            OtlpProtocol::HttpProtobuf => 4318,
        };
        ensure!(
            host_of(&endpoint) == "jaeger" && endpoint.port_or_known_default() == Some(expected),
            "{service}: the OTLP endpoint must be jaeger:{expected} for {:?}",
            settings.tracing.otlp_protocol
        );
        ensure!(compose.container_ports("jaeger")?.contains(&expected), "jaeger does not expose {expected}");
        ensure!(
            compose.env("jaeger")?.get("COLLECTOR_OTLP_ENABLED").map(String::as_str) == Some("true"),
            "jaeger must have COLLECTOR_OTLP_ENABLED=true"
        );
    }
    Ok(())
}

#[test]
fn preloaded_broker_topology_is_what_the_binaries_declare() -> Result<()> {
    let compose = Compose::load()?;
    // The broker imports every file of definitions.local.path at boot.
    let conf = std::fs::read_to_string(
        compose.mounted_file("rabbitmq", "/etc/rabbitmq/conf.d/20-fraudsense.conf")?,
    )?;
    let setting = |key: &str| {
        conf.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim().to_owned())
    };
    ensure!(
        setting("definitions.import_backend").as_deref() == Some("local_filesystem"),
        "rabbitmq.conf: no definitions import"
    );
    let dir = setting("definitions.local.path")
        .ok_or_else(|| anyhow!("rabbitmq.conf: no definitions.local.path"))?;
    let files: Vec<(String, String)> = compose
        .volumes("rabbitmq")?
        .into_iter()
        .filter(|(_, target)| target.starts_with(&format!("{dir}/")))
        .collect();
    let topology_file = files
        .iter()
        .find(|(source, _)| source.ends_with("rabbitmq/definitions.json"))
        .ok_or_else(|| anyhow!("rabbitmq does not import infra/rabbitmq/definitions.json from {dir}"))?;
    let users_file = files.iter().find(|(source, _)| source.ends_with("users.json")).ok_or_else(|| {
        anyhow!("rabbitmq imports no users: a node that imports definitions creates no guest user")
    })?;
    ensure!(
        users_file.1 < topology_file.1,
        "users.json must sort before the topology (import order is by file name)"
    );

    let committed = json_file(&infra().join(&topology_file.0))?;
    let plugins =
        std::fs::read_to_string(compose.mounted_file("rabbitmq", "/etc/rabbitmq/enabled_plugins")?)?;
    for plugin in ["rabbitmq_management", "rabbitmq_prometheus", "rabbitmq_consistent_hash_exchange"] {
        ensure!(plugins.contains(plugin), "enabled_plugins lacks {plugin}");
    }
    for (service, _) in APPS {
        let settings = compose.settings(service)?;
        let vhost = settings.amqp.balance.as_ref().map_or("/", |b| b.vhost.as_str());
        let declared = Topology::from_settings(&settings.amqp).definitions(vhost);
        ensure!(
            declared == committed,
            "{service} would declare a topology other than the one rabbitmq preloads (a mismatch fails the \
             declaration with PRECONDITION_FAILED): regenerate infra/rabbitmq/definitions.json with \
             `fraudsense-worker topology` or align the compose environment"
        );
    }
    Ok(())
}

// ------------------------------------------------------------------------------ images, order

#[test]
fn images_are_pinned_and_start_order_is_health_gated() -> Result<()> {
    let compose = Compose::load()?;
    let services = compose.services()?;
    let stages = dockerfile(&repo().join(DOCKERFILE))?;
    for (name, service) in services {
        if let Some(build) = service.get("build") {
            let context = infra().join(build["context"].as_str().unwrap_or("."));
            let file = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            ensure!(file.is_file(), "service {name}: {} does not exist", file.display());
            let target =
                build["target"].as_str().ok_or_else(|| anyhow!("service {name}: build without target"))?;
            stage(&dockerfile(&file)?, target)?;
        } else {
            let image =
                compose.image(name)?.ok_or_else(|| anyhow!("service {name}: neither image nor build"))?;
            check_pinned(image, true).with_context(|| format!("service {name}"))?;
        }
        let health = &service["healthcheck"];
        ensure!(
            health["test"].as_array().is_some_and(|t| !t.is_empty()) && health["disable"] != true,
            "service {name} has no healthcheck"
        );
        let depends = &service["depends_on"];
        let deps: Vec<(&String, &str)> = match depends {
            Value::Object(map) => {
                map.iter().map(|(k, v)| (k, v["condition"].as_str().unwrap_or("service_started"))).collect()
            }
            Value::Array(_) => bail!(
                "service {name}: depends_on without conditions starts before its dependencies are ready"
            ),
            _ => Vec::new(),
        };
        for (dep, condition) in deps {
            ensure!(services.contains_key(dep), "service {name} depends on {dep}, which does not exist");
            if condition == "service_healthy" {
                ensure!(
                    services[dep]["healthcheck"]["test"].is_array(),
                    "{name} waits for {dep} to be healthy; it has no healthcheck"
                );
            }
        }
    }

    for (app, target) in APPS {
        let service = compose.service(app)?;
        ensure!(service["build"]["target"] == *target, "service {app} must build the {target} stage");
        for backend in BACKENDS {
            ensure!(
                service["depends_on"][*backend]["condition"] == "service_healthy",
                "service {app} must wait for {backend} to be healthy"
            );
        }
        let probe = service["healthcheck"]["test"].as_array().cloned().unwrap_or_default();
        let var = if *app == "api" { "FRAUDSENSE_API_ADDR" } else { "FRAUDSENSE_WORKER_ADDR" };
        ensure!(
            probe.iter().any(|a| a == "/usr/local/bin/healthcheck") && probe.iter().any(|a| a == var),
            "service {app}: the healthcheck must run the image's probe on {var}"
        );
        let image = stage(&stages, target)?;
        ensure!(
            image.last("USER", &stages).as_deref() == Some(RUNTIME_USER),
            "the {target} image must run as {RUNTIME_USER}"
        );
        ensure!(
            image.last("HEALTHCHECK", &stages).is_some_and(|h| h.contains(var) && h.contains("/health")),
            "the {target} image needs a HEALTHCHECK probing /health on {var}"
        );
    }
    ensure!(compose.service("worker")?["deploy"]["replicas"] == 2, "the worker must run 2 replicas");

    let expect_image = |service: &str, repository: &str, tag_prefix: &str| -> Result<()> {
        let image = compose.image(service)?.unwrap_or_default();
        let (repo_name, tag) = split_image(image);
        ensure!(
            repo_name == repository && tag.is_some_and(|t| t.starts_with(tag_prefix)),
            "service {service} must run {repository}:{tag_prefix}…, not {image:?}"
        );
        Ok(())
    };
    expect_image("postgres", "postgres", "16.")?;
    expect_image("redis", "redis", "7.")?;
    expect_image("rabbitmq", "rabbitmq", "3.")?;
    ensure!(
        compose.image("rabbitmq")?.is_some_and(|i| i.contains("management")),
        "rabbitmq needs the management image"
    );
    expect_image("jaeger", "jaegertracing/all-in-one", "1.")?;
    expect_image("prometheus", "prom/prometheus", "v")?;
    expect_image("grafana", "grafana/grafana", "")?;
    ensure!(
        compose.env("postgres")?.get("POSTGRES_DB").map(String::as_str) == Some("fraudsense"),
        "POSTGRES_DB must be fraudsense"
    );

    let mut host_ports = BTreeSet::new();
    for name in services.keys() {
        for (ip, host, _) in compose.ports(name)? {
            if let Some(host) = host {
                ensure!(host_ports.insert(host), "host port {host} is published twice");
                ensure!(
                    ip.as_deref() == Some("127.0.0.1"),
                    "service {name} publishes {host} beyond 127.0.0.1"
                );
            }
        }
    }
    Ok(())
}

#[test]
fn mounted_files_exist_and_fit_the_services() -> Result<()> {
    let compose = Compose::load()?;
    let declared: BTreeSet<String> =
        compose.doc["volumes"].as_object().map(|v| v.keys().cloned().collect()).unwrap_or_default();
    for name in compose.services()?.keys() {
        for (source, target) in compose.volumes(name)? {
            if is_bind(&source) {
                ensure!(
                    infra().join(&source).exists(),
                    "service {name} mounts {source} (relative to infra/): missing"
                );
            } else {
                ensure!(
                    declared.contains(&source),
                    "service {name} uses volume {source}, not declared under volumes:"
                );
            }
            ensure!(target.starts_with('/'), "service {name}: mount target {target} is not absolute");
        }
    }
    let data = compose.volumes("postgres")?;
    ensure!(
        data.iter().any(|(s, t)| !is_bind(s) && t == "/var/lib/postgresql/data"),
        "postgres keeps its data in no named volume"
    );

    // Prometheus: the rules its config names are mounted beside it, the config is valid, and
    // the jobs are the ones the rules and dashboards (written for infra/prometheus) expect.
    let config_path = compose.mounted_file("prometheus", "/etc/prometheus/prometheus.yml")?;
    let config = yaml(&config_path)?;
    let scratch = std::env::temp_dir().join(format!("fraudsense-compose-prometheus-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    std::fs::copy(&config_path, scratch.join("prometheus.yml"))?;
    for rule in config["rule_files"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        let source = compose.mounted_file("prometheus", &format!("/etc/prometheus/{rule}"))?;
        std::fs::copy(&source, scratch.join(rule))?;
    }
    let promtool = std::env::var_os("PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH")
                .and_then(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).find(|p| p.is_file()))
        })
        .unwrap_or_else(|| "/usr/bin/promtool".into());
    let checked =
        run(Command::new(&promtool).args(["check", "config", "prometheus.yml"]).current_dir(&scratch))
            .context("promtool: run `make test` (or `bash infra/test-tools.sh`) to install it")?;
    let _ = std::fs::remove_dir_all(&scratch);
    ensure!(
        checked.status.success(),
        "promtool check config rejects the compose Prometheus config:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    let jobs = |doc: &Value| -> BTreeSet<String> {
        doc["scrape_configs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|j| j["job_name"].as_str())
            .map(str::to_owned)
            .collect()
    };
    let reference = yaml(&repo().join(PROMETHEUS_CONFIG))?;
    ensure!(
        jobs(&config) == jobs(&reference),
        "the compose Prometheus jobs differ from {PROMETHEUS_CONFIG}'s"
    );

    // Grafana: provisioning where Grafana reads it, dashboards where the provider looks.
    let provisioning = compose.mounted_file("grafana", "/etc/grafana/provisioning")?;
    let provider = yaml(&provisioning.join("dashboards/fraudsense.yml"))?;
    let path = provider["providers"][0]["options"]["path"].as_str().unwrap_or_default();
    let dashboards = compose.mounted_file("grafana", path)?;
    let count = std::fs::read_dir(&dashboards)?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .count();
    ensure!(count > 0, "no dashboard JSON in {}", dashboards.display());
    let datasources = yaml(&provisioning.join("datasources/prometheus.yml"))?;
    let url = Url::parse(datasources["datasources"][0]["url"].as_str().unwrap_or_default())?;
    ensure!(
        host_of(&url) == "prometheus"
            && compose.container_ports("prometheus")?.contains(&url.port_or_known_default().unwrap_or(0)),
        "the Grafana datasource {url} is not the prometheus service"
    );
    Ok(())
}

// ------------------------------------------------------------------------------ Dockerfile

#[test]
fn dockerfiles_are_hadolint_clean_and_pinned() -> Result<()> {
    let hadolint = installed(HADOLINT)?;
    for file in dockerfiles()? {
        let output = run(Command::new(&hadolint).args(["--no-color", "--format", "tty"]).arg(&file))?;
        ensure!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "hadolint reports on {}:\n{}{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let stages = dockerfile(&file)?;
        let names: BTreeSet<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
        for stage in &stages {
            if !names.contains(stage.base.as_str()) {
                check_pinned(&stage.base, false).with_context(|| format!("{}", file.display()))?;
            }
        }
    }
    let stages = dockerfile(&repo().join(DOCKERFILE))?;
    let build = stages
        .iter()
        .flat_map(|s| s.all("RUN"))
        .find(|r| r.contains("cargo build"))
        .ok_or_else(|| anyhow!("{DOCKERFILE} builds nothing"))?;
    ensure!(
        build.contains("--release") && build.contains("--locked"),
        "the build must be --release --locked"
    );
    ensure!(
        stages.iter().flat_map(|s| s.all("RUN")).any(|r| r.contains("cargo chef cook")),
        "{DOCKERFILE} must cook the dependencies (cargo-chef) before copying the sources"
    );

    // The build context (the repository root) leaves local state out but keeps the probe.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).context("reading .dockerignore")?;
    let rules: BTreeSet<&str> =
        ignore.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for local in ["target/", ".git/", ".venv/", ".run/"] {
        ensure!(rules.contains(local), ".dockerignore must exclude {local}");
    }
    ensure!(
        !rules.contains("infra/") || rules.contains(format!("!{PROBE}").as_str()),
        ".dockerignore excludes infra/ but not the probe's exception !{PROBE}"
    );
    Ok(())
}

// ------------------------------------------------------------------------------ health probe

/// Answers one HTTP request with `status` and returns the request it got.
fn serve_once(status: &'static str) -> Result<(SocketAddr, JoinHandle<Result<String>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = std::thread::spawn(move || -> Result<String> {
        let (mut stream, _) = listener.accept()?;
        let mut request = Vec::new();
        let mut buf = [0_u8; 256];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")?;
        Ok(String::from_utf8_lossy(&request).into_owned())
    });
    Ok((addr, handle))
}

fn join(handle: JoinHandle<Result<String>>) -> Result<String> {
    handle.join().map_err(|_| anyhow!("the test server panicked"))?
}

#[test]
fn health_probe_follows_the_listen_address_and_the_answer() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("fraudsense-healthcheck-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let probe = dir.join("healthcheck");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let built = run(Command::new(rustc)
        .args(["--edition", "2024", "-D", "warnings", "-o"])
        .arg(&probe)
        .arg(repo().join(PROBE)))?;
    ensure!(built.status.success(), "rustc {PROBE} failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let check = |var: &str, value: Option<String>| -> Result<Output> {
        let mut command = Command::new(&probe);
        command.args([var, "/health"]).env_remove(var);
        if let Some(value) = value {
            command.env(var, value);
        }
        run(&mut command)
    };

    // 0.0.0.0 (what the images listen on) is probed on loopback, with the path asked for.
    let (addr, server) = serve_once("200 OK")?;
    let healthy = check("FRAUDSENSE_API_ADDR", Some(format!("0.0.0.0:{}", addr.port())))?;
    let request = join(server)?;
    ensure!(healthy.status.success(), "a 200 is unhealthy: {}", String::from_utf8_lossy(&healthy.stderr));
    ensure!(request.starts_with("GET /health HTTP/1.1\r\n"), "the probe sent {request:?}");

    let (addr, server) = serve_once("503 Service Unavailable")?;
    let unhealthy = check("FRAUDSENSE_WORKER_ADDR", Some(addr.to_string()))?;
    join(server)?;
    ensure!(!unhealthy.status.success(), "a 503 counts as healthy");

    let unset = check("FRAUDSENSE_WORKER_ADDR", None)?;
    ensure!(
        !unset.status.success() && String::from_utf8_lossy(&unset.stderr).contains("FRAUDSENSE_WORKER_ADDR"),
        "an unset address variable must fail and name the variable"
    );

    let closed = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let refused = check("FRAUDSENSE_API_ADDR", Some(closed.to_string()))?;
    ensure!(!refused.status.success(), "nothing listening counts as healthy");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! The monitoring set-up in `infra/prometheus` and `infra/grafana` is valid, and every metric
//! its rules and dashboards query is one the binaries (or RabbitMQ's Prometheus plugin) really
//! export.
//!
//! `promtool` comes from `PROMTOOL`, else `PATH`, else `/usr/bin/promtool`
//! (`infra/test-tools.sh` installs it). RabbitMQ's metrics are read from
//! `RABBITMQ_PROMETHEUS_URL` (default `http://127.0.0.1:15692/metrics`).

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use fraudsense_actors::testing::{TestEnv, eventually};
use serde_json::Value;
use tokio::sync::oneshot;

const PROMETHEUS_CONFIG: &str = "infra/prometheus/prometheus.yml";
const RULES: &str = "infra/prometheus/rules.yml";
const RULE_TESTS: &str = "infra/prometheus/rules.test.yml";
const DASHBOARDS: &str = "infra/grafana/dashboards";
const DATASOURCES: &str = "infra/grafana/provisioning/datasources/prometheus.yml";
/// The uid every panel must use; the datasource provisioning file declares it.
const DATASOURCE_UID: &str = "prometheus";

/// Longest the scrape test waits for a transaction to be scored, and then for every
/// referenced metric to show up.
const DEADLINE: Duration = Duration::from_secs(20);

/// Series Prometheus makes itself, not any exporter.
const SYNTHETIC: &[&str] = &["up", "ALERTS", "ALERTS_FOR_STATE"];

/// PromQL words that are neither metrics nor functions.
const KEYWORDS: &[&str] = &["bool", "and", "or", "unless", "offset", "atan2", "inf", "nan"];
/// PromQL modifiers followed by a parenthesised list of label names.
const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------- promtool

fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return path.into();
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("promtool")).find(|p| p.is_file()))
        .unwrap_or_else(|| "/usr/bin/promtool".into())
}

/// Runs promtool from the repository root and fails with its output unless it succeeds.
fn promtool_succeeds(args: &[&str]) {
    let tool = promtool();
    let output = Command::new(&tool).args(args).current_dir(repo()).output().unwrap_or_else(|e| {
        panic!("cannot run {}: {e} (install it with `bash infra/test-tools.sh`)", tool.display())
    });
    assert!(
        output.status.success(),
        "`promtool {}` failed ({}):\n{}{}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

#[test]
fn prometheus_config_is_valid() {
    promtool_succeeds(&["check", "config", PROMETHEUS_CONFIG]);
}

#[test]
fn rules_are_valid() {
    promtool_succeeds(&["check", "rules", RULES]);
}

#[test]
fn rule_unit_tests_pass() {
    promtool_succeeds(&["test", "rules", RULE_TESTS]);
}

// ---------------------------------------------------------------------------- dashboards

/// Every dashboard file, parsed.
fn dashboards() -> Vec<(String, Value)> {
    let dir = repo().join(DASHBOARDS);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no dashboard in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let name = format!("{DASHBOARDS}/{}", path.file_name().unwrap_or_default().to_string_lossy());
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
            let board = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            (name, board)
        })
        .collect()
}

/// The dashboard's panels, including those nested in rows.
fn panels(board: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in board["panels"].as_array().into_iter().flatten() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

fn uses_our_datasource(value: &Value) -> bool {
    value["datasource"]["uid"] == DATASOURCE_UID
}

/// What is wrong with one dashboard, if anything.
fn dashboard_problems(name: &str, board: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |what: String| problems.push(format!("{name}: {what}"));
    if board["uid"].as_str().is_none_or(str::is_empty) {
        problem("no uid".into());
    }
    if !board["schemaVersion"].is_number() {
        problem("no schemaVersion".into());
    }
    for variable in board["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] == "query" && !uses_our_datasource(variable) {
            problem(format!("variable {} does not use datasource uid {DATASOURCE_UID}", variable["name"]));
        }
    }
    let panels = panels(board);
    if panels.is_empty() {
        problem("no panels".into());
    }
    let mut ids = HashSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        match panel["id"].as_u64() {
            Some(id) if !ids.insert(id) => problem(format!("panel {title:?}: id {id} is used twice")),
            Some(_) => {}
            None => problem(format!("panel {title:?}: no numeric id")),
        }
        let grid = &panel["gridPos"];
        let field = |key: &str| grid[key].as_u64();
        match (field("x"), field("y"), field("w"), field("h")) {
            (Some(x), Some(_), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24 => {}
            _ => problem(format!("panel {title:?}: missing or invalid gridPos {grid}")),
        }
        if panel["type"] == "row" {
            continue;
        }
        if !uses_our_datasource(panel) {
            problem(format!("panel {title:?}: datasource is not uid {DATASOURCE_UID}"));
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            problem(format!("panel {title:?}: no targets"));
        }
        for target in targets {
            if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) {
                problem(format!("panel {title:?}: target {} has no expr", target["refId"]));
            }
            if !target["datasource"].is_null() && !uses_our_datasource(target) {
                problem(format!("panel {title:?}: target {} uses another datasource", target["refId"]));
            }
        }
    }
    problems
}

#[test]
fn dashboards_are_well_formed() {
    let problems: Vec<String> =
        dashboards().iter().flat_map(|(name, board)| dashboard_problems(name, board)).collect();
    assert!(problems.is_empty(), "dashboard problems:\n  {}", problems.join("\n  "));

    let provisioning = read(DATASOURCES);
    assert!(
        provisioning.lines().any(|line| line.trim() == format!("uid: {DATASOURCE_UID}")),
        "{DATASOURCES} does not declare the datasource uid {DATASOURCE_UID} the dashboards use"
    );
}

/// The dashboard's query with Grafana's variables replaced by something PromQL accepts.
fn without_grafana_variables(expr: &str) -> String {
    let mut out =
        expr.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h");
    while let Some(start) = out.find('$') {
        let rest = &out[start + 1..];
        let len = match rest.strip_prefix('{') {
            Some(braced) => braced.find('}').map_or(rest.len(), |end| end + 2),
            None => rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len()),
        };
        out.replace_range(start..start + 1 + len, ".*");
    }
    out
}

#[test]
fn dashboard_queries_are_valid_promql() {
    // promtool parses every query as the expression of a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard-queries\n    rules:\n");
    // Each named after where it comes from, so promtool's complaint points at the panel.
    for (name, board) in dashboards() {
        let stem = Path::new(&name).file_stem().unwrap_or_default().to_string_lossy().replace('-', "_");
        for panel in panels(&board) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let record = format!(
                        "dashboard:{stem}:panel_{}_{}",
                        panel["id"],
                        target["refId"].as_str().unwrap_or_default()
                    );
                    let quoted = serde_json::to_string(&without_grafana_variables(expr))
                        .unwrap_or_else(|e| panic!("{e}"));
                    rules.push_str(&format!("      - record: {record}\n        expr: {quoted}\n"));
                }
            }
        }
    }
    let path = std::env::temp_dir().join(format!("fraudsense-dashboard-queries-{}.yml", std::process::id()));
    std::fs::write(&path, rules).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let checked =
        std::panic::catch_unwind(|| promtool_succeeds(&["check", "rules", &path.to_string_lossy()]));
    let _ = std::fs::remove_file(&path);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }
}

// ---------------------------------------------------------------------------- PromQL in files

/// The values of `key:` in a YAML file (plain, quoted or block scalars), by line parsing: the
/// rules files are simple enough not to need a YAML parser.
fn yaml_values(yaml: &str, key: &str) -> Vec<String> {
    let prefix = format!("{key}:");
    let lines: Vec<&str> = yaml.lines().collect();
    let mut values = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let content = line.trim_start();
        let content = content.strip_prefix("- ").unwrap_or(content).trim_start();
        let Some(rest) = content.strip_prefix(&prefix) else { continue };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let indent = line.len() - line.trim_start().len();
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect();
            values.push(block.join("\n"));
        } else if let Some(quoted) = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            values.push(quoted.replace("\\\"", "\"").replace("\\\\", "\\"));
        } else if let Some(quoted) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            values.push(quoted.replace("''", "'"));
        } else {
            values.push(rest.split(" #").next().unwrap_or_default().trim().to_owned());
        }
    }
    values
}

/// Index just past the bracket closing the one at `open` (or the end).
fn skip_brackets(chars: &[char], open: usize, left: char, right: char) -> usize {
    let mut depth = 0;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '"' | '\'' | '`' => {
                i = skip_string(chars, i);
                continue;
            }
            c if c == left => depth += 1,
            c if c == right => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    chars.len()
}

/// Index just past the string literal starting at `start`.
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' if quote != '`' => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    chars.len()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The metric names a PromQL expression selects: every identifier that is not a function
/// or aggregation (followed by `(`, `by` or `without`), a keyword, a label name (inside `{}` or a `by (...)`-style
/// list), a number or duration, a string, or a Grafana variable (`$x`, `${x}`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_brackets(&chars, i, '{', '}');
        } else if c == '[' {
            i = skip_brackets(&chars, i, '[', ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_brackets(&chars, i, '{', '}');
            } else {
                while i < chars.len() && is_name_char(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) {
            // Numbers and durations: 0.99, 1e-3, 0x1f, 5m, 1h30m.
            i += 1;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric()
                    || chars[i] == '.'
                    || (matches!(chars[i], '+' | '-') && matches!(chars[i - 1], 'e' | 'E')))
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_name_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let lower = word.to_ascii_lowercase();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let before_paren = chars.get(next) == Some(&'(');
            // `sum by (le) (...)`: an aggregation whose grouping comes first.
            let before_grouping = ["by", "without"].iter().any(|g| {
                let after = next + g.len();
                chars.len() >= after
                    && chars[next..after].iter().collect::<String>().eq_ignore_ascii_case(g)
                    && chars.get(after).is_none_or(|c| !is_name_char(*c))
            });
            if GROUPING.contains(&lower.as_str()) {
                if before_paren {
                    i = skip_brackets(&chars, next, '(', ')');
                }
            } else if !KEYWORDS.contains(&lower.as_str()) && !before_paren && !before_grouping {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric the rules and dashboards query, with the files that query it; recording-rule
/// outputs and Prometheus's own series left out.
fn referenced_metrics() -> BTreeMap<String, BTreeSet<String>> {
    let rules = read(RULES);
    let recorded: BTreeSet<String> = yaml_values(&rules, "record").into_iter().collect();
    let rule_exprs = yaml_values(&rules, "expr");
    let alerts = yaml_values(&rules, "alert");
    assert_eq!(
        rule_exprs.len(),
        recorded.len() + alerts.len(),
        "{RULES}: one `expr:` per rule expected; is the line parsing broken?"
    );
    let mut exprs: Vec<(String, String)> =
        rule_exprs.into_iter().map(|expr| (RULES.to_owned(), expr)).collect();
    for (name, board) in dashboards() {
        for panel in panels(&board) {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    exprs.push((name.clone(), expr.to_owned()));
                }
            }
        }
    }
    assert!(exprs.len() > 10, "found only {} PromQL expressions; is the parsing broken?", exprs.len());
    let mut referenced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, expr) in exprs {
        for name in metric_names(&expr) {
            if !recorded.contains(&name) && !SYNTHETIC.contains(&name.as_str()) {
                referenced.entry(name).or_default().insert(file.clone());
            }
        }
    }
    referenced
}

#[test]
fn metric_names_skip_functions_labels_and_keywords() {
    let expr = r#"
        histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{instance=~"$api", route!="/metrics"}[$__rate_interval])))
          > bool 0.5
        and on (shard) group_left (node)
        max without (instance) (deriv(worker_shard_queue_depth[10m:1m] offset 5m)) > 1e-3
        or label_replace(vector(0), "dst", "$1", "src", "(.*)")
        unless absent(up{job="fraudsense-worker"} == 1) * fraudsense:recorded:rate5m
    "#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(
        names,
        [
            "fraudsense:recorded:rate5m",
            "http_request_duration_seconds_bucket",
            "up",
            "worker_shard_queue_depth"
        ]
    );
    let yaml = "rules:\n  - record: a:b:c\n    expr: sum(x)\n  - alert: A\n    expr: |\n      y\n        > 1\n    for: 5m\n  - expr: \"z{l=\\\"v\\\"}\"\n";
    assert_eq!(yaml_values(yaml, "expr"), ["sum(x)", "y\n> 1", "z{l=\"v\"}"]);
    assert_eq!(yaml_values(yaml, "record"), ["a:b:c"]);
    assert_eq!(
        without_grafana_variables(r#"rate(x{instance=~"$api",job="${job:regex}"}[$__rate_interval])"#),
        r#"rate(x{instance=~".*",job=".*"}[1m])"#
    );
}

// ---------------------------------------------------------------------------- the real exporters

/// The metric names a Prometheus text exposition declares (`# TYPE <name> <kind>`).
async fn exported(http: &reqwest::Client, url: &str) -> BTreeSet<String> {
    let response = http.get(url).send().await.unwrap_or_else(|e| panic!("cannot scrape {url}: {e}"));
    assert!(response.status().is_success(), "{url} answered {}", response.status());
    let text = response.text().await.unwrap_or_else(|e| panic!("cannot read {url}: {e}"));
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Whether `name` is exported, directly or as a histogram's or summary's series.
fn is_exported(name: &str, exported: &BTreeSet<String>) -> bool {
    exported.contains(name)
        || ["_bucket", "_sum", "_count"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|base| exported.contains(base)))
}

/// An api (in-process) serving on a free port, and how to stop it.
async fn start_api(
    settings: fraudsense_actors::Settings,
) -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let app =
        fraudsense_api::Application::build(settings).await.unwrap_or_else(|e| panic!("api build: {e:#}"));
    let addr = app.local_addr().unwrap_or_else(|e| panic!("api address: {e}"));
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    (addr, stop, served)
}

/// Submits one transaction to the api and waits until the worker has scored it, so every
/// histogram on the path (publish confirm, scoring, commit, processing) has an observation:
/// histograms appear with their first one.
async fn score_one_transaction(http: &reqwest::Client, api: SocketAddr) {
    let id = format!("tx-monitoring-{}", uuid::Uuid::new_v4().simple());
    let body = serde_json::json!({
        "transaction_id": id,
        "account_id": "acct-monitoring",
        "amount": "42.00",
        "currency": "USD",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "merchant_id": "merchant-7",
        "country": "US",
        "channel": "pos"
    });
    let posted = http
        .post(format!("http://{api}/transactions"))
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST /transactions: {e}"));
    assert_eq!(
        posted.status().as_u16(),
        202,
        "POST /transactions: {}",
        posted.text().await.unwrap_or_default()
    );
    eventually(DEADLINE, &format!("{id} to be scored"), || async {
        let response = http.get(format!("http://{api}/transactions/{id}")).send().await?;
        let scored = response.status().is_success() && response.json::<Value>().await?["status"] == "scored";
        Ok(scored.then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboards_use_is_exported() {
    let referenced = referenced_metrics();
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    let (api, stop_api, served) = start_api(env.settings.clone()).await;
    let node = fraudsense_worker::Node::start(env.settings.clone())
        .await
        .unwrap_or_else(|e| panic!("worker: {e:#}"));
    let http = env.http_client();
    let rabbitmq_url =
        std::env::var("RABBITMQ_PROMETHEUS_URL").unwrap_or_else(|_| "http://127.0.0.1:15692/metrics".into());
    let api_url = format!("http://{api}/metrics");
    let worker_url = format!("http://{}/metrics", node.addr());
    score_one_transaction(&http, api).await;

    // Counters and gauges exist from start-up, histograms since the transaction above; the
    // deadline only absorbs gauges set by a periodic poll (queue depths).
    let until = tokio::time::Instant::now() + DEADLINE;
    let missing = loop {
        let mut ours = exported(&http, &api_url).await;
        ours.extend(exported(&http, &worker_url).await);
        let rabbitmq = exported(&http, &rabbitmq_url).await;
        let missing: Vec<String> = referenced
            .iter()
            .filter(|(name, _)| {
                let source = if name.starts_with("rabbitmq_") { &rabbitmq } else { &ours };
                !is_exported(name, source)
            })
            .map(|(name, files)| {
                format!("{name} (in {})", files.iter().cloned().collect::<Vec<_>>().join(", "))
            })
            .collect();
        if missing.is_empty() || tokio::time::Instant::now() >= until {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    node.stop().await;
    let _ = stop_api.send(());
    let _ = served.await;
    env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
    assert!(
        missing.is_empty(),
        "{} of {} metrics the rules or dashboards query are not exported (no `# TYPE` line on {api_url}, \
         {worker_url} or {rabbitmq_url}):\n  {}",
        missing.len(),
        referenced.len(),
        missing.join("\n  ")
    );
}

//! `/metrics`: HTTP requests are counted by route template and status.
//!
//! Every app in one test process shares one recorder, so these tests compare a series
//! before and after their own requests rather than expecting absolute values.

use std::time::Duration;

use fraudsense_actors::testing::TestEnv;
use serde_json::json;

use crate::helpers::{TestApp, problem, spawn_app, spawn_app_on, transaction};

/// The value of the series `name` with exactly `labels` (in any order) in a Prometheus text
/// exposition, if it is there.
fn series(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> =
        labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    want.sort();
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (got, value) = match rest.strip_prefix('{') {
            Some(rest) => parse_labels(rest)?,
            None => (Vec::new(), rest.strip_prefix(' ')?),
        };
        let mut got = got;
        got.sort();
        (got == want).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Parses `k="v",k2="v2"} value` into the labels and the rest after `} `.
fn parse_labels(mut text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        if let Some(rest) = text.strip_prefix("} ") {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = &rest[end + 1..];
        text = text.strip_prefix(',').unwrap_or(text);
    }
}

async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap_or_default()
}

/// `http_requests_total` for one method, route and status (0 when absent).
fn requests(text: &str, method: &str, route: &str, status: &str) -> f64 {
    series(text, "http_requests_total", &[("method", method), ("route", route), ("status", status)])
        .unwrap_or(0.0)
}

#[test]
fn the_exposition_parser_reads_templates_and_escapes() {
    let text = "# TYPE x counter\nx{route=\"/a/{id}\",status=\"404\",q=\"say \\\"hi\\\"\"} 3\nx 1\n";
    assert_eq!(series(text, "x", &[("status", "404"), ("q", "say \"hi\""), ("route", "/a/{id}")]), Some(3.0));
    assert_eq!(series(text, "x", &[]), Some(1.0));
    assert_eq!(series(text, "x", &[("status", "404")]), None);
}

#[tokio::test]
async fn requests_are_counted_and_timed_by_route_template_and_status() {
    let app = spawn_app().await;
    let before = scrape(&app).await;

    assert_eq!(app.post_json(&transaction("metrics-1", "10")).await.status().as_u16(), 202);
    let mut invalid = transaction("metrics-2", "10");
    invalid["amount"] = json!("-5");
    problem(app.post_json(&invalid).await, 422).await;
    problem(app.get("/transactions/metrics-never-seen").await, 404).await;
    problem(app.get("/no/such/path/metrics-probe").await, 404).await;

    let after = scrape(&app).await;
    let grew = |method, route, status| {
        requests(&after, method, route, status) - requests(&before, method, route, status)
    };
    assert!(grew("POST", "/transactions", "202") >= 1.0, "202 not counted:\n{after}");
    assert!(grew("POST", "/transactions", "422") >= 1.0, "422 not counted:\n{after}");
    assert!(grew("GET", "/transactions/{transaction_id}", "404") >= 1.0, "404 not counted:\n{after}");
    assert!(grew("GET", "unmatched", "404") >= 1.0, "unmatched 404 not counted:\n{after}");
    // The scrape before is counted too, under its own route.
    assert!(requests(&after, "GET", "/metrics", "200") >= 1.0, "/metrics not counted:\n{after}");
    // Raw paths never become label values.
    assert!(!after.contains("metrics-never-seen") && !after.contains("metrics-probe"), "{after}");

    let timed = |text: &str| {
        let labels = [("method", "POST"), ("route", "/transactions")];
        series(text, "http_request_duration_seconds_count", &labels).unwrap_or(0.0)
    };
    assert!(timed(&after) - timed(&before) >= 2.0, "POSTs not timed:\n{after}");
    assert!(after.contains("# TYPE http_requests_total counter"), "{after}");
    assert!(after.contains("# HELP http_requests_total "), "described at start-up:\n{after}");
    app.teardown().await;
}

#[tokio::test]
async fn requests_the_timeout_layer_answers_are_counted_too() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let (proxy, mut settings) = env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    settings.amqp.confirm_timeout = Duration::from_secs(20);
    settings.http.request_timeout = Duration::from_millis(400);
    let app = spawn_app_on(env, settings).await;
    let before = scrape(&app).await;

    // The broker stops answering: the publish waits for a confirm until the timeout layer
    // gives up on the request, outside the handler.
    proxy.stall();
    let p = problem(app.post_json(&transaction("metrics-slow", "1")).await, 503).await;
    assert!(p["detail"].as_str().is_some_and(|d| d.contains("too long")), "{p}");
    proxy.resume();

    let after = scrape(&app).await;
    let grew =
        requests(&after, "POST", "/transactions", "503") - requests(&before, "POST", "/transactions", "503");
    assert!(grew >= 1.0, "the timed-out request was not counted:\n{after}");
    app.teardown().await;
}

//! `GET /dashboard` and its two assets: served with the right types, a strict CSP, no
//! caching, and nothing outside this origin.

use crate::helpers::{TestApp, spawn_app};

fn header(response: &reqwest::Response, name: &str) -> String {
    response.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

/// GETs `path`, asserts `200`, the content type and the common headers, returns the body.
async fn asset(app: &TestApp, path: &str, content_type: &str) -> String {
    let response = app.get(path).await;
    assert_eq!(response.status().as_u16(), 200, "{path}");
    assert!(
        header(&response, "content-type").starts_with(content_type),
        "{path}: {}",
        header(&response, "content-type")
    );
    assert_eq!(header(&response, "cache-control"), "no-cache", "{path}");
    let csp = header(&response, "content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
    assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
    assert!(csp.contains("style-src 'self'"), "{path}: {csp}");
    assert!(csp.contains(&format!("connect-src 'self' ws://{0} wss://{0}", app.addr)), "{path}: {csp}");
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval") && !csp.contains('*'), "{csp}");
    response.text().await.unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn dashboard_serves_a_self_contained_page() {
    let app = spawn_app().await;
    let page = asset(&app, "/dashboard", "text/html").await;
    let script = asset(&app, "/dashboard/app.js", "text/javascript").await;
    let style = asset(&app, "/dashboard/app.css", "text/css").await;

    for (name, text) in [("page", &page), ("script", &script), ("style", &style)] {
        let lower = text.to_ascii_lowercase();
        assert!(!lower.contains("http://") && !lower.contains("https://"), "{name} names an external URL");
    }

    // The page loads exactly its own two assets and no inline code.
    let sources: Vec<&str> =
        page.split(['"', '\'']).filter(|s| s.starts_with('/') && !s.starts_with("//")).collect();
    assert_eq!(sources, ["/dashboard/app.css", "/dashboard/app.js"]);
    assert!(!page.contains("<script>") && !page.contains("<style") && !page.contains(" style="));
    assert!(!page.contains("src=\"//") && !page.contains("href=\"//"));
    for id in ["id=\"connection\"", "data-state=", "id=\"alerts\"", "id=\"drilldown\"", "<canvas"] {
        assert!(page.contains(id), "page lacks {id}");
    }

    // The script follows the live stream, resuming from the highest alert seen.
    assert!(script.contains("/alerts/stream"));
    assert!(script.contains("since="));
    for needle in [
        "data-action",
        "\"ack\"",
        "\"fraud\"",
        "\"legit\"",
        "Authorization",
        "sessionStorage",
        "bearer.",
        "/metrics",
    ] {
        assert!(script.contains(needle), "script lacks {needle}");
    }
    app.teardown().await;
}

#[tokio::test]
async fn dashboard_policy_does_not_echo_an_odd_host() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(app.url("/dashboard"))
        .header("host", "evil.example; script-src *")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status().as_u16(), 200);
    let csp = header(&response, "content-security-policy");
    assert!(csp.ends_with("connect-src 'self'"), "{csp}");
    app.teardown().await;
}

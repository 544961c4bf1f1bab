//! The analysts' dashboard: `GET /dashboard` (the page), `/dashboard/app.js` and
//! `/dashboard/app.css`.
//!
//! Three static assets compiled into the binary with `include_str!`: nothing is fetched from
//! a CDN or built at run time. The page reads the public api (`GET /alerts`,
//! `WS /alerts/stream`, `GET /transactions/{id}`, `GET /accounts/{id}`, `GET /metrics`) and
//! acts through `POST /alerts/{id}/ack` and `/resolve`. Every answer carries
//! `Cache-Control: no-cache` (a new build is picked up at once) and a strict
//! `Content-Security-Policy` that admits only this origin (plus its WebSocket).

use axum::{
    http::{
        HeaderMap, HeaderValue,
        header::{CACHE_CONTROL, CONTENT_TYPE, HOST, HeaderName},
    },
    response::{IntoResponse, Response},
};

/// The page.
pub const PAGE: &str = include_str!("../assets/dashboard.html");
/// Its script (plain JavaScript, no build step).
pub const SCRIPT: &str = include_str!("../assets/dashboard.js");
/// Its style sheet.
pub const STYLE: &str = include_str!("../assets/dashboard.css");

/// Everything but `connect-src`: only this origin, no inline code, no framing, no plugins.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'; object-src 'none'";

const CSP: HeaderName = HeaderName::from_static("content-security-policy");
const NOSNIFF: HeaderName = HeaderName::from_static("x-content-type-options");

/// The `Content-Security-Policy` for a request to `host` (its `Host` header): fetches to
/// `'self'` and WebSockets to this same host only. A missing or odd-looking host gets
/// `'self'` alone (which CSP level 3 browsers also apply to `ws:`/`wss:` on this host).
pub fn content_security_policy(host: Option<&str>) -> String {
    let host = host.filter(|h| {
        !h.is_empty()
            && h.len() <= 255
            && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
    });
    match host {
        Some(h) => format!("{POLICY}; connect-src 'self' ws://{h} wss://{h}"),
        None => format!("{POLICY}; connect-src 'self'"),
    }
}

fn asset(headers: &HeaderMap, content_type: &'static str, body: &'static str) -> Response {
    let host = headers.get(HOST).and_then(|h| h.to_str().ok());
    let csp = HeaderValue::from_str(&content_security_policy(host))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"));
    (
        [
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (CSP, csp),
            (NOSNIFF, HeaderValue::from_static("nosniff")),
        ],
        body,
    )
        .into_response()
}

/// `GET /dashboard`: the page.
pub async fn page(headers: HeaderMap) -> Response {
    asset(&headers, "text/html; charset=utf-8", PAGE)
}

/// `GET /dashboard/app.js`: the page's script.
pub async fn script(headers: HeaderMap) -> Response {
    asset(&headers, "text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /dashboard/app.css`: the page's style sheet.
pub async fn style(headers: HeaderMap) -> Response {
    asset(&headers, "text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::content_security_policy;

    #[test]
    fn websockets_are_allowed_to_the_same_host_only() {
        let csp = content_security_policy(Some("127.0.0.1:8080"));
        assert!(csp.contains("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080"));
        assert!(csp.contains("script-src 'self';"));
        assert!(!csp.contains("unsafe"));
    }

    #[test]
    fn an_odd_host_header_is_not_echoed() {
        for host in [None, Some(""), Some("evil; script-src *"), Some("a b")] {
            let csp = content_security_policy(host);
            assert!(csp.ends_with("connect-src 'self'"), "{csp}");
        }
    }
}

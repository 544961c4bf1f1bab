//! HTTP metrics: every request counted in `http_requests_total{method,route,status}` and
//! timed in `http_request_duration_seconds{method,route}`.
//!
//! `route` is the matched route template (`/transactions/{transaction_id}`), never the raw
//! path, and `unmatched` when no route matched (the 404 fallback); `method` is one of the
//! standard methods or `OTHER`. So the number of series stays bounded whatever clients send.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    http::Method,
    middleware::Next,
    response::Response,
};

/// The `route` of requests no route matched.
pub const UNMATCHED: &str = "unmatched";

/// Middleware (for [`axum::middleware::from_fn`]) recording one request. Added with
/// `Router::layer` outside the load-shed and timeout layers, it sees the matched route and
/// also counts the `503`s those layers answer.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| UNMATCHED.to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The method as a label value: the standard ones by name, anything else as `OTHER`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_methods_share_one_label() {
        assert_eq!(method_label(&Method::POST), "POST");
        let custom = Method::from_bytes(b"BREW").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(method_label(&custom), "OTHER");
    }
}

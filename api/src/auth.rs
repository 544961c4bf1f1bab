//! Who may call what: bearer-token authentication before any handler runs, role checks per
//! route, and the request-level limits that go with them (header size, CORS).
//!
//! [`guard`] wraps a route: it verifies the token ([`fraudsense_actors::auth::Verifier`]),
//! answers `401` (no valid token) or `403` (valid, without the role) itself, and otherwise
//! hands the handler the caller as an `Extension<Principal>`. The WebSocket route is
//! guarded the same way, so the stream authenticates before the upgrade.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use fraudsense_actors::auth::{Principal, Rejection, Role, Verifier};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::problem::ApiError;

/// The subprotocol the alert stream speaks. Browsers cannot set headers on a WebSocket, so
/// the dashboard offers `fraudsense.v1, bearer.<token>` and the server selects this one.
pub const WS_PROTOCOL: &str = "fraudsense.v1";
/// Prefix of the subprotocol that carries the token.
pub const WS_BEARER_PREFIX: &str = "bearer.";

/// One route's requirement: a verifier and the roles that may pass.
#[derive(Clone)]
pub struct Guard {
    verifier: Arc<Verifier>,
    roles: &'static [Role],
    needs: &'static str,
}

impl Guard {
    /// A guard letting through callers holding any of `roles`; `needs` names them for the
    /// `403` detail.
    pub fn new(verifier: Arc<Verifier>, roles: &'static [Role], needs: &'static str) -> Self {
        Self { verifier, roles, needs }
    }

    /// The caller, or why they may not pass.
    pub fn check(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = bearer(headers).map_err(ApiError::Unauthorized)?;
        let principal = self.verifier.verify(token).map_err(ApiError::Unauthorized)?;
        if principal.holds_any(self.roles) {
            Ok(principal)
        } else {
            Err(ApiError::Forbidden { needs: self.needs })
        }
    }
}

/// The middleware of a guarded route.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    match guard.check(request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => {
            let reason = match &error {
                ApiError::Unauthorized(why) => why.reason(),
                _ => "forbidden",
            };
            metrics::counter!("auth_refusals_total", "reason" => reason).increment(1);
            // The reason and the route, never the token.
            tracing::info!(reason, path = request.uri().path(), "request refused by authentication");
            error.into_response()
        }
    }
}

/// The token of `Authorization: Bearer <token>`, or, on a WebSocket upgrade, of a
/// `bearer.<token>` subprotocol. More than one credential is refused as malformed.
pub fn bearer(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    match (authorization.next(), authorization.next()) {
        (Some(value), None) => {
            let value = value.to_str().map_err(|_| Rejection::Malformed)?;
            let (scheme, token) = value.split_once(' ').ok_or(Rejection::Malformed)?;
            let token = token.trim();
            if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
                return Err(Rejection::Malformed);
            }
            Ok(token)
        }
        (Some(_), Some(_)) => Err(Rejection::Malformed),
        (None, _) => {
            let upgrade = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok());
            if !upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
                return Err(Rejection::Missing);
            }
            let mut tokens = headers
                .get_all(header::SEC_WEBSOCKET_PROTOCOL)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|p| p.trim().strip_prefix(WS_BEARER_PREFIX));
            match (tokens.next(), tokens.next()) {
                (Some(token), None) if !token.is_empty() => Ok(token),
                (None, _) => Err(Rejection::Missing),
                _ => Err(Rejection::Malformed),
            }
        }
    }
}

/// Refuses requests whose header section (names, values and the `: ` and CRLF around
/// each) exceeds `limit` bytes with `431`, before any handler reads them.
pub async fn limit_headers(State(limit): State<usize>, request: Request, next: Next) -> Response {
    let size: usize =
        request.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if size > limit {
        return ApiError::HeadersTooLarge { limit }.into_response();
    }
    next.run(request).await
}

/// CORS for the configured origins, or `None` when none are: then the api sends no CORS
/// headers at all and browsers refuse cross-origin calls (closed by default).
pub fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let Ok(value) = HeaderValue::from_str(value) {
                map.append(name.clone(), value);
            }
        }
        map
    }

    #[test]
    fn the_token_comes_from_the_header_or_a_websocket_subprotocol() {
        use header::{AUTHORIZATION as AUTH, SEC_WEBSOCKET_PROTOCOL as PROTO, UPGRADE};
        assert_eq!(bearer(&headers(&[(AUTH, "Bearer abc")])), Ok("abc"));
        assert_eq!(bearer(&headers(&[(AUTH, "bearer abc")])), Ok("abc"));
        assert_eq!(bearer(&headers(&[])), Err(Rejection::Missing));
        assert_eq!(bearer(&headers(&[(AUTH, "Basic abc")])), Err(Rejection::Malformed));
        assert_eq!(bearer(&headers(&[(AUTH, "Bearer ")])), Err(Rejection::Malformed));
        assert_eq!(bearer(&headers(&[(AUTH, "Bearer a"), (AUTH, "Bearer b")])), Err(Rejection::Malformed));
        let ws = headers(&[(UPGRADE, "websocket"), (PROTO, "fraudsense.v1, bearer.xyz")]);
        assert_eq!(bearer(&ws), Ok("xyz"));
        // A subprotocol token counts only on an upgrade.
        assert_eq!(bearer(&headers(&[(PROTO, "bearer.xyz")])), Err(Rejection::Missing));
        let two = headers(&[(UPGRADE, "websocket"), (PROTO, "bearer.a, bearer.b")]);
        assert_eq!(bearer(&two), Err(Rejection::Malformed));
    }
}

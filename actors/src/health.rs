//! Readiness checks shared by both binaries' `/ready`.

use std::time::Duration;

use fred::interfaces::ClientLike;

/// Longest any single dependency check may take.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs a check, counting a timeout as a failure.
pub async fn bounded(check: impl Future<Output = bool>) -> bool {
    tokio::time::timeout(CHECK_TIMEOUT, check).await.unwrap_or(false)
}

/// PostgreSQL answers a query.
pub async fn postgres_up(pool: &deadpool_postgres::Pool) -> bool {
    bounded(async { crate::store::ping(pool).await.is_ok() }).await
}

/// Redis answers PING.
pub async fn redis_up(redis: &fred::clients::Client) -> bool {
    bounded(async { redis.ping::<String>(None).await.is_ok() }).await
}

/// The `/ready` body and whether all checks passed.
pub fn report(checks: &[(&str, bool)]) -> (bool, serde_json::Value) {
    let ok = checks.iter().all(|(_, up)| *up);
    let map: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, up)| ((*name).to_owned(), (if *up { "up" } else { "down" }).into()))
        .collect();
    (ok, serde_json::json!({ "status": if ok { "ready" } else { "not ready" }, "checks": map }))
}

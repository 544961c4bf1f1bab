//! Admission control in Redis, shared by every api replica: idempotency on
//! `transaction_id` and per-account rate limits.
//!
//! Idempotency key `{prefix}idem:{transaction_id}` holds `pending:<fingerprint>` while one
//! request publishes and `queued:<fingerprint>` once the broker confirmed, for
//! `IDEMPOTENCY_TTL_SECS`. The fingerprint is a SHA-256 of the canonical JSON body, so the
//! same body in another key order is the same request. Claiming is one atomic
//! `SET NX GET`, so two racing requests cannot both publish. After the TTL the database's
//! unique key is the backstop (the handler compares the stored raw body).

use std::time::Duration;

use fred::{
    clients::Client,
    interfaces::KeysInterface,
    prelude::Error as RedisError,
    types::{Expiration, SetOptions, scripts::Script},
};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Atomic fixed-window counter: returns the count in the current window and its ms left.
const RATE_LUA: &str = r"
local count = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
";

/// Deletes the key only if it still holds our pending claim.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What an earlier request with the same `transaction_id` left behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prior {
    /// Fingerprint of that request's body.
    pub fingerprint: String,
    /// True once its message was confirmed by the broker; false while it is in flight.
    pub queued: bool,
}

impl Prior {
    fn parse(value: &str) -> Option<Self> {
        let (state, fingerprint) = value.split_once(':')?;
        Some(Self { fingerprint: fingerprint.to_owned(), queued: state == "queued" })
    }
}

/// Outcome of counting one request against its account's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateStatus {
    /// Whether the request is within the limit.
    pub allowed: bool,
    /// Requests allowed per window.
    pub limit: u32,
    /// Requests left in the current window.
    pub remaining: u32,
    /// Seconds until the window resets.
    pub reset_secs: u32,
}

/// Idempotency and rate limits on one Redis deployment.
#[derive(Clone)]
pub struct Gate {
    redis: Client,
    prefix: String,
    ttl: Duration,
    pending_ttl: Duration,
    limit: u32,
    window: Duration,
    rate: Script,
    release: Script,
}

/// SHA-256 (hex) of the canonical serialisation of a JSON body.
pub fn fingerprint(body: &Value) -> String {
    let digest = Sha256::digest(body.to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl Gate {
    /// A gate with the given key prefix, idempotency TTL and per-account limit per window.
    /// A pending claim lives only `pending_ttl` (longer than any request may take), so a
    /// request cancelled mid-publish cannot block its retries for the full TTL.
    pub fn new(
        redis: Client,
        prefix: &str,
        ttl: Duration,
        pending_ttl: Duration,
        limit: u32,
        window: Duration,
    ) -> Self {
        Self {
            redis,
            prefix: prefix.to_owned(),
            ttl,
            pending_ttl,
            limit,
            window,
            rate: Script::from_lua(RATE_LUA),
            release: Script::from_lua(RELEASE_LUA),
        }
    }

    fn idem_key(&self, transaction_id: &str) -> String {
        format!("{}idem:{transaction_id}", self.prefix)
    }

    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims `transaction_id` for this request. `None`: it is ours to publish.
    /// `Some(prior)`: another request got there first.
    pub async fn claim(&self, transaction_id: &str, fingerprint: &str) -> Result<Option<Prior>, RedisError> {
        let previous: Option<String> = self
            .redis
            .set(
                self.idem_key(transaction_id),
                format!("pending:{fingerprint}"),
                Some(Expiration::PX(Self::ms(self.pending_ttl))),
                Some(SetOptions::NX),
                true,
            )
            .await?;
        Ok(previous.as_deref().and_then(Prior::parse))
    }

    /// What is recorded for `transaction_id`, if anything.
    pub async fn lookup(&self, transaction_id: &str) -> Result<Option<Prior>, RedisError> {
        let value: Option<String> = self.redis.get(self.idem_key(transaction_id)).await?;
        Ok(value.as_deref().and_then(Prior::parse))
    }

    /// Records that the message for `transaction_id` with this body is safely queued.
    pub async fn mark_queued(&self, transaction_id: &str, fingerprint: &str) -> Result<(), RedisError> {
        self.redis
            .set::<(), _, _>(
                self.idem_key(transaction_id),
                format!("queued:{fingerprint}"),
                Some(Expiration::PX(Self::ms(self.ttl))),
                None,
                false,
            )
            .await
    }

    /// Gives up our pending claim (publish failed), so a retry can claim again.
    pub async fn release(&self, transaction_id: &str, fingerprint: &str) -> Result<(), RedisError> {
        self.release
            .evalsha_with_reload::<i64, _, _>(
                &self.redis,
                vec![self.idem_key(transaction_id)],
                vec![format!("pending:{fingerprint}")],
            )
            .await
            .map(|_| ())
    }

    /// Counts one request against `account_id`'s window.
    pub async fn count(&self, account_id: &str) -> Result<RateStatus, RedisError> {
        let window_ms = Self::ms(self.window);
        let (count, ttl_ms): (i64, i64) = self
            .rate
            .evalsha_with_reload(
                &self.redis,
                vec![format!("{}rate:{account_id}", self.prefix)],
                vec![window_ms.to_string()],
            )
            .await?;
        let limit = i64::from(self.limit);
        Ok(RateStatus {
            allowed: count <= limit,
            limit: self.limit,
            remaining: u32::try_from((limit - count).max(0)).unwrap_or(0),
            reset_secs: u32::try_from((ttl_ms.max(0) + 999) / 1000).unwrap_or(u32::MAX).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: Value = serde_json::from_str(r#"{"a": 1, "b": "x"}"#).unwrap_or_default();
        let b: Value = serde_json::from_str(r#"{"b": "x", "a": 1}"#).unwrap_or_default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"a": 2, "b": "x"})));
        assert_eq!(fingerprint(&a).len(), 64);
    }

    #[test]
    fn prior_values_parse() {
        assert_eq!(Prior::parse("queued:ab"), Some(Prior { fingerprint: "ab".into(), queued: true }));
        assert_eq!(Prior::parse("pending:ab").map(|p| p.queued), Some(false));
        assert_eq!(Prior::parse("garbage"), None);
    }
}

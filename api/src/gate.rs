//! Admission control in Redis, shared by every api replica: idempotency on
//! `transaction_id` and per-account rate limits.
//!
//! Idempotency key `{prefix}idem:{transaction_id}` holds `pending:<fingerprint>` while one
//! request publishes and `queued:<fingerprint>` once the broker confirmed, for
//! `IDEMPOTENCY_TTL_SECS`. The fingerprint is a SHA-256 of the canonical JSON body, so the
//! same body in another key order is the same request. Claiming is one atomic
//! `SET NX GET`, so two racing requests cannot both publish; the same script counts a new
//! claim against the account's limit, so admission costs one round trip. After the TTL the
//! database's unique key is the backstop (the handler compares the stored raw body).

use std::time::Duration;

use fred::{
    clients::Client,
    error::ErrorKind,
    interfaces::KeysInterface,
    prelude::Error as RedisError,
    types::{Expiration, Value, scripts::Script},
};
use sha2::{Digest, Sha256};

/// Admission in one round trip: claim the idempotency key (`SET NX GET`); only a new claim
/// counts against the account's fixed window, and a claim over the limit is given back at
/// once. Answers `{previous value}` when another request got there first, else
/// `{false, count, ms left in the window}`.
///
/// The script touches two keys, which standalone Redis (what this project runs on) allows
/// for any names; on a Redis Cluster both would need one hash tag.
const ADMIT_LUA: &str = r"
local previous = redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX', 'GET')
if previous then
  return {previous}
end
local count = redis.call('INCR', KEYS[2])
local ttl = redis.call('PTTL', KEYS[2])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  ttl = tonumber(ARGV[3])
end
if count > tonumber(ARGV[4]) then
  redis.call('DEL', KEYS[1])
end
return {false, count, ttl}
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

/// What admitting a request found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Another request with this `transaction_id` got there first.
    Prior(Prior),
    /// The id is ours and was counted against the account's limit (ours to publish if
    /// allowed).
    Counted(RateStatus),
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
    admit: Script,
    release: Script,
}

/// SHA-256 (hex) of the canonical serialisation of a JSON body.
pub fn fingerprint(body: &serde_json::Value) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = Sha256::digest(body.to_string().as_bytes());
    let mut hex = String::with_capacity(2 * digest.len());
    for byte in digest {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
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
            admit: Script::from_lua(ADMIT_LUA),
            release: Script::from_lua(RELEASE_LUA),
        }
    }

    fn idem_key(&self, transaction_id: &str) -> String {
        format!("{}idem:{transaction_id}", self.prefix)
    }

    fn ms(d: Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }

    /// Claims `transaction_id` for this request and, if the claim is new, counts it against
    /// `account_id`'s window: [`Admission::Prior`] when another request got there first (a
    /// replay is not counted), else [`Admission::Counted`] (a refused claim is already
    /// given back, so a retry after the window can claim again).
    pub async fn admit(
        &self,
        transaction_id: &str,
        fingerprint: &str,
        account_id: &str,
    ) -> Result<Admission, RedisError> {
        let reply: Vec<Value> = self
            .admit
            .evalsha_with_reload(
                &self.redis,
                vec![self.idem_key(transaction_id), format!("{}rate:{account_id}", self.prefix)],
                vec![
                    format!("pending:{fingerprint}"),
                    Self::ms(self.pending_ttl).to_string(),
                    Self::ms(self.window).to_string(),
                    self.limit.to_string(),
                ],
            )
            .await?;
        match reply.as_slice() {
            [previous] => previous
                .as_string()
                .as_deref()
                .and_then(Prior::parse)
                .map(Admission::Prior)
                .ok_or_else(|| unexpected("an idempotency entry that is not <state>:<fingerprint>")),
            [_, count, ttl_ms] => {
                let (Some(count), Some(ttl_ms)) = (count.as_i64(), ttl_ms.as_i64()) else {
                    return Err(unexpected("a rate count that is not two integers"));
                };
                Ok(Admission::Counted(self.rate_status(count, ttl_ms)))
            }
            _ => Err(unexpected("an admission reply of the wrong length")),
        }
    }

    fn rate_status(&self, count: i64, ttl_ms: i64) -> RateStatus {
        let limit = i64::from(self.limit);
        RateStatus {
            allowed: count <= limit,
            limit: self.limit,
            remaining: u32::try_from((limit - count).max(0)).unwrap_or(0),
            reset_secs: u32::try_from((ttl_ms.max(0) + 999) / 1000).unwrap_or(u32::MAX).max(1),
        }
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
}

fn unexpected(what: &str) -> RedisError {
    RedisError::new(ErrorKind::Parse, format!("admission script answered {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: serde_json::Value = serde_json::from_str(r#"{"a": 1, "b": "x"}"#).unwrap_or_default();
        let b: serde_json::Value = serde_json::from_str(r#"{"b": "x", "a": 1}"#).unwrap_or_default();
        assert_eq!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&json!({"a": 2, "b": "x"})));
        assert_eq!(fingerprint(&a).len(), 64);
        // SHA-256 of the two bytes `{}`, in lowercase hex.
        assert_eq!(
            fingerprint(&json!({})),
            "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
    }

    #[test]
    fn prior_values_parse() {
        assert_eq!(Prior::parse("queued:ab"), Some(Prior { fingerprint: "ab".into(), queued: true }));
        assert_eq!(Prior::parse("pending:ab").map(|p| p.queued), Some(false));
        assert_eq!(Prior::parse("garbage"), None);
    }
}

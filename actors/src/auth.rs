//! Bearer-token authentication: who a caller is and which roles they hold.
//!
//! Tokens are JWTs. The algorithm allowlist is exactly what is configured: HS256 when a
//! shared secret is set (development, `make token`), RS256 when a JWKS file is set
//! (production: the identity provider signs, the key is picked by `kid`). `none` and every
//! other algorithm are refused, as are tokens whose `iss`, `aud`, `exp`, `nbf` or `sub`
//! are missing or wrong. [`Verifier`] checks tokens; [`mint`] signs the development ones.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, jwk::JwkSet};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// Shortest accepted HS256 secret: RFC 7518 §3.2 wants a key as long as the hash.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submits payments (`POST /transactions`).
    Ingest,
    /// Reads transactions, accounts and alerts; acknowledges, resolves and labels; watches
    /// the live stream and the dashboard.
    Analyst,
    /// Rules, models, the dead-letter queue and the audit trail.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Ingest, Role::Analyst, Role::Admin];

    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
        }
    }

    /// Parses a claim value.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == value)
    }
}

/// The claims FraudSense reads from a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Who: recorded as the author of every action in the audit trail.
    pub sub: String,
    /// What they may do.
    pub roles: BTreeSet<Role>,
    /// Who issued the token (must equal `AUTH_ISSUER`).
    pub iss: String,
    /// Whom it is for (must equal `AUTH_AUDIENCE`).
    pub aud: String,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch.
    pub nbf: u64,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
}

/// What verification reads from a token beyond what the library validates (`iss`, `aud`
/// — a string or a list —, `exp`, `nbf`): lenient about extra claims and unknown roles.
#[derive(Deserialize)]
struct Presented {
    sub: String,
    #[serde(default)]
    roles: Vec<serde_json::Value>,
    exp: u64,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's `sub`.
    pub subject: String,
    /// The token's roles.
    pub roles: BTreeSet<Role>,
    /// The token's `exp`: long-lived connections (the alert stream) end there.
    pub expires_at: u64,
}

impl Principal {
    /// An actor without a token: the binaries themselves (`bootstrap`) or an operator's
    /// command, recorded as an admin in the audit trail.
    pub fn operator(subject: impl Into<String>) -> Self {
        Self { subject: subject.into(), roles: [Role::Admin].into_iter().collect(), expires_at: u64::MAX }
    }

    /// The operator running a command-line tool: `cli:<login>` (from `USER`).
    pub fn command_line() -> Self {
        let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| "unknown".into());
        Self::operator(format!("cli:{user}"))
    }

    /// Whether the caller holds any of `allowed`.
    pub fn holds_any(&self, allowed: &[Role]) -> bool {
        allowed.iter().any(|r| self.roles.contains(r))
    }

    /// The roles as claim values, for the audit trail.
    pub fn role_names(&self) -> Vec<&'static str> {
        self.roles.iter().map(|r| r.as_str()).collect()
    }
}

/// The `AUTH_*` settings (read by the api; the worker ignores them).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud`.
    pub audience: String,
    /// HS256 shared secret given inline (`AUTH_HS256_SECRET`).
    pub hs256_secret: Option<SecretString>,
    /// File holding the HS256 secret (`AUTH_HS256_SECRET_FILE`).
    pub hs256_secret_file: Option<PathBuf>,
    /// JWKS file of RS256 public keys (`AUTH_JWKS_FILE`).
    pub jwks_file: Option<PathBuf>,
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
}

/// Why keys could not be loaded, or a token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Nothing to verify tokens with.
    #[error(
        "authentication has no key: set AUTH_HS256_SECRET or AUTH_HS256_SECRET_FILE (development) \
         or AUTH_JWKS_FILE (production)"
    )]
    NoKey,
    /// Both an inline secret and a secret file.
    #[error("set AUTH_HS256_SECRET or AUTH_HS256_SECRET_FILE, not both")]
    TwoSecrets,
    /// A key file could not be read.
    #[error("{var}: cannot read {path}: {source}")]
    Read {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: String,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// The HS256 secret is too short.
    #[error("the HS256 secret must be at least {MIN_SECRET_BYTES} bytes (it has {0})")]
    ShortSecret(usize),
    /// The JWKS file is not a usable key set.
    #[error("AUTH_JWKS_FILE: {0}")]
    Jwks(String),
    /// Minting needs the HS256 secret.
    #[error("development tokens are signed with the HS256 secret, and none is configured")]
    NoSigningSecret,
    /// The key library refused a key, or signing failed.
    #[error("token key: {0}")]
    Key(#[from] jsonwebtoken::errors::Error),
}

/// Why a token was refused. Callers answer `401` whatever the reason; the reason is for
/// the log and the `WWW-Authenticate` description.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// No `Authorization: Bearer` credential.
    #[error("a bearer token is required")]
    Missing,
    /// Not a JWT, or a header or claims that do not parse.
    #[error("the token is malformed")]
    Malformed,
    /// An algorithm outside the allowlist, or a `kid` the key set lacks.
    #[error("the token's algorithm or key is not accepted")]
    Algorithm,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// Past `exp`.
    #[error("the token has expired")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Wrong `iss` or `aud`, or a required claim missing.
    #[error("the token was not issued for this service")]
    Claims,
}

impl Rejection {
    /// The `reason` label of `auth_refusals_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::Algorithm => "algorithm",
            Rejection::Signature => "signature",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not_yet_valid",
            Rejection::Claims => "claims",
        }
    }
}

/// Verifies bearer tokens against the configured keys.
#[derive(Clone)]
pub struct Verifier {
    hs256: Option<DecodingKey>,
    rs256: Vec<(String, DecodingKey)>,
    issuer: String,
    audience: String,
    leeway: u64,
    /// Tokens already verified in full. Clients reuse one token for its whole lifetime
    /// (machine clients for an hour), and an RS256 signature check costs ~90 µs of CPU
    /// (docs/benchmarks.md): a repeat pays a map lookup instead. Only byte-identical tokens
    /// hit, and `exp` is checked again on every use.
    seen: Arc<Mutex<HashMap<String, Principal>>>,
}

/// Most verified tokens remembered; beyond it the expired go, then everything.
pub const VERIFIED_CACHE_MAX: usize = 4096;

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kids: Vec<&str> = self.rs256.iter().map(|(kid, _)| kid.as_str()).collect();
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("rs256_kids", &kids)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl Verifier {
    /// Loads the keys the settings name. At least one kind must be configured.
    pub fn from_settings(settings: &AuthSettings) -> Result<Self, KeyError> {
        let hs256 = match hs256_secret(settings)? {
            Some(secret) => Some(DecodingKey::from_secret(secret.expose_secret().as_bytes())?),
            None => None,
        };
        let rs256 = match &settings.jwks_file {
            Some(path) => jwks(path)?,
            None => Vec::new(),
        };
        if hs256.is_none() && rs256.is_empty() {
            return Err(KeyError::NoKey);
        }
        Ok(Self {
            hs256,
            rs256,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            leeway: settings.leeway.as_secs(),
            seen: Arc::default(),
        })
    }

    /// The algorithms this verifier accepts.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut algorithms = Vec::new();
        if self.hs256.is_some() {
            algorithms.push(Algorithm::HS256);
        }
        if !self.rs256.is_empty() {
            algorithms.push(Algorithm::RS256);
        }
        algorithms
    }

    /// Checks `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<Principal, Rejection> {
        let now = now_secs();
        if let Some(known) = self.remembered(token, now) {
            return Ok(known);
        }
        let principal = self.verify_in_full(token)?;
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= VERIFIED_CACHE_MAX {
                let leeway = self.leeway;
                seen.retain(|_, p| p.expires_at.saturating_add(leeway) >= now);
                if seen.len() >= VERIFIED_CACHE_MAX {
                    seen.clear();
                }
            }
            seen.insert(token.to_owned(), principal.clone());
        }
        Ok(principal)
    }

    /// A token verified before and not expired since.
    fn remembered(&self, token: &str, now: u64) -> Option<Principal> {
        let seen = self.seen.lock().ok()?;
        seen.get(token).filter(|p| p.expires_at.saturating_add(self.leeway) >= now).cloned()
    }

    fn verify_in_full(&self, token: &str) -> Result<Principal, Rejection> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => match (&header.kid, self.rs256.as_slice()) {
                (Some(kid), keys) => keys.iter().find(|(k, _)| k == kid).map(|(_, key)| key),
                // A key set of one needs no `kid`.
                (None, [(_, key)]) => Some(key),
                (None, _) => None,
            },
            _ => None,
        }
        .ok_or(Rejection::Algorithm)?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway;
        let data = jsonwebtoken::decode::<Presented>(token, key, &validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => Rejection::Signature,
                K::ExpiredSignature => Rejection::Expired,
                K::ImmatureSignature => Rejection::NotYetValid,
                K::InvalidIssuer | K::InvalidAudience | K::MissingRequiredClaim(_) => Rejection::Claims,
                K::InvalidAlgorithm | K::MissingAlgorithm | K::UnsupportedAlgorithm => Rejection::Algorithm,
                _ => Rejection::Malformed,
            }
        })?;
        let claims = data.claims;
        if claims.sub.is_empty() {
            return Err(Rejection::Claims);
        }
        // Roles this service does not know (an identity provider's other groups) grant nothing.
        let roles = claims.roles.iter().filter_map(|r| r.as_str().and_then(Role::parse)).collect();
        Ok(Principal { subject: claims.sub, roles, expires_at: claims.exp })
    }
}

fn hs256_secret(settings: &AuthSettings) -> Result<Option<SecretString>, KeyError> {
    let secret = match (&settings.hs256_secret, &settings.hs256_secret_file) {
        (Some(_), Some(_)) => return Err(KeyError::TwoSecrets),
        (Some(secret), None) => secret.clone(),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                var: "AUTH_HS256_SECRET_FILE",
                path: path.display().to_string(),
                source,
            })?;
            // A trailing newline from `echo`/`openssl rand` is not part of the secret.
            SecretString::from(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        (None, None) => return Ok(None),
    };
    let len = secret.expose_secret().len();
    if len < MIN_SECRET_BYTES {
        return Err(KeyError::ShortSecret(len));
    }
    Ok(Some(secret))
}

fn jwks(path: &PathBuf) -> Result<Vec<(String, DecodingKey)>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        var: "AUTH_JWKS_FILE",
        path: path.display().to_string(),
        source,
    })?;
    let set: JwkSet = serde_json::from_str(&text).map_err(|e| KeyError::Jwks(e.to_string()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        // Only RSA signing keys; anything else in the set (encryption keys, other curves)
        // is left alone rather than widening the allowlist.
        if !matches!(jwk.algorithm, jsonwebtoken::jwk::AlgorithmParameters::RSA(_)) {
            continue;
        }
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Jwks(format!("key {kid:?}: {e}")))?;
        keys.push((kid, key));
    }
    if keys.is_empty() {
        return Err(KeyError::Jwks("the key set holds no RSA key".into()));
    }
    Ok(keys)
}

/// Seconds since the epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Claims for `subject` with `roles`, valid from now for `ttl`.
pub fn claims(settings: &AuthSettings, subject: &str, roles: &[Role], ttl: Duration) -> Claims {
    let now = now_secs();
    Claims {
        sub: subject.to_owned(),
        roles: roles.iter().copied().collect(),
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        exp: now + ttl.as_secs(),
        nbf: now,
        iat: now,
    }
}

/// Signs `claims` with the configured HS256 secret (development and tests; production
/// tokens come from the identity provider).
pub fn mint(settings: &AuthSettings, claims: &Claims) -> Result<String, KeyError> {
    let secret = hs256_secret(settings)?.ok_or(KeyError::NoSigningSecret)?;
    sign_hs256(secret.expose_secret().as_bytes(), claims)
}

/// Signs `claims` with an HS256 `secret`.
pub fn sign_hs256(secret: &[u8], claims: &Claims) -> Result<String, KeyError> {
    let key = EncodingKey::from_secret(secret)?;
    Ok(jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(secret: &str) -> AuthSettings {
        AuthSettings {
            issuer: "fraudsense".into(),
            audience: "fraudsense-api".into(),
            hs256_secret: Some(SecretString::from(secret.to_owned())),
            hs256_secret_file: None,
            jwks_file: None,
            leeway: Duration::from_secs(0),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn verify(token: &str) -> Result<Principal, Rejection> {
        Verifier::from_settings(&settings(SECRET)).map_err(|_| Rejection::Missing)?.verify(token)
    }

    #[test]
    fn a_minted_token_verifies_with_its_subject_and_roles() {
        let s = settings(SECRET);
        let token = mint(&s, &claims(&s, "alice", &[Role::Analyst], Duration::from_secs(60)));
        let principal = token.map_err(|e| e.to_string()).and_then(|t| verify(&t).map_err(|e| e.to_string()));
        let principal = principal.map(|p| (p.subject, p.roles.into_iter().collect::<Vec<_>>()));
        assert_eq!(principal, Ok(("alice".to_owned(), vec![Role::Analyst])));
    }

    #[test]
    fn each_bad_token_is_refused_for_its_reason() {
        let s = settings(SECRET);
        let good = claims(&s, "alice", &[Role::Admin], Duration::from_secs(60));
        let sign = |c: &Claims| sign_hs256(SECRET.as_bytes(), c).unwrap_or_default();
        let expired = Claims { exp: now_secs() - 10, ..good.clone() };
        let early = Claims { nbf: now_secs() + 600, ..good.clone() };
        let issuer = Claims { iss: "someone-else".into(), ..good.clone() };
        let audience = Claims { aud: "another-api".into(), ..good.clone() };
        let nobody = Claims { sub: String::new(), ..good.clone() };
        let forged = sign_hs256(b"a-different-secret-of-32-bytes!!", &good).unwrap_or_default();
        // alg "none": header {"alg":"none","typ":"JWT"}, the claims, no signature.
        let none = format!(
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
            sign(&good).split('.').nth(1).unwrap_or_default()
        );
        for (token, why) in [
            (sign(&expired), Rejection::Expired),
            (sign(&early), Rejection::NotYetValid),
            (sign(&issuer), Rejection::Claims),
            (sign(&audience), Rejection::Claims),
            (sign(&nobody), Rejection::Claims),
            (forged, Rejection::Signature),
            (none, Rejection::Malformed),
            ("not-a-jwt".to_owned(), Rejection::Malformed),
        ] {
            assert_eq!(verify(&token).err(), Some(why), "{token}");
        }
    }

    #[test]
    fn unknown_roles_grant_nothing_and_a_list_audience_is_accepted() {
        let now = now_secs();
        let claims = serde_json::json!({
            "sub": "bob", "iss": "fraudsense", "aud": ["other", "fraudsense-api"],
            "exp": now + 60, "nbf": now, "roles": ["analyst", "billing", 7],
        });
        let key = EncodingKey::from_secret(SECRET.as_bytes()).map_err(|e| e.to_string());
        let token = key.and_then(|k| {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &k).map_err(|e| e.to_string())
        });
        let roles = token.and_then(|t| verify(&t).map_err(|e| e.to_string())).map(|p| p.roles);
        assert_eq!(roles, Ok([Role::Analyst].into_iter().collect()));
    }

    /// A key pair made for these tests only (`tests/fixtures`), never used anywhere else.
    const TEST_RSA_KEY: &str = include_str!("../tests/fixtures/rs256-test-only.key.pem");
    const TEST_JWKS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/rs256-test-only.jwks.json");

    fn rs256(claims: &Claims, kid: Option<&str>) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = kid.map(str::to_owned);
        let key = EncodingKey::from_rsa_pem(TEST_RSA_KEY.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn rs256_tokens_verify_against_the_jwks_by_kid_and_nothing_else_passes() {
        let s = AuthSettings { hs256_secret: None, jwks_file: Some(TEST_JWKS.into()), ..settings(SECRET) };
        let verifier = Verifier::from_settings(&s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(verifier.algorithms(), [Algorithm::RS256], "the EC key in the set widens nothing");
        let claims = claims(&s, "idp-user", &[Role::Admin], Duration::from_secs(60));
        let good = rs256(&claims, Some("test-key-1"));
        assert_eq!(verifier.verify(&good).map(|p| p.subject), Ok("idp-user".to_owned()));
        assert_eq!(verifier.verify(&rs256(&claims, Some("rotated-away"))).err(), Some(Rejection::Algorithm));
        // HS256 is not on this allowlist, whatever it is signed with.
        let hs = sign_hs256(SECRET.as_bytes(), &claims).unwrap_or_default();
        assert_eq!(verifier.verify(&hs).err(), Some(Rejection::Algorithm));
        // A payload swapped under a genuine signature.
        let forged_claims = Claims { roles: Role::ALL.into_iter().collect(), ..claims.clone() };
        let forged_payload = rs256(&forged_claims, Some("test-key-1"));
        let mut parts: Vec<&str> = good.split('.').collect();
        parts[1] = forged_payload.split('.').nth(1).unwrap_or_default();
        assert_eq!(verifier.verify(&parts.join(".")).err(), Some(Rejection::Signature));
    }

    #[test]
    fn a_remembered_token_is_served_only_until_it_expires() {
        let verifier = Verifier::from_settings(&settings(SECRET)).unwrap_or_else(|e| panic!("{e}"));
        let principal = |expires_at| Principal { subject: "s".into(), roles: BTreeSet::new(), expires_at };
        if let Ok(mut seen) = verifier.seen.lock() {
            seen.insert("live".into(), principal(now_secs() + 100));
            seen.insert("stale".into(), principal(now_secs() - 100));
        }
        // Neither is a JWT: only the memory can answer for them.
        assert_eq!(verifier.verify("live").map(|p| p.subject), Ok("s".to_owned()));
        assert_eq!(verifier.verify("stale").err(), Some(Rejection::Malformed));
        // A real token is remembered once verified.
        let s = settings(SECRET);
        let token =
            mint(&s, &claims(&s, "alice", &[Role::Analyst], Duration::from_secs(60))).unwrap_or_default();
        assert!(verifier.verify(&token).is_ok());
        assert!(verifier.seen.lock().is_ok_and(|seen| seen.contains_key(&token)));
    }

    #[test]
    fn keys_are_required_and_short_secrets_refused() {
        let none = AuthSettings { hs256_secret: None, ..settings(SECRET) };
        assert!(matches!(Verifier::from_settings(&none), Err(KeyError::NoKey)));
        assert!(matches!(Verifier::from_settings(&settings("short")), Err(KeyError::ShortSecret(5))));
    }
}

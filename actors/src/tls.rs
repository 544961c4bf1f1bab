//! TLS to PostgreSQL, Redis and RabbitMQ: rustls with the ring provider only (no OpenSSL, no
//! aws-lc: `infra/deny.toml`).
//!
//! Servers are trusted when their certificate chains to the system trust store
//! (rustls-native-certs: `/etc/ssl/certs` and friends, `SSL_CERT_FILE`/`SSL_CERT_DIR`) or to
//! a certificate of the service's CA file (`DATABASE_CA_FILE`, `REDIS_CA_FILE`,
//! `AMQP_CA_FILE`), which adds to the system's roots rather than replacing them (lapin can only
//! add, so all three behave the same). CA files are read and checked once, at start-up
//! ([`CaFile::load`]), so a bad one is a start-up error naming its variable.
//!
//! PostgreSQL's `sslmode` is ours to interpret ([`PgSslMode`]): tokio-postgres knows only
//! `disable`/`prefer`/`require` and its `prefer` quietly falls back to plain text.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};

/// Why no TLS client configuration could be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Neither the system store nor a CA file provided a single trusted certificate.
    #[error(
        "no trusted CA certificates: the system store is empty or unreadable ({0}) and no CA file is set"
    )]
    NoRoots(String),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Rustls(String),
}

/// The CA certificates of one PEM file, trusted (besides the system's) for one service.
#[derive(Clone)]
pub struct CaFile {
    path: PathBuf,
    /// The file's text, for lapin (which takes PEM).
    pem: Arc<str>,
    /// The same certificates, decoded, for rustls.
    certificates: Arc<[CertificateDer<'static>]>,
}

impl fmt::Debug for CaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaFile")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl CaFile {
    /// Reads `path` and checks that it holds at least one PEM certificate and that every
    /// certificate in it can be a trust anchor. The error says why not (without the path,
    /// which the caller names along with its variable).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let pem = std::fs::read_to_string(path).map_err(|e| format!("cannot be read: {e}"))?;
        let certificates = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("is not a PEM certificate file: {e}"))?;
        if certificates.is_empty() {
            return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
        }
        let mut store = RootCertStore::empty();
        for (n, certificate) in certificates.iter().enumerate() {
            store
                .add(certificate.clone())
                .map_err(|e| format!("certificate {} is not a usable CA certificate: {e}", n + 1))?;
        }
        Ok(Self { path: path.to_owned(), pem: pem.into(), certificates: certificates.into() })
    }

    /// Where the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file as read (PEM).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The certificates, decoded.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// The chain to a trusted CA, and that the certificate names the host connected to.
    Full,
    /// Only the chain (PostgreSQL `sslmode=verify-ca`): for servers reached by a name or
    /// address their certificate does not list.
    ChainOnly,
}

/// The crypto provider of every TLS connection: ring.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's trusted CAs plus the certificates of `ca`.
pub fn root_store(ca: Option<&CaFile>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let system = rustls_native_certs::load_native_certs();
    let (_, ignored) = roots.add_parsable_certificates(system.certs);
    if ignored > 0 {
        tracing::debug!(component = "tls", ignored, "some system CA certificates could not be parsed");
    }
    if let Some(ca) = ca {
        for certificate in ca.certificates() {
            roots.add(certificate.clone()).map_err(|e| TlsError::Rustls(e.to_string()))?;
        }
    }
    if roots.is_empty() {
        let why = system.errors.first().map(ToString::to_string).unwrap_or_else(|| "no certificates".into());
        return Err(TlsError::NoRoots(why));
    }
    Ok(roots)
}

/// A rustls client configuration (ring, TLS 1.2 and 1.3, no client certificate) that trusts
/// [`root_store`] and checks what `verify` says.
pub fn client_config(ca: Option<&CaFile>, verify: Verify) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let roots = Arc::new(root_store(ca)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let config = match verify {
        Verify::Full => builder.with_root_certificates(roots).with_no_client_auth(),
        Verify::ChainOnly => {
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                .with_no_client_auth()
        }
    };
    Ok(config)
}

/// Checks the chain like rustls' own verifier and accepts a certificate that does not name
/// the host (libpq's `verify-ca`). Everything else (expiry, signatures, key usage, the
/// handshake signature) is checked as usual: webpki checks the name last, after the chain.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// PostgreSQL's `sslmode`, as FraudSense applies it (read from `DATABASE_URL`).
///
/// Stricter than libpq: `require` verifies the certificate and host name too, and the modes
/// that may fall back to plain text (`allow`, `prefer`) are refused, so a URL that asks for
/// TLS never connects without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// No TLS (also when the URL has no `sslmode`, as before TLS support).
    Disable,
    /// TLS, certificate and host name verified (like `verify-full`).
    Require,
    /// TLS, certificate chain verified, host name not checked.
    VerifyCa,
    /// TLS, certificate and host name verified.
    VerifyFull,
}

impl PgSslMode {
    /// Whether connections use TLS.
    pub fn uses_tls(self) -> bool {
        self != PgSslMode::Disable
    }

    /// Splits a PostgreSQL URL into its `sslmode` and the same URL without it (for
    /// tokio-postgres, which does not accept `verify-ca`/`verify-full`). The error explains
    /// what is wrong without quoting the URL (it may carry a password).
    pub fn from_url(url: &str) -> Result<(Self, String), String> {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((PgSslMode::Disable, url.to_owned()));
        };
        let mut mode = PgSslMode::Disable;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslmode" => {
                    mode = match value {
                        "disable" => PgSslMode::Disable,
                        "require" => PgSslMode::Require,
                        "verify-ca" => PgSslMode::VerifyCa,
                        "verify-full" => PgSslMode::VerifyFull,
                        "allow" | "prefer" => {
                            return Err(format!(
                                "sslmode={value} may connect without TLS; use sslmode=require, \
                                 verify-ca or verify-full for TLS, or sslmode=disable"
                            ));
                        }
                        other => {
                            return Err(format!(
                                "sslmode={other:?} is not one of disable, require, verify-ca, verify-full"
                            ));
                        }
                    };
                }
                "sslrootcert" => {
                    return Err(
                        "sslrootcert is not supported: set DATABASE_CA_FILE to the CA's PEM file".into()
                    );
                }
                "sslcert" | "sslkey" | "sslpassword" => {
                    return Err(format!("{key}: client certificates are not supported"));
                }
                _ => kept.push(pair),
            }
        }
        let url = if kept.is_empty() { base.to_owned() } else { format!("{base}?{}", kept.join("&")) };
        Ok((mode, url))
    }

    /// How much of the server's certificate this mode checks (`None`: no TLS).
    pub fn verify(self) -> Option<Verify> {
        match self {
            PgSslMode::Disable => None,
            PgSslMode::VerifyCa => Some(Verify::ChainOnly),
            PgSslMode::Require | PgSslMode::VerifyFull => Some(Verify::Full),
        }
    }
}

/// Whether a Redis URL asks for TLS (`rediss://`, `rediss-cluster://`, `valkeys://`, ...: the
/// schemes fred treats as TLS).
pub fn redis_url_uses_tls(url: &str) -> bool {
    let scheme = url.split_once("://").map_or("", |(s, _)| s).to_ascii_lowercase();
    scheme.starts_with("rediss") || scheme.starts_with("valkeys")
}

/// Whether an AMQP URL asks for TLS (`amqps://`).
pub fn amqp_url_uses_tls(url: &str) -> bool {
    url.split_once("://").is_some_and(|(s, _)| s.eq_ignore_ascii_case("amqps"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_read_and_removed_from_the_url() {
        let cases = [
            ("postgres://u:p@h/db", PgSslMode::Disable, "postgres://u:p@h/db"),
            ("postgres://h/db?sslmode=disable", PgSslMode::Disable, "postgres://h/db"),
            ("postgres://h/db?sslmode=require", PgSslMode::Require, "postgres://h/db"),
            (
                "postgres://h/db?application_name=a%20b&sslmode=verify-ca&connect_timeout=5",
                PgSslMode::VerifyCa,
                "postgres://h/db?application_name=a%20b&connect_timeout=5",
            ),
            ("postgres://h/db?sslmode=verify-full", PgSslMode::VerifyFull, "postgres://h/db"),
        ];
        for (url, mode, rest) in cases {
            assert_eq!(PgSslMode::from_url(url), Ok((mode, rest.to_owned())), "{url}");
        }
    }

    #[test]
    fn modes_that_may_fall_back_to_plain_text_are_refused() {
        for url in [
            "postgres://h/db?sslmode=prefer",
            "postgres://h/db?sslmode=allow",
            "postgres://h/db?sslmode=on",
            "postgres://h/db?sslmode=require&sslrootcert=/ca.pem",
            "postgres://h/db?sslcert=/c.pem",
        ] {
            let err = PgSslMode::from_url(url).err().unwrap_or_default();
            assert!(!err.is_empty(), "{url} accepted");
        }
    }

    #[test]
    fn tls_schemes() {
        assert!(redis_url_uses_tls("rediss://h:6380"));
        assert!(redis_url_uses_tls("rediss-cluster://h:6380"));
        assert!(!redis_url_uses_tls("redis://h:6379"));
        assert!(amqp_url_uses_tls("amqps://u:p@h/%2f"));
        assert!(!amqp_url_uses_tls("amqp://u:p@h/%2f"));
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_refused() {
        let dir = std::env::temp_dir().join(format!("fs-tls-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let junk = dir.join("junk.pem");
        let _ = std::fs::write(&junk, "not a certificate\n");
        assert!(CaFile::load(&junk).err().is_some_and(|e| e.contains("no PEM certificate")));
        assert!(CaFile::load(dir.join("missing.pem")).err().is_some_and(|e| e.contains("cannot be read")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

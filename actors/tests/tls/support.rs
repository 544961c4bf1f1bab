//! What the TLS tests stand on: a throwaway CA, a TLS-terminating proxy in front of a local
//! service, and a throwaway PostgreSQL cluster with `ssl=on`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

fn made<T>(result: Result<T, rcgen::Error>) -> T {
    result.unwrap_or_else(|e| panic!("rcgen: {e}"))
}

/// Longest any single step of a TLS test may take.
pub const STEP: Duration = Duration::from_secs(20);

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{prefix}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff_ffff)
}

/// A throwaway CA and one server certificate it signed (for `localhost` only, so a
/// connection to `127.0.0.1` has a certificate that does not name its host). Its files live
/// in a temporary directory that goes when this does.
pub struct Pki {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The CA certificate (PEM): what `*_CA_FILE` points at.
    pub ca_file: PathBuf,
    /// The server certificate (PEM).
    pub cert_file: PathBuf,
    /// The server's private key (PEM, PKCS#8).
    pub key_file: PathBuf,
    server: Arc<ServerConfig>,
}

impl Pki {
    /// Makes the CA, the server certificate and key, and writes them out.
    pub fn new() -> Self {
        let ca_key = made(KeyPair::generate());
        let mut ca = made(CertificateParams::new(Vec::<String>::new()));
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "FraudSense throwaway test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = made(ca.self_signed(&ca_key));
        let issuer = Issuer::new(ca, ca_key);

        let server_key = made(KeyPair::generate());
        let mut server = made(CertificateParams::new(vec!["localhost".to_owned()]));
        server.distinguished_name.push(DnType::CommonName, "localhost");
        let server_cert = made(server.signed_by(&server_key, &issuer));

        let dir = std::env::temp_dir().join(unique("fraudsense-tls"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            path
        };
        let ca_file = write("ca.pem", &ca_cert.pem());
        let cert_file = write("server.crt", &server_cert.pem());
        let key_file = write("server.key", &server_key.serialize_pem());

        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let chain: Vec<CertificateDer<'static>> = vec![server_cert.der().clone()];
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .unwrap_or_else(|e| panic!("server TLS config: {e}"));
        Self { dir, ca_file, cert_file, key_file, server: Arc::new(server) }
    }

    /// The CA file's path as a setting value.
    pub fn ca(&self) -> String {
        self.ca_file.display().to_string()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How the proxy expects a connection to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS ClientHello straight away (Redis, AMQP, PostgreSQL `sslnegotiation=direct`).
    Tls,
    /// PostgreSQL's in-protocol negotiation: an `SSLRequest`, answered `S`, then TLS. A
    /// connection that opens with anything else (a plain startup) is dropped.
    PostgresSslRequest,
}

/// A TLS-terminating TCP proxy on `localhost:port`, forwarding what it decrypts to a plain
/// local service. It never forwards a byte that did not arrive over TLS, and counts the
/// handshakes that completed.
pub struct TlsProxy {
    /// The port it listens on (127.0.0.1, and ::1 where that port is free too).
    pub port: u16,
    handshakes: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

/// `SSLRequest`: length 8, code 1234.5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

impl TlsProxy {
    /// Starts the proxy in front of `upstream`.
    pub async fn start(pki: &Pki, upstream: SocketAddr, opening: Opening) -> Self {
        let v4 = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding: {e}"));
        let port = v4.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"));
        // `localhost` may resolve to ::1 first: listen there too when the port is free.
        let v6 = TcpListener::bind(("::1", port)).await.ok();
        let handshakes = Arc::new(AtomicUsize::new(0));
        let acceptor = TlsAcceptor::from(pki.server.clone());
        let tasks = std::iter::once(v4)
            .chain(v6)
            .map(|listener| {
                let (acceptor, handshakes) = (acceptor.clone(), handshakes.clone());
                tokio::spawn(async move {
                    while let Ok((client, _)) = listener.accept().await {
                        let (acceptor, handshakes) = (acceptor.clone(), handshakes.clone());
                        tokio::spawn(serve(client, acceptor, upstream, opening, handshakes));
                    }
                })
            })
            .collect();
        Self { port, handshakes, tasks }
    }

    /// TLS handshakes that completed so far (each one then forwarded to the service).
    pub fn handshakes(&self) -> usize {
        self.handshakes.load(Ordering::SeqCst)
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve(
    mut client: TcpStream,
    acceptor: TlsAcceptor,
    upstream: SocketAddr,
    opening: Opening,
    handshakes: Arc<AtomicUsize>,
) {
    if opening == Opening::PostgresSslRequest {
        let mut first = [0u8; 8];
        if client.read_exact(&mut first).await.is_err() || first != SSL_REQUEST {
            return;
        }
        if client.write_all(b"S").await.is_err() {
            return;
        }
    }
    let Ok(mut tls) = acceptor.accept(client).await else { return };
    handshakes.fetch_add(1, Ordering::SeqCst);
    let Ok(mut service) = TcpStream::connect(upstream).await else { return };
    let _ = tokio::io::copy_bidirectional(&mut tls, &mut service).await;
}

/// Where a local service listens, from its URL (`host:port`, `default_port` if none).
pub fn address_of(url: &str, default_port: u16) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap_or_else(|e| panic!("parsing a service URL: {e}"));
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" { "127.0.0.1" } else { host };
    format!("{host}:{}", parsed.port().unwrap_or(default_port))
        .parse()
        .unwrap_or_else(|e| panic!("{host}: {e} (the TLS tests need an IP address or localhost)"))
}

/// A PostgreSQL cluster of its own (`initdb` into a temporary directory), listening on
/// 127.0.0.1 with `ssl=on` and the [`Pki`]'s server certificate; stopped and deleted on drop.
/// Started as the `postgres` user when the tests run as root (initdb refuses root).
pub struct ThrowawayPostgres {
    /// Its port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

impl ThrowawayPostgres {
    /// initdb + `pg_ctl start`. Fails (panics) when the PostgreSQL server binaries are
    /// missing: set `PG_BINDIR` where they are not under `/usr/lib/postgresql/*/bin`.
    pub async fn start(pki: &Pki) -> Self {
        let bin = server_bindir();
        let as_postgres = is_root().await;
        let dir = std::env::temp_dir().join(unique("fraudsense-pg"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        // The key must belong to the server's user and be private to it.
        let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
        copy(&pki.cert_file, &cert);
        copy(&pki.key_file, &key);
        set_mode(&key, 0o600);
        set_mode(&dir, 0o700);
        let port = free_port().await;
        let pg = Self { port, bin, dir, as_postgres };
        if as_postgres {
            pg.run("chown", &["-R", "postgres:postgres", &pg.path(&pg.dir)], false).await;
        }
        let data = pg.path(&pg.dir.join("data"));
        pg.run("initdb", &["-D", &data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"], true)
            .await;
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c ssl=on -c ssl_cert_file={} -c ssl_key_file={} \
             -c fsync=off -c max_connections=10 -c shared_buffers=16MB",
            pg.path(&pg.dir),
            pg.path(&cert),
            pg.path(&key),
        );
        let log = pg.path(&pg.dir.join("server.log"));
        pg.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "30", "-o", &options, "start"], true).await;
        pg
    }

    fn path(&self, p: &Path) -> String {
        p.display().to_string()
    }

    /// Runs a PostgreSQL binary (`server_binary`) or a system command, as `postgres` when
    /// needed, within [`STEP`]; panics with its output when it fails.
    async fn run(&self, program: &str, args: &[&str], server_binary: bool) {
        let program =
            if server_binary { self.bin.join(program).display().to_string() } else { program.to_owned() };
        let mut command = if self.as_postgres && server_binary {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", &program]);
            c
        } else {
            tokio::process::Command::new(&program)
        };
        command.args(args).kill_on_drop(true);
        let output = tokio::time::timeout(STEP * 2, command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} did not finish in {:?}", STEP * 2))
            .unwrap_or_else(|e| panic!("running {program}: {e}"));
        if !output.status.success() {
            let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
            panic!(
                "{program} {args:?} failed ({}):\n{}\n{}\nserver log:\n{log}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let pg_ctl = self.bin.join("pg_ctl").display().to_string();
        let data = self.dir.join("data").display().to_string();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "-t", "20", "stop"];
        let _ = if self.as_postgres {
            std::process::Command::new("runuser").args(["-u", "postgres", "--", &pg_ctl]).args(args).output()
        } else {
            std::process::Command::new(&pg_ctl).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PG_BINDIR`, or the newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn server_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin: \
             install postgresql or set PG_BINDIR"
        )
    })
}

async fn is_root() -> bool {
    let id = tokio::process::Command::new("id").arg("-u").output().await;
    id.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("binding: {e}"));
    listener.local_addr().map(|a| a.port()).unwrap_or_else(|e| panic!("{e}"))
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

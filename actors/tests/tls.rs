//! TLS to Redis, RabbitMQ and PostgreSQL, for real: an in-process TLS-terminating proxy
//! (tokio-rustls, a CA made by rcgen for the test) in front of the local plain services, and a
//! throwaway PostgreSQL cluster with `ssl=on`. Each test connects the way the binaries do
//! (settings from variables, then `connect_redis`, `topology::connect_amqp`, `store::connect`),
//! does a round trip, and shows that without the CA the connection fails instead of going on
//! in plain text.

#[path = "tls/support.rs"]
mod support;

use fraudsense_actors::{Settings, settings::DatabaseSettings, store, tls::CaFile, topology::connect_amqp};
use fred::interfaces::{ClientLike, KeysInterface};
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Confirmation,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use secrecy::{ExposeSecret, SecretString};
use support::{Opening, Pki, STEP, ThrowawayPostgres, TlsProxy, address_of, unique};
use tokio::time::timeout;

/// Settings from the process environment with `vars` set on top.
fn settings_with(vars: &[(&str, String)]) -> Settings {
    Settings::from_lookup(|k| {
        vars.iter().find(|(name, _)| *name == k).map(|(_, v)| v.clone()).or_else(|| std::env::var(k).ok())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The local plain services, as configured for the other tests.
fn local() -> Settings {
    Settings::from_env().unwrap_or_else(|e| panic!("{e}"))
}

async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    timeout(STEP, future).await.unwrap_or_else(|_| panic!("{what} took longer than {STEP:?}"))
}

#[tokio::test]
async fn rediss_goes_through_tls_and_trusts_the_ca_file() {
    let pki = Pki::new();
    let upstream = address_of(local().redis.url.expose_secret(), 6379);
    let proxy = TlsProxy::start(&pki, upstream, Opening::Tls).await;
    let settings = settings_with(&[
        ("REDIS_URL", format!("rediss://localhost:{}", proxy.port)),
        ("REDIS_CA_FILE", pki.ca()),
    ]);

    let client = within("connecting", fraudsense_actors::connect_redis(&settings.redis))
        .await
        .unwrap_or_else(|e| panic!("connecting to Redis over TLS: {e}"));
    let key = format!("{}:k", unique("fstest:tls"));
    let round_trip = async {
        client.set::<(), _, _>(&key, "over tls", None, None, false).await?;
        let value: Option<String> = client.get(&key).await?;
        let deleted: i64 = client.del(&key).await?;
        Ok::<_, fred::error::Error>((value, deleted))
    };
    let result = within("SET/GET/DEL", round_trip).await;
    let _ = client.quit().await;
    assert_eq!(result.unwrap_or_else(|e| panic!("{e}")), (Some("over tls".to_owned()), 1));
    assert!(proxy.handshakes() >= 1, "no TLS handshake reached the proxy");
}

#[tokio::test]
async fn rediss_without_the_ca_file_fails_instead_of_going_plain() {
    let pki = Pki::new();
    let upstream = address_of(local().redis.url.expose_secret(), 6379);
    let proxy = TlsProxy::start(&pki, upstream, Opening::Tls).await;
    let settings = settings_with(&[("REDIS_URL", format!("rediss://localhost:{}", proxy.port))]);

    let connected = within("failing to connect", fraudsense_actors::connect_redis(&settings.redis)).await;
    let error =
        connected.err().map(|e| e.to_string()).unwrap_or_else(|| panic!("connected without trusting the CA"));
    assert!(error.to_lowercase().contains("certificate"), "not a certificate error: {error}");
    assert_eq!(proxy.handshakes(), 0);
}

#[tokio::test]
async fn amqps_goes_through_tls_publishes_with_a_confirm_and_consumes() {
    let pki = Pki::new();
    let upstream = address_of(local().amqp.url.expose_secret(), 5672);
    let proxy = TlsProxy::start(&pki, upstream, Opening::Tls).await;
    let settings = settings_with(&[
        ("AMQP_URL", format!("amqps://guest:guest@localhost:{}/%2f", proxy.port)),
        ("AMQP_CA_FILE", pki.ca()),
        ("RABBITMQ_MANAGEMENT_URL", "off".into()),
    ]);

    let connection = within("connecting", connect_amqp(&settings.amqp))
        .await
        .unwrap_or_else(|e| panic!("connecting to RabbitMQ over TLS: {e}"));
    let round_trip = async {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        let private =
            QueueDeclareOptions { exclusive: true, auto_delete: true, ..QueueDeclareOptions::default() };
        let queue = channel
            .queue_declare(unique("fstest.tls").as_str().into(), private, FieldTable::default())
            .await?;
        let name = queue.name().to_string();
        let confirm = channel
            .basic_publish(
                "".into(),
                name.as_str().into(),
                BasicPublishOptions::default(),
                b"over tls",
                BasicProperties::default(),
            )
            .await?
            .await?;
        let mut deliveries = channel
            .basic_consume(
                name.as_str().into(),
                "tls-test".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let delivery = deliveries.next().await.transpose()?;
        if let Some(d) = &delivery {
            d.ack(BasicAckOptions::default()).await?;
        }
        Ok::<_, lapin::Error>((matches!(confirm, Confirmation::Ack(_)), delivery.map(|d| d.data)))
    };
    let result = within("declare/publish/consume", round_trip).await;
    let _ = connection.close(200, "done".into()).await;
    assert_eq!(result.unwrap_or_else(|e| panic!("{e}")), (true, Some(b"over tls".to_vec())));
    assert!(proxy.handshakes() >= 1, "no TLS handshake reached the proxy");
}

#[tokio::test]
async fn amqps_without_the_ca_file_fails_instead_of_going_plain() {
    let pki = Pki::new();
    let upstream = address_of(local().amqp.url.expose_secret(), 5672);
    let proxy = TlsProxy::start(&pki, upstream, Opening::Tls).await;
    let settings = settings_with(&[
        ("AMQP_URL", format!("amqps://guest:guest@localhost:{}/%2f", proxy.port)),
        ("RABBITMQ_MANAGEMENT_URL", "off".into()),
    ]);

    let connected = within("failing to connect", connect_amqp(&settings.amqp)).await;
    let error =
        connected.err().map(|e| e.to_string()).unwrap_or_else(|| panic!("connected without trusting the CA"));
    assert!(error.to_lowercase().contains("certificate"), "not a certificate error: {error}");
    assert_eq!(proxy.handshakes(), 0);
}

/// A pool of one connection to `url` trusting `ca` (besides the system's CAs).
fn database(url: String, ca: Option<&Pki>) -> DatabaseSettings {
    let ca_file = ca.map(|p| CaFile::load(&p.ca_file).unwrap_or_else(|e| panic!("{e}")));
    DatabaseSettings { url: SecretString::from(url), pool_size: 1, ca_file }
}

/// An error and its causes, as one line.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// Whether the connection from `settings` answers a query, and if so whether the server
/// sees it as TLS (`pg_stat_ssl`); the error text otherwise.
async fn query(settings: &DatabaseSettings) -> Result<bool, String> {
    let pool = store::connect(settings).map_err(|e| chain(&e))?;
    let attempt = async {
        let client = pool.get().await.map_err(|e| chain(&e))?;
        let row = client
            .query_one(
                "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
                &[],
            )
            .await
            .map_err(|e| chain(&e))?;
        Ok(row.get::<_, bool>(0))
    };
    within("a PostgreSQL query", attempt).await
}

/// The local server's URL with `database` and `sslmode`, its host and port replaced when
/// `through` is set.
fn local_database_url(sslmode: &str, through: Option<(&str, u16)>) -> String {
    let mut url = url::Url::parse(local().database_url()).unwrap_or_else(|e| panic!("DATABASE_URL: {e}"));
    url.set_path("/postgres");
    url.set_query(Some(&format!("sslmode={sslmode}")));
    if let Some((host, port)) = through {
        let _ = url.set_host(Some(host));
        let _ = url.set_port(Some(port));
    }
    url.to_string()
}

#[tokio::test]
async fn postgres_sslmode_disable_still_connects_in_plain_text() {
    assert_eq!(query(&database(local_database_url("disable", None), None)).await, Ok(false));
}

#[tokio::test]
async fn postgres_sslmode_require_against_the_local_server_never_goes_plain() {
    // Depending on the machine the local server refuses TLS (ssl=off: "server does not support
    // TLS"), or offers a certificate we do not trust or that does not name the host (Debian's
    // snakeoil is for `localhost`, and this machine's system store trusts it through
    // /etc/ssl/certs). Whatever it does, sslmode=require must not end in plain text.
    match query(&database(local_database_url("require", None), None)).await {
        Ok(ssl) => assert!(ssl, "sslmode=require connected in plain text"),
        Err(error) => {
            let lower = error.to_lowercase();
            assert!(lower.contains("tls") || lower.contains("certificate"), "not a TLS error: {error}");
        }
    }
}

#[tokio::test]
async fn postgres_verify_full_negotiates_tls_in_protocol_through_a_proxy() {
    let pki = Pki::new();
    let upstream = address_of(local().database_url(), 5432);
    let proxy = TlsProxy::start(&pki, upstream, Opening::PostgresSslRequest).await;
    let url = |mode: &str, host: &str| local_database_url(mode, Some((host, proxy.port)));

    // SSLRequest, TLS with the test CA, then a real query on the local server behind it.
    assert_eq!(query(&database(url("verify-full", "localhost"), Some(&pki))).await.map(|_| ()), Ok(()));
    assert_eq!(query(&database(url("require", "localhost"), Some(&pki))).await.map(|_| ()), Ok(()));
    assert_eq!(proxy.handshakes(), 2);
    // The certificate names localhost only: verify-full to 127.0.0.1 fails, verify-ca passes.
    let wrong_name = query(&database(url("verify-full", "127.0.0.1"), Some(&pki))).await;
    assert!(wrong_name.as_ref().is_err_and(|e| e.contains("not valid for name")), "{wrong_name:?}");
    assert_eq!(query(&database(url("verify-ca", "127.0.0.1"), Some(&pki))).await.map(|_| ()), Ok(()));
    assert_eq!(proxy.handshakes(), 3);
    // Without the CA file: refused, and nothing reached the server.
    let untrusted = query(&database(url("verify-full", "localhost"), None)).await;
    assert!(untrusted.as_ref().is_err_and(|e| e.contains("certificate")), "{untrusted:?}");
    // sslmode=disable through the proxy: it opens with a plain startup, which the proxy drops.
    assert!(query(&database(url("disable", "localhost"), None)).await.is_err());
    assert_eq!(proxy.handshakes(), 3);
}

#[tokio::test]
async fn postgres_direct_tls_negotiation_works_through_a_plain_tls_proxy() {
    let pki = Pki::new();
    let upstream = address_of(local().database_url(), 5432);
    let proxy = TlsProxy::start(&pki, upstream, Opening::Tls).await;
    let url = format!(
        "{}&sslnegotiation=direct",
        local_database_url("verify-full", Some(("localhost", proxy.port)))
    );
    assert_eq!(query(&database(url, Some(&pki))).await.map(|_| ()), Ok(()));
    assert_eq!(proxy.handshakes(), 1);
}

#[tokio::test]
async fn postgres_with_ssl_on_serves_tls_to_verify_full_and_refuses_an_untrusted_server() {
    let pki = Pki::new();
    let server = ThrowawayPostgres::start(&pki).await;
    let url = |mode: &str| format!("postgres://postgres@localhost:{}/postgres?sslmode={mode}", server.port);

    // The server itself says the connection is TLS.
    assert_eq!(query(&database(url("verify-full"), Some(&pki))).await, Ok(true));
    assert_eq!(query(&database(url("require"), Some(&pki))).await, Ok(true));
    // The same server without the CA: refused rather than used unverified or in plain text.
    let untrusted = query(&database(url("require"), None)).await;
    assert!(untrusted.as_ref().is_err_and(|e| e.contains("certificate")), "{untrusted:?}");
    // And plain text only when asked for.
    assert_eq!(query(&database(url("disable"), None)).await, Ok(false));
}

#[test]
fn settings_refuse_what_would_not_be_tls() {
    let pki = Pki::new();
    let refused = |vars: &[(&str, String)]| {
        Settings::from_lookup(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
            .err()
            .map(|e| e.var)
    };
    // A CA file with a plain URL: the operator expects TLS that would not happen.
    assert_eq!(refused(&[("REDIS_CA_FILE", pki.ca())]), Some("REDIS_CA_FILE"));
    assert_eq!(refused(&[("AMQP_CA_FILE", pki.ca())]), Some("AMQP_CA_FILE"));
    assert_eq!(refused(&[("DATABASE_CA_FILE", pki.ca())]), Some("DATABASE_CA_FILE"));
    // sslmode=prefer may fall back to plain text.
    let prefer = "postgres://postgres@127.0.0.1/fraudsense?sslmode=prefer".to_owned();
    assert_eq!(refused(&[("DATABASE_URL", prefer)]), Some("DATABASE_URL"));
    // A CA file that cannot be read or is not PEM names its variable.
    let missing = pki.dir.join("missing.pem").display().to_string();
    let rediss = ("REDIS_URL", "rediss://localhost:6380".to_owned());
    assert_eq!(refused(&[rediss.clone(), ("REDIS_CA_FILE", missing)]), Some("REDIS_CA_FILE"));
    let not_pem = pki.key_file.display().to_string();
    let amqps = ("AMQP_URL", "amqps://guest:guest@localhost/%2f".to_owned());
    assert_eq!(refused(&[amqps.clone(), ("AMQP_CA_FILE", not_pem)]), Some("AMQP_CA_FILE"));
    // And the good case reads the certificate.
    let ok = Settings::from_lookup(|k| match k {
        "AMQP_URL" => Some(amqps.1.clone()),
        "AMQP_CA_FILE" => Some(pki.ca()),
        _ => None,
    });
    assert_eq!(ok.map(|s| s.amqp.ca_file.map(|c| c.certificates().len())).ok(), Some(Some(1)));
}

#[test]
fn every_tls_redis_scheme_gets_a_tls_connector_and_plain_ones_none() {
    let config = |url: &str| {
        let settings = settings_with(&[("REDIS_URL", url.to_owned())]);
        fraudsense_actors::redis_config(&settings.redis).unwrap_or_else(|e| panic!("{url}: {e}"))
    };
    for url in [
        "rediss://:pw-rediss@localhost:6380/1",
        "rediss-cluster://localhost:30001",
        "valkeys://localhost:6380",
    ] {
        let c = config(url);
        assert!(c.tls.is_some() && c.uses_tls(), "{url} would not use TLS");
    }
    let c = config("rediss://:pw-rediss@localhost:6380/1");
    assert_eq!((c.password.as_deref(), c.database), (Some("pw-rediss"), Some(1)));
    for url in ["redis://localhost:6379", "redis-cluster://localhost:30001"] {
        assert!(config(url).tls.is_none(), "{url} would use TLS");
    }
}

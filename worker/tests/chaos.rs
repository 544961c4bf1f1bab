//! SIGKILL of a real worker process in the middle of 10,000 transactions.
//!
//! Two `fraudsense-worker` processes share the shards; one is killed with SIGKILL halfway
//! through; afterwards every transaction that got a 202 must have exactly one score, and
//! every account's windows must show in-order, once-only processing. Prints the counts.

use std::{
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use fraudsense_actors::testing::{TestEnv, eventually};
use fraudsense_api::Application;
use secrecy::ExposeSecret;
use serde_json::json;

const ACCOUNTS: usize = 500;
const PER_ACCOUNT: usize = 20;
const SENDERS: usize = 25;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A worker process that cannot outlive the test, whatever happens to it.
struct Worker(Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_worker(env: &TestEnv) -> Worker {
    let s = &env.settings;
    Command::new(env!("CARGO_BIN_EXE_fraudsense-worker"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", s.database_url())
        .env("DATABASE_POOL_SIZE", "4")
        .env("REDIS_URL", s.redis.url.expose_secret())
        .env("REDIS_KEY_PREFIX", &s.redis.key_prefix)
        .env("AMQP_URL", s.amqp.url.expose_secret())
        .env("AMQP_PREFIX", &s.amqp.prefix)
        .env("FRAUDSENSE_WORKER_ADDR", format!("127.0.0.1:{}", free_port()))
        .env("BALANCE_INTERVAL_MS", "300")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Worker)
        .unwrap_or_else(|e| panic!("cannot start the worker binary: {e}"))
}

/// How many shards each live worker process is active on (sorted).
async fn owners(env: &TestEnv) -> Vec<usize> {
    let mut counts: Vec<usize> = env.shard_owners().await.unwrap_or_default().into_values().collect();
    counts.sort_unstable();
    counts
}

/// Waits until the shards are spread as `want` (sorted counts per live process).
async fn spread(env: &TestEnv, want: &[usize]) {
    let result = eventually(Duration::from_secs(60), &format!("shards spread as {want:?}"), || async {
        Ok((owners(env).await == want).then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#}; last seen {:?}", owners(env).await);
    }
}

fn body(account: usize, n: usize) -> serde_json::Value {
    json!({
        "transaction_id": format!("ch-{account}-{n}"),
        "account_id": format!("acct-ch-{account}"),
        "amount": format!("{}.{:02}", 10 + n, account % 100),
        "currency": "EUR",
        "timestamp": format!("2026-11-20T10:{n:02}:00Z"),
        "merchant_id": format!("m-{}", account % 37),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_of_a_worker_mid_stream_loses_and_doubles_nothing() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("{e:#}"));
    let app = Application::build(env.settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    let api = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop_api, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let mut victim = spawn_worker(&env);
    let survivor = spawn_worker(&env);
    let http = env.http_client();
    // Two processes really share the work: four shards each.
    spread(&env, &[4, 4]).await;

    let accepted = Arc::new(AtomicUsize::new(0));
    let posted = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for sender in 0..SENDERS {
        let (http, accepted, posted) = (http.clone(), accepted.clone(), posted.clone());
        senders.push(tokio::spawn(async move {
            // Each sender owns a set of accounts and sends each account's payments in order.
            for n in 0..PER_ACCOUNT {
                for account in (sender..ACCOUNTS).step_by(SENDERS) {
                    let r =
                        http.post(format!("http://{api}/transactions")).json(&body(account, n)).send().await;
                    posted.fetch_add(1, Ordering::Relaxed);
                    if r.is_ok_and(|r| r.status().as_u16() == 202) {
                        accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let total = ACCOUNTS * PER_ACCOUNT;
    eventually(Duration::from_secs(120), "half the traffic", || async {
        Ok((posted.load(Ordering::Relaxed) >= total / 2).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    victim.0.kill().unwrap_or_else(|e| panic!("SIGKILL failed: {e}"));
    let _ = victim.0.wait();
    // The survivor takes over every shard; a process that joins later takes its share.
    spread(&env, &[8]).await;
    let newcomer = spawn_worker(&env);
    spread(&env, &[4, 4]).await;
    for s in senders {
        let _ = s.await;
    }
    let accepted = accepted.load(Ordering::Relaxed);

    let pool = env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let count = async || -> anyhow::Result<i64> {
        let client = pool.get().await?;
        Ok(client
            .query_one("SELECT count(*) FROM scores WHERE transaction_id LIKE 'ch-%'", &[])
            .await?
            .get(0))
    };
    let _ = eventually(Duration::from_secs(180), "every accepted transaction scored", || async {
        Ok((count().await? >= accepted as i64).then_some(()))
    })
    .await;
    let scored = count().await.unwrap_or_default() as usize;
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    let out_of_order: i64 = client
        .query_one(
            "SELECT count(*) FROM (
                 SELECT (s.features->>'tx_count_7d')::int AS seen,
                        row_number() OVER (PARTITION BY t.account_id ORDER BY t.occurred_at) AS k
                 FROM transactions t JOIN scores s USING (transaction_id)
                 WHERE t.account_id LIKE 'acct-ch-%') w
             WHERE seen <> k",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(-1);
    println!(
        "sent {total}, accepted {accepted}, scored {scored}, duplicates {}, lost {}, out of order {out_of_order}",
        scored.saturating_sub(accepted),
        accepted.saturating_sub(scored)
    );

    // Graceful stop of the survivor (SIGTERM), then clean up.
    for mut worker in [survivor, newcomer] {
        let _ = Command::new("kill").arg("-TERM").arg(worker.0.id().to_string()).status();
        let _ = tokio::task::spawn_blocking(move || worker.0.wait()).await;
    }
    let _ = stop_api.send(());
    let _ = served.await;
    env.cleanup().await.unwrap_or_else(|e| panic!("{e:#}"));

    assert_eq!(accepted, total, "the api accepted everything");
    assert_eq!(scored, accepted, "every accepted transaction has exactly one score");
    assert_eq!(out_of_order, 0, "every account processed in order, once");
}

//! The load generator against an api and a worker node in-process, on real PostgreSQL,
//! Redis and RabbitMQ (an isolated database, broker names and key prefix). It checks that
//! the report's counts add up and agree with the database; it asserts no timing.

use fraudsense_actors::auth::Role;
use std::time::Duration;

use fraudsense_actors::testing::TestEnv;
use fraudsense_api::Application;
use fraudsense_worker::{
    Node,
    load::{self, ApiTarget, LoadConfig},
};
use tokio::sync::oneshot;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_generator_counts_add_up_against_the_pipeline() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    let app = Application::build(env.settings.clone()).await.unwrap_or_else(|e| panic!("api build: {e:#}"));
    let addr = app.local_addr().unwrap_or_else(|e| panic!("{e}"));
    let (stop_api, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(app.run_until(async {
        let _ = stopped.await;
    }));
    let node = Node::start(env.settings.clone()).await.unwrap_or_else(|e| panic!("worker start: {e:#}"));

    let api = ApiTarget::parse(&format!("http://{addr}")).unwrap_or_else(|e| panic!("{e}"));
    let run_id = format!("lt-{}", env.db_name);
    let config = LoadConfig {
        accounts: 1_000,
        merchants: 50,
        fraud_mix: 0.2,
        connections: 16,
        drain_timeout: Duration::from_secs(30),
        run_id: run_id.clone(),
        token: Some(secrecy::SecretString::from(env.token("load-test", &[Role::Ingest, Role::Analyst]))),
        ..LoadConfig::new(api, 50.0, Duration::from_secs(2))
    };
    let pool = env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let report = load::run(config, pool.clone()).await.unwrap_or_else(|e| panic!("load run: {e}"));
    println!("{}", report.table());

    // Every scheduled request is accounted for exactly once.
    let e = &report.errors;
    assert_eq!(report.scheduled, 100);
    assert_eq!(report.scheduled, report.accepted + e.total, "{report:#?}");
    assert_eq!(report.sent, report.accepted + e.total - e.not_sent, "{report:#?}");
    assert_eq!(
        e.total,
        e.not_sent + e.status_4xx + e.status_5xx + e.status_other + e.timeout + e.transport,
        "{e:?}"
    );
    assert!(report.accepted > 0 && report.sent_high_risk > 0, "{report:#?}");
    assert_eq!(report.latency.post_202.count, report.accepted);

    // After draining, every accepted transaction is decided, and the report agrees with
    // PostgreSQL about how many.
    let db = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    let pattern = format!("{run_id}-%");
    let count = |sql: &'static str| {
        let db = &db;
        let pattern = pattern.clone();
        async move {
            db.query_one(sql, &[&pattern])
                .await
                .map(|r| r.get::<_, i64>(0) as u64)
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let stored = count("SELECT count(*) FROM transactions WHERE transaction_id LIKE $1").await;
    let high =
        count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1 AND risk_label = 'HIGH'").await;
    let alerts = count("SELECT count(*) FROM alerts WHERE transaction_id LIKE $1").await;
    assert_eq!(report.decided, report.accepted, "{report:#?}");
    assert_eq!(report.backlog_after_drain, 0);
    assert_eq!(stored, report.decided);
    assert_eq!(report.latency.decision.count, report.decided);
    assert_eq!(report.decided_high, high);
    // Payments built to be HIGH risk are HIGH under the default rules.
    if e.total == 0 {
        assert!(report.decided_high >= report.sent_high_risk, "{report:#?}");
    }

    // Every HIGH decision raised one alert, and each arrived on the WebSocket once.
    assert_eq!(alerts, high);
    assert_eq!(report.alerts_received, high, "{report:#?}");
    assert_eq!(report.latency.alert.count, report.alerts_received);

    // The CPU section: the api and worker run inside this process here, so its own share
    // holds their work; PostgreSQL committed every decision.
    let cpu = report.cpu.as_ref().unwrap_or_else(|| panic!("no CPU section: {report:#?}"));
    let share = |name: &str| {
        cpu.processes.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no {name}: {cpu:#?}"))
    };
    assert!(share(load::cpu::SELF).cpu_secs > 0.0, "{cpu:#?}");
    assert!(share("PostgreSQL").cpu_secs > 0.0, "{cpu:#?}");
    let sum: f64 = cpu.processes.iter().map(|p| p.ms_per_tx).sum();
    assert!((sum - cpu.total_ms_per_tx).abs() < 1e-6, "{cpu:#?}");
    assert!(report.table().contains("CPU per decided transaction"), "{}", report.table());

    node.stop().await;
    let _ = stop_api.send(());
    let _ = serving.await;
    env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
}

//! The services' floor (`fraudsense-floor`) against the real RabbitMQ, PostgreSQL and Redis:
//! every transaction is confirmed, windowed, committed once and acked, the counts agree with
//! the rows it wrote, and nothing it created is left behind. It asserts no timing.

use std::time::Duration;

use fraudsense_actors::testing::TestEnv;
use fraudsense_worker::bench::{ceiling, floor};
use fred::interfaces::KeysInterface;
use lapin::options::QueueDeclareOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_decides_every_transaction_once_and_cleans_up() {
    decides_every_transaction_once_and_cleans_up(floor::QueueType::Quorum).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_floor_on_classic_queues_does_the_same() {
    decides_every_transaction_once_and_cleans_up(floor::QueueType::Classic).await;
}

async fn decides_every_transaction_once_and_cleans_up(queue_type: floor::QueueType) {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    let body = ceiling::sample_event(50, chrono::Utc::now()).unwrap_or_else(|e| panic!("{e:#}"));
    let config = floor::FloorConfig {
        rate: 40.0,
        duration: Duration::from_secs(1),
        accounts: 7,
        shards: 2,
        queue_type,
        body,
    };
    let report = floor::run(&env.settings, &config).await.unwrap_or_else(|e| panic!("floor run: {e:#}"));
    println!("{}", floor::table(std::slice::from_ref(&report)));

    assert_eq!(report.scheduled, 40, "{report:#?}");
    assert_eq!(report.queue_type, queue_type);
    assert_eq!((report.accepted, report.decided), (40, 40), "{report:#?}");
    assert_eq!(report.stored, (40, 40), "every commit landed once: {report:#?}");
    assert_eq!(report.left_in_queues, 0, "every delivery was acked: {report:#?}");
    assert_eq!(report.accepted_latency.count, 40);
    assert_eq!(report.decided_latency.count, 40);
    assert!((1..=40).contains(&report.commits), "{report:#?}");
    let cpu = report.cpu.as_ref().unwrap_or_else(|| panic!("no /proc here"));
    let names: Vec<&str> = cpu.processes.iter().map(|p| p.name.as_str()).collect();
    for service in ["RabbitMQ", "PostgreSQL", "Redis"] {
        assert!(names.contains(&service), "{names:?}");
    }
    assert!(report.services_ms_per_tx().is_some_and(|ms| ms >= 0.0));

    // Nothing the run created is left: schema, queues, keys.
    let objects = &report.objects;
    assert_eq!(objects.queues.len(), 2);
    let pool = env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let schemas: i64 = pool
        .get()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .query_one("SELECT count(*) FROM pg_namespace WHERE nspname = $1", &[&objects.schema])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .get(0);
    assert_eq!(schemas, 0, "schema {} left behind", objects.schema);
    let broker =
        fraudsense_actors::topology::connect_amqp(&env.settings.amqp).await.unwrap_or_else(|e| panic!("{e}"));
    for queue in &objects.queues {
        // A passive declare fails (and closes its channel) when the queue does not exist.
        let channel = broker.create_channel().await.unwrap_or_else(|e| panic!("{e}"));
        let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
        let found = channel.queue_declare(queue.as_str().into(), passive, Default::default()).await;
        assert!(found.is_err(), "queue {queue} left behind");
    }
    let _ = broker.close(200, "done".into()).await;
    let redis = fraudsense_actors::connect_redis(&env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let prefix = &objects.key_prefix;
    let left: i64 = redis
        .exists(vec![format!("{prefix}idem:0"), format!("{prefix}idem:39"), format!("{prefix}win:acct-0")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left, 0, "keys under {prefix} left behind");
    env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
}

#[tokio::test]
async fn a_rate_that_is_not_positive_is_refused_before_anything_is_created() {
    let env = TestEnv::new().await.unwrap_or_else(|e| panic!("test env: {e:#}"));
    let config = floor::FloorConfig {
        rate: 0.0,
        duration: Duration::from_secs(1),
        accounts: 7,
        shards: 2,
        queue_type: floor::QueueType::Quorum,
        body: vec![],
    };
    let refused = floor::run(&env.settings, &config).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("must be positive")));
    env.cleanup().await.unwrap_or_else(|e| panic!("cleanup: {e:#}"));
}

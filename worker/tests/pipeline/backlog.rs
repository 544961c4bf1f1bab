use std::time::Duration;

use fraudsense_actors::testing::eventually;

use crate::helpers::{spawn_api_only, transaction};

/// Long enough for the management API's statistics to refresh (every 5 s by default) a
/// few times over.
const BACKLOG_DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_worker_reports_the_backlog_it_cannot_commit_per_shard_and_its_drain() {
    const N: usize = 12;
    let mut p = spawn_api_only().await;
    let (proxy, mut settings) = p.env.postgres_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    let shards = usize::from(settings.amqp.shards);
    match settings.amqp.balance.as_mut() {
        Some(balance) => balance.every = Duration::from_millis(200),
        None => panic!("the depth gauges need the management API (RABBITMQ_MANAGEMENT_URL)"),
    }
    p.start_worker_with(settings).await;
    let depth = || p.worker_metric("worker_shard_queue_depth");

    // The worker loses PostgreSQL, then N transactions arrive: it receives them but cannot
    // commit, so none is acked and every one of them stays on the broker, ready or unacked.
    proxy.down();
    for i in 0..N {
        let tx = transaction(&format!("bl-{i}"), &format!("acct-bl-{i}"), "12", "2026-11-20T09:00:00Z");
        assert_eq!(p.post(&tx).await, 202);
    }
    // The shard depths add up to exactly that backlog (nothing else feeds this test's queues).
    let seen = eventually(BACKLOG_DEADLINE, &format!("the shard depths to add up to {N}"), || async {
        let total = depth().await;
        Ok((total == N as f64).then_some(total))
    })
    .await;
    if let Err(e) = seen {
        panic!("{e:#} (last: {})", depth().await);
    }
    // One series per shard, and the other queues are reported (empty here).
    let worker = p.node.as_ref().map(|n| n.addr()).unwrap_or_else(|| panic!("no worker"));
    let text = p.http.get(format!("http://{worker}/metrics")).send().await.unwrap_or_else(|e| panic!("{e}"));
    let text = text.text().await.unwrap_or_default();
    let series = text.lines().filter(|l| l.starts_with("worker_shard_queue_depth{shard=")).count();
    assert_eq!(series, shards, "{text}");
    assert!(text.lines().any(|l| l == "worker_dead_letter_queue_depth 0"), "{text}");
    assert!(text.lines().any(|l| l == "worker_retry_queue_depth 0"), "{text}");

    // PostgreSQL is back: the backlog is committed, acked, and the gauges follow it down.
    proxy.up();
    for i in 0..N {
        p.scored(&format!("bl-{i}")).await;
    }
    let drained = eventually(BACKLOG_DEADLINE, "the shard depths to drop to 0", || async {
        Ok((depth().await == 0.0).then_some(()))
    })
    .await;
    if let Err(e) = drained {
        panic!("{e:#} (last: {})", depth().await);
    }
    p.teardown().await;
}

#[tokio::test]
async fn a_backlog_commits_in_batches_of_what_is_queued_without_a_batch_wait() {
    const N: usize = 64;
    let mut p = spawn_api_only().await;
    // The transactions wait on the broker until a worker starts; then they reach the alert
    // actor faster than it commits, and each commit takes whatever has queued meanwhile.
    for i in 0..N {
        let tx = transaction(&format!("gc-{i}"), &format!("acct-gc-{i}"), "12", "2026-11-20T09:00:00Z");
        assert_eq!(p.post(&tx).await, 202);
    }
    let mut settings = p.env.settings.clone();
    settings.commit.batch_wait = Duration::ZERO;
    p.start_worker_with(settings).await;
    for i in 0..N {
        p.scored(&format!("gc-{i}")).await;
    }
    let committed = p.worker_metric("commit_batch_size_sum").await;
    let commits = p.worker_metric("commit_batch_size_count").await;
    assert_eq!(committed, N as f64, "every decision committed once");
    // One commit per decision would be N; batching takes far fewer.
    assert!(commits < (N / 2) as f64, "{commits} commits for {N} decisions");
    p.teardown().await;
}

use std::time::Duration;

use fraudsense_actors::testing::eventually;

use crate::helpers::{DEADLINE, spawn_api_only, transaction};

#[tokio::test]
async fn idle_account_actors_are_evicted_and_come_back_on_demand() {
    let mut p = spawn_api_only().await;
    let mut settings = p.env.settings.clone();
    settings.accounts.idle = Duration::from_millis(300);
    settings.accounts.park = Duration::from_secs(8);
    p.start_worker_with(settings).await;
    for i in 0..5 {
        assert_eq!(
            p.post(&transaction(
                &format!("idle-{i}"),
                &format!("acct-idle-{i}"),
                "3",
                "2026-11-20T09:00:00Z"
            ))
            .await,
            202
        );
    }
    for i in 0..5 {
        p.scored(&format!("idle-{i}")).await;
    }
    eventually(DEADLINE, "idle actors to be evicted", || async {
        Ok((p.worker_metric("worker_account_actors").await == 0.0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(p.worker_metric("account_actor_evictions_total").await >= 5.0);

    // Their windows were parked, so a new actor picks up where the old one left off without
    // reading the whole window back.
    eventually(DEADLINE, "the windows parked", || async {
        Ok((p.worker_metric("worker_parked_windows").await == 5.0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(p.post(&transaction("idle-5", "acct-idle-0", "3", "2026-11-20T09:01:00Z")).await, 202);
    let view = p.scored("idle-5").await;
    assert_eq!(view["score"]["features"]["tx_count_1h"], 2);
    assert_eq!(p.worker_metric("account_window_reuses_total").await, 1.0);

    // A parked copy that went stale (another node wrote to the account meanwhile) is caught by
    // Redis' version check: the features include the other node's payment.
    let redis =
        fraudsense_actors::connect_redis(&p.env.settings.redis).await.unwrap_or_else(|e| panic!("{e}"));
    let other_node = fraudsense_actors::features::WindowStore::new(
        redis,
        &p.env.settings.redis.key_prefix,
        &p.env.settings.scoring,
    );
    let elsewhere = fraudsense_actors::Transaction::parse(
        &transaction("idle-other", "acct-idle-1", "7", "2026-11-20T09:02:00Z"),
        chrono::Utc::now(),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    other_node.observe(&elsewhere).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.post(&transaction("idle-6", "acct-idle-1", "3", "2026-11-20T09:03:00Z")).await, 202);
    let view = p.scored("idle-6").await;
    assert_eq!(view["score"]["features"]["tx_count_1h"], 3, "idle-1, idle-other and idle-6");
    assert_eq!(view["score"]["features"]["amount_sum_1h"], 13.0);
    assert_eq!(p.worker_metric("account_window_reuses_total").await, 2.0);

    // Parked windows are dropped after WINDOW_PARK_SECS (Redis keeps the durable copy).
    eventually(DEADLINE, "parked windows to expire", || async {
        Ok((p.worker_metric("worker_parked_windows").await == 0.0).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    p.teardown().await;
}

#[tokio::test]
async fn the_number_of_account_actors_is_capped() {
    let mut p = spawn_api_only().await;
    let mut settings = p.env.settings.clone();
    settings.accounts.max = 3;
    p.start_worker_with(settings).await;
    for i in 0..12 {
        let body = transaction(&format!("cap-{i}"), &format!("acct-cap-{i}"), "3", "2026-11-20T09:00:00Z");
        assert_eq!(p.post(&body).await, 202);
    }
    for i in 0..12 {
        p.scored(&format!("cap-{i}")).await;
    }
    let live = p.worker_metric("worker_account_actors").await;
    assert!(live <= 3.0, "{live} account actors alive with a cap of 3");
    assert!(p.worker_metric("account_actor_evictions_total").await >= 9.0);
    p.teardown().await;
}

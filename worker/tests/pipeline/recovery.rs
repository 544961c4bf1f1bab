use crate::helpers::{spawn_api_only, transaction};

#[tokio::test]
async fn a_lost_broker_connection_restarts_the_pipeline_and_loses_nothing() {
    let mut p = spawn_api_only().await;
    let (proxy, settings) = p.env.amqp_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    p.start_worker_with(settings).await;

    assert_eq!(p.post(&transaction("rec-1", "acct-r", "10", "2026-11-20T09:00:00Z")).await, 202);
    p.scored("rec-1").await;

    // The worker's broker link stalls with a delivery in flight, then dies.
    proxy.stall();
    assert_eq!(p.post(&transaction("rec-2", "acct-r", "11", "2026-11-20T09:01:00Z")).await, 202);
    proxy.cut_connections();
    proxy.resume();

    // The supervisor restarts the pipeline on a new connection; rec-2 comes back from the
    // queue and is scored exactly once, and new traffic flows again.
    let view = p.scored("rec-2").await;
    assert_eq!(view["score"]["features"]["tx_count_1h"], 2);
    assert_eq!(p.post(&transaction("rec-3", "acct-r", "12", "2026-11-20T09:02:00Z")).await, 202);
    p.scored("rec-3").await;
    for id in ["rec-1", "rec-2", "rec-3"] {
        assert_eq!(p.count("SELECT count(*) FROM scores WHERE transaction_id = $1", id).await, 1);
    }
    p.teardown().await;
}

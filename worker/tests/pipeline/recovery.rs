use crate::helpers::{DEADLINE, spawn_api_only, transaction};

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

    // Now under traffic: 200 transactions, the connection cut twice along the way.
    let mut accepted = 3;
    for i in 0..200 {
        if i == 60 || i == 140 {
            proxy.cut_connections();
        }
        let body =
            transaction(&format!("rec-t{i}"), &format!("acct-rt-{}", i % 20), "5", "2026-11-20T09:03:00Z");
        accepted += usize::from(p.post(&body).await == 202);
    }
    for i in 0..200 {
        p.scored(&format!("rec-t{i}")).await;
    }
    let scored = p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "rec-%").await as usize;
    let duplicates = p.worker_metric("duplicate_deliveries_total").await;
    println!(
        "broker cut: sent 203, accepted {accepted}, scored {scored}, duplicate deliveries absorbed {duplicates}, lost {}",
        accepted - scored
    );
    assert_eq!((accepted, scored), (203, 203), "every accepted transaction has exactly one score row");
    p.teardown().await;
}

#[tokio::test]
async fn while_redis_is_down_decisions_are_degraded_not_lost_and_recover_after() {
    let mut p = spawn_api_only().await;
    let (proxy, settings) = p.env.redis_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    p.start_worker_with(settings).await;

    assert_eq!(p.post(&transaction("rd-1", "acct-rd", "10", "2026-11-20T09:00:00Z")).await, 202);
    assert_eq!(p.scored("rd-1").await["score"]["degraded"], false);

    proxy.down();
    assert_eq!(p.post(&transaction("rd-2", "acct-rd", "20000", "2026-11-20T09:01:00Z")).await, 202);
    let view = p.scored("rd-2").await;
    assert_eq!(view["score"]["degraded"], true, "{view}");
    assert_eq!(view["score"]["risk_label"], "HIGH", "transaction-level rules still decide");
    let codes: Vec<&str> = view["score"]["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(codes.contains(&"FEATURES_UNAVAILABLE"), "{codes:?}");
    assert_eq!(view["alerts"].as_array().map(Vec::len), Some(1), "alerts still fire");

    proxy.up();
    let mut n = 2;
    let recovered =
        fraudsense_actors::testing::eventually(crate::helpers::DEADLINE, "normal scoring again", || {
            n += 1;
            let id = format!("rd-{n}");
            let p = &p;
            async move {
                assert_eq!(p.post(&transaction(&id, "acct-rd", "5", "2026-11-20T09:02:00Z")).await, 202);
                Ok((p.scored(&id).await["score"]["degraded"] == false).then_some(id))
            }
        })
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    for i in 1..=n {
        let id = format!("rd-{i}");
        assert_eq!(p.count("SELECT count(*) FROM scores WHERE transaction_id = $1", &id).await, 1, "{id}");
    }
    let degraded =
        p.count("SELECT count(*) FROM scores WHERE degraded AND transaction_id LIKE $1", "rd-%").await;
    println!("redis down: sent {n}, accepted {n}, scored {n}, of which degraded {degraded}, lost 0");
    println!("recovered with {recovered} after {} transactions", n - 2);
    p.teardown().await;
}

#[tokio::test]
async fn a_postgres_outage_holds_commits_back_and_loses_nothing() {
    let mut p = spawn_api_only().await;
    let (proxy, settings) = p.env.postgres_through_proxy().await.unwrap_or_else(|e| panic!("{e:#}"));
    p.start_worker_with(settings).await;
    let tx = |i: usize| {
        transaction(&format!("pg-{i}"), &format!("acct-pg-{}", i % 7), "12", "2026-11-20T09:00:00Z")
    };

    for i in 0..10 {
        assert_eq!(p.post(&tx(i)).await, 202);
    }
    p.scored("pg-9").await;

    // The worker loses PostgreSQL while 20 more arrive (the api still reaches it directly).
    proxy.down();
    for i in 10..30 {
        assert_eq!(p.post(&tx(i)).await, 202);
    }
    // The worker really hit the outage (its commits fail and are retried)...
    let worker = p.node.as_ref().map(|n| n.addr()).unwrap_or_else(|| panic!("no worker"));
    let http = p.http.clone();
    fraudsense_actors::testing::eventually(crate::helpers::DEADLINE, "failed commits", || {
        let http = http.clone();
        async move {
            let text = http.get(format!("http://{worker}/metrics")).send().await?.text().await?;
            Ok(text
                .lines()
                .any(|l| l.starts_with("commit_failures_total ") && !l.ends_with(" 0"))
                .then_some(()))
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    // ...and nothing of the outage was committed.
    let (status, body) = p.get("pg-29").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("queued")));

    proxy.up();
    for i in 10..30 {
        p.scored(&format!("pg-{i}")).await;
    }
    let scored = p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "pg-%").await;
    let dead = p.env.ready_messages(&p.env.topology().dead_letter_queue).await.unwrap_or_default();
    println!("sent 30, accepted 30, scored {scored}, dead-lettered {dead}");
    assert_eq!(scored, 30, "every accepted transaction has exactly one score row");
    assert_eq!(dead, 0, "an outage must not push work into the dead-letter queue");
    p.teardown().await;
}

#[tokio::test]
async fn a_graceful_stop_mid_stream_commits_and_acks_what_it_started_and_returns_the_rest() {
    let mut p = spawn_api_only().await;
    const N: usize = 300;
    let tx = |i: usize| {
        transaction(&format!("gs-{i}"), &format!("acct-gs-{}", i % 50), "9", "2026-11-20T09:00:00Z")
    };
    for i in 0..N {
        assert_eq!(p.post(&tx(i)).await, 202);
    }
    // A backlog, a worker taking 20 at a time, and a SIGTERM as soon as it got going.
    let mut settings = p.env.settings.clone();
    settings.amqp.prefetch = 20;
    p.start_worker_with(settings).await;
    fraudsense_actors::testing::eventually(crate::helpers::DEADLINE, "the first commits", || async {
        Ok((p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "gs-%").await > 0)
            .then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    p.stop_worker().await;

    let scored = p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "gs-%").await;
    let waiting = i64::from(p.env.queued_transactions().await.unwrap_or_default());
    println!("graceful stop: sent {N}, committed {scored}, returned to the queue {waiting}");
    // Committed work was acked (else it would also be back in the queue), the rest is waiting:
    assert_eq!(scored + waiting, N as i64, "nothing lost, nothing committed-but-unacked");
    assert!(waiting > 0, "the stop came mid-stream");

    p.start_worker().await;
    for i in 0..N {
        p.scored(&format!("gs-{i}")).await;
    }
    assert_eq!(p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "gs-%").await, N as i64);
    p.teardown().await;
}

#[tokio::test]
async fn a_row_the_database_refuses_goes_round_the_retry_path_to_the_dlq_and_blocks_nothing() {
    let mut p = crate::helpers::spawn_api_only_with(|s| {
        s.amqp.retry_delay_ms = 200;
        s.amqp.retry_max = 2;
    })
    .await;
    // The database will refuse this one transaction's score, every time.
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    client
        .batch_execute(
            "CREATE FUNCTION refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN IF NEW.transaction_id = 'refused-1' THEN RAISE EXCEPTION 'refused by the test'; END IF;
             RETURN NEW; END $$;
             CREATE TRIGGER refuse_one BEFORE INSERT ON scores FOR EACH ROW EXECUTE FUNCTION refuse_one();",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    p.start_worker().await;

    assert_eq!(p.post(&transaction("refused-1", "acct-ref", "5", "2026-11-20T09:00:00Z")).await, 202);
    for i in 0..20 {
        let body =
            transaction(&format!("ref-ok-{i}"), &format!("acct-ref-{}", i % 3), "5", "2026-11-20T09:01:00Z");
        assert_eq!(p.post(&body).await, 202);
    }
    // Everything else goes through, including the same account's later payment.
    assert_eq!(p.post(&transaction("refused-2", "acct-ref", "5", "2026-11-20T09:02:00Z")).await, 202);
    for i in 0..20 {
        p.scored(&format!("ref-ok-{i}")).await;
    }
    p.scored("refused-2").await;
    // The refused one is tried twice more, 200 ms apart, then dead-lettered.
    let dlq = p.env.topology().dead_letter_queue;
    fraudsense_actors::testing::eventually(DEADLINE, "the refused one in the dead-letter queue", || async {
        Ok((p.env.ready_messages(&dlq).await? == 1).then_some(()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(p.worker_metric("delayed_retries_total").await, 2.0);
    assert_eq!(p.count("SELECT count(*) FROM scores WHERE transaction_id = $1", "refused-1").await, 0);

    // Once the cause is fixed, an operator replays it.
    client.batch_execute("DROP TRIGGER refuse_one ON scores").await.unwrap_or_else(|e| panic!("{e}"));
    let letters = fraudsense_worker::dlq::list(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(letters.first().and_then(|l| l.message_id.as_deref()), Some("refused-1"));
    let replayed =
        fraudsense_worker::dlq::replay(&p.env.settings, 10).await.unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(replayed, 1);
    p.scored("refused-1").await;
    p.teardown().await;
}

use std::{collections::BTreeMap, time::Duration};

use fraudsense_actors::testing::eventually;
use fraudsense_worker::Node;

use crate::helpers::{Pipeline, spawn_api_only, transaction};

/// Active shards per node of this test, from the management API.
async fn owners(p: &Pipeline) -> BTreeMap<String, usize> {
    p.env.shard_owners().await.unwrap_or_default()
}

async fn balanced(p: &Pipeline, nodes: &[&str], per_node: &[usize]) {
    let want: BTreeMap<String, usize> =
        nodes.iter().map(|n| (*n).to_owned()).zip(per_node.iter().copied()).collect();
    let result = eventually(Duration::from_secs(30), &format!("shards spread as {want:?}"), || async {
        let got = owners(p).await;
        let mut counts: Vec<usize> = got.values().copied().collect();
        counts.sort_unstable();
        let mut expected: Vec<usize> = per_node.to_vec();
        expected.sort_unstable();
        Ok((got.keys().all(|k| want.contains_key(k)) && counts == expected).then_some(()))
    })
    .await;
    if let Err(e) = result {
        panic!("{e:#} (last: {:?})", owners(p).await);
    }
}

/// The k-th transaction of an account (by event time) must have seen exactly k in its 7-day
/// window: true only if every account was processed in order, once, by one owner at a time.
async fn check_order(p: &Pipeline, accounts: usize, per_account: usize) {
    let pool = p.env.pool().unwrap_or_else(|e| panic!("{e:#}"));
    let client = pool.get().await.unwrap_or_else(|e| panic!("{e}"));
    let rows = client
        .query(
            "SELECT t.account_id, (s.features->>'tx_count_7d')::int,
                    row_number() OVER (PARTITION BY t.account_id ORDER BY t.occurred_at)::int
             FROM transactions t JOIN scores s USING (transaction_id)
             WHERE t.account_id LIKE 'acct-cl-%'",
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), accounts * per_account);
    for row in rows {
        let (account, seen, k): (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
        assert_eq!(
            seen, k,
            "{account}: transaction #{k} saw {seen} in its window (out of order or double counted)"
        );
    }
}

#[tokio::test]
async fn nodes_share_the_shards_survive_a_crash_and_count_every_transaction_once() {
    const ACCOUNTS: usize = 60;
    let mut p = spawn_api_only().await;
    let mut settings = p.env.settings.clone();
    if let Some(b) = settings.amqp.balance.as_mut() {
        b.every = Duration::from_millis(200);
    }
    let a = Node::start(settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    let b = Node::start(settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    // (b) two nodes really share: four shards each, not one active on all eight.
    balanced(&p, &[a.node_id(), b.node_id()], &[4, 4]).await;

    let tx = |round: usize, account: usize| {
        transaction(
            &format!("cl-{round}-{account}"),
            &format!("acct-cl-{account}"),
            "7",
            &format!("2026-11-20T09:{:02}:00Z", round),
        )
    };
    let mut sent = 0;
    let mut accepted = 0;
    for round in 0..3 {
        for account in 0..ACCOUNTS {
            sent += 1;
            accepted += usize::from(p.post(&tx(round, account)).await == 202);
        }
    }
    // (c) one node dies without warning (its channel just closes) in the middle of traffic...
    a.kill().await;
    for round in 3..5 {
        for account in 0..ACCOUNTS {
            sent += 1;
            accepted += usize::from(p.post(&tx(round, account)).await == 202);
        }
    }
    // ... the survivor takes every shard, and a node that joins later takes its share.
    balanced(&p, &[b.node_id()], &[8]).await;
    let c = Node::start(settings.clone()).await.unwrap_or_else(|e| panic!("{e:#}"));
    balanced(&p, &[b.node_id(), c.node_id()], &[4, 4]).await;
    for round in 5..6 {
        for account in 0..ACCOUNTS {
            sent += 1;
            accepted += usize::from(p.post(&tx(round, account)).await == 202);
        }
    }
    for round in 0..6 {
        for account in 0..ACCOUNTS {
            p.scored(&format!("cl-{round}-{account}")).await;
        }
    }
    let scored = p.count("SELECT count(*) FROM scores WHERE transaction_id LIKE $1", "cl-%").await as usize;
    p.node = Some(b);
    let duplicates = p.worker_metric("duplicate_deliveries_total").await;
    println!(
        "sent {sent}, accepted {accepted}, scored {scored}, duplicate deliveries absorbed {duplicates}, lost {}",
        accepted - scored
    );
    assert_eq!((accepted, scored), (sent, sent));
    // (a) one owner per account at a time, in order: every window count is exact.
    check_order(&p, ACCOUNTS, 6).await;
    c.stop().await;
    p.teardown().await;
}

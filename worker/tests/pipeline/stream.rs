//! `WS /alerts/stream`: every client gets every alert once, and `since` replays what it missed.

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use fraudsense_actors::auth::Role;

use crate::helpers::{DEADLINE, Pipeline, spawn_pipeline, transaction, ws_request};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(p: &Pipeline, query: &str) -> Socket {
    let url = format!("ws://{}/alerts/stream{query}", p.api);
    let token = p.env.token("stream-test", &[Role::Analyst]);
    connect_async(ws_request(&url, &token)).await.unwrap_or_else(|e| panic!("{e}")).0
}

/// The next JSON message (answering pings on the way).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .unwrap_or_else(|_| panic!("nothing on the stream within {DEADLINE:?}"))
            .unwrap_or_else(|| panic!("stream closed"))
            .unwrap_or_else(|e| panic!("{e}"));
        match message {
            Message::Text(text) => return serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}")),
            Message::Ping(data) => socket.send(Message::Pong(data)).await.unwrap_or_else(|e| panic!("{e}")),
            _ => {}
        }
    }
}

async fn next_alert(socket: &mut Socket) -> Value {
    let m = next(socket).await;
    assert_eq!(m["type"], "alert", "{m}");
    m["alert"].clone()
}

async fn replayed(socket: &mut Socket) -> i64 {
    let m = next(socket).await;
    assert_eq!(m["type"], "replayed", "{m}");
    m["last_alert_id"].as_i64().unwrap_or(-1)
}

async fn high(p: &Pipeline, id: &str, account: &str) {
    assert_eq!(p.post(&transaction(id, account, "30000", "2026-11-20T09:00:00Z")).await, 202);
}

#[tokio::test]
async fn every_client_gets_every_alert_exactly_once() {
    let p = spawn_pipeline().await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        let mut socket = connect(&p, "").await;
        assert_eq!(replayed(&mut socket).await, 0, "nothing to replay yet");
        clients.push(socket);
    }
    for i in 0..3 {
        high(&p, &format!("ws-{i}"), &format!("acct-ws-{i}")).await;
    }
    let all = futures_util::future::join_all(clients.iter_mut().map(|socket| async move {
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(next_alert(socket).await["transaction_id"].as_str().unwrap_or_default().to_owned());
        }
        ids.sort();
        ids
    }))
    .await;
    for ids in &all {
        assert_eq!(ids, &["ws-0", "ws-1", "ws-2"]);
    }
    // No duplicate follows (live and catch-up both saw them): the next message is the next alert.
    high(&p, "ws-last", "acct-ws-last").await;
    for socket in &mut clients {
        assert_eq!(next_alert(socket).await["transaction_id"], "ws-last");
    }
    p.teardown().await;
}

#[tokio::test]
async fn since_replays_what_a_client_missed_and_filters_apply() {
    let p = spawn_pipeline().await;
    let mut watcher = connect(&p, "").await;
    replayed(&mut watcher).await;
    high(&p, "miss-1", "acct-m1").await;
    let first = next_alert(&mut watcher).await["alert_id"].as_i64().unwrap_or_default();
    high(&p, "miss-2", "acct-m2").await;
    high(&p, "miss-3", "acct-m1").await;
    next_alert(&mut watcher).await;
    next_alert(&mut watcher).await;
    // A client that saw only the first comes back with since = its id.
    let mut back = connect(&p, &format!("?since={first}")).await;
    let replay: Vec<Value> = vec![next_alert(&mut back).await, next_alert(&mut back).await];
    let ids: Vec<&str> = replay.iter().filter_map(|a| a["transaction_id"].as_str()).collect();
    assert_eq!(ids, ["miss-2", "miss-3"], "oldest first");
    assert!(replayed(&mut back).await > first);
    // Only one account's alerts.
    let mut one = connect(&p, "?account_id=acct-m1").await;
    let a = next_alert(&mut one).await;
    let b = next_alert(&mut one).await;
    assert_eq!(
        (a["transaction_id"].as_str(), b["transaction_id"].as_str()),
        (Some("miss-1"), Some("miss-3"))
    );
    replayed(&mut one).await;
    // A bad filter is refused before the upgrade.
    let url = format!("ws://{}/alerts/stream?min_risk=SEVERE", p.api);
    let refused = connect_async(ws_request(&url, &p.env.token("stream-test", &[Role::Analyst]))).await;
    assert!(refused.is_err());
    p.teardown().await;
}

#[tokio::test]
async fn workflow_changes_reach_every_client_and_a_stopping_api_closes_its_streams() {
    let mut p = spawn_pipeline().await;
    let mut everyone = connect(&p, "").await;
    let mut one_account = connect(&p, "?account_id=acct-upd-2").await;
    replayed(&mut everyone).await;
    replayed(&mut one_account).await;
    high(&p, "upd-1", "acct-upd-1").await;
    let id = next_alert(&mut everyone).await["alert_id"].as_i64().unwrap_or_default();

    let ack = p
        .http
        .post(format!("http://{}/alerts/{id}/ack", p.api))
        .bearer_auth(p.env.token("alice", &[Role::Analyst]))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ack.status().as_u16(), 200);
    let update = next(&mut everyone).await;
    assert_eq!(update["type"], "update", "{update}");
    assert_eq!(update["alert"]["alert_id"], id);
    assert_eq!(update["alert"]["status"], "acknowledged");
    assert_eq!(update["alert"]["acknowledged_by"], "alice");

    // The filtered client saw neither the alert nor its update: its next message is its own account's.
    high(&p, "upd-2", "acct-upd-2").await;
    assert_eq!(next_alert(&mut one_account).await["transaction_id"], "upd-2");
    assert_eq!(next_alert(&mut everyone).await["transaction_id"], "upd-2");

    // Stopping the api does not wait on open streams: each is closed as "going away".
    p.stop_api().await;
    for socket in [&mut everyone, &mut one_account] {
        let closed = loop {
            let message =
                tokio::time::timeout(DEADLINE, socket.next()).await.unwrap_or_else(|_| panic!("no close"));
            match message {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let code = closed.map(|f| u16::from(f.code));
        assert_eq!(code, Some(1001), "going away");
    }
    p.teardown().await;
}

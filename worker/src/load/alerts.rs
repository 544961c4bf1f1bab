//! The alert listener: one WebSocket client on `/alerts/stream` that notes when each alert
//! of the run arrives.
//!
//! It connects before the first request is sent, with `since` set to the newest alert
//! already stored, so the api replays nothing older. When the api says the client
//! `lagged`, or the connection drops, it reconnects with `since` (the api's `resume_since`,
//! else the last alert id seen) and loses nothing; alerts seen twice count once. Pings are
//! answered by tungstenite while the stream is read, which is all the time.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::{net::TcpStream, sync::watch, task::JoinHandle, time::Instant};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async, tungstenite::Message};

use super::bodies::request_number;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Wait between reconnection attempts.
const RECONNECT_DELAY: Duration = Duration::from_millis(200);

/// What the listener saw.
#[derive(Debug, Default)]
pub struct AlertLog {
    /// (request number, arrival instant) of every distinct alert of the run.
    pub arrivals: Vec<(u64, Instant)>,
    /// Times the connection was re-established.
    pub reconnects: u32,
    /// Times the api said the client fell behind.
    pub lagged: u32,
}

/// A running listener.
pub struct AlertListener {
    received: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    task: JoinHandle<AlertLog>,
}

impl AlertListener {
    /// Connects to `ws_base` (`ws://host:port`) and listens for alerts of `run_id` above
    /// alert id `since`. Fails only if the first connection cannot be made.
    pub async fn connect(
        ws_base: &str,
        since: i64,
        run_id: &str,
        token: Option<String>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let socket = open(ws_base, since, token.as_deref()).await?;
        let received = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let listen = Listen {
            ws_base: ws_base.to_owned(),
            token,
            run_id: run_id.to_owned(),
            last_alert_id: since,
            seen: HashSet::new(),
            log: AlertLog::default(),
            received: Arc::clone(&received),
        };
        let task = tokio::spawn(listen.run(socket, stopped));
        Ok(Self { received, stop, task })
    }

    /// Distinct alerts of the run received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Stops listening and returns what was seen.
    pub async fn finish(self) -> AlertLog {
        let _ = self.stop.send(true);
        self.task.await.unwrap_or_default()
    }
}

async fn open(
    ws_base: &str,
    since: i64,
    token: Option<&str>,
) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, http::HeaderValue};
    let mut request = format!("{ws_base}/alerts/stream?since={since}").into_client_request()?;
    if let Some(token) = token
        && let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}"))
    {
        request.headers_mut().insert("authorization", value);
    }
    let (socket, _) = connect_async(request).await?;
    Ok(socket)
}

struct Listen {
    ws_base: String,
    /// Sent again on every reconnect.
    token: Option<String>,
    run_id: String,
    last_alert_id: i64,
    seen: HashSet<u64>,
    log: AlertLog,
    received: Arc<AtomicU64>,
}

impl Listen {
    async fn run(mut self, socket: Socket, mut stopped: watch::Receiver<bool>) -> AlertLog {
        let mut socket = Some(socket);
        let mut resume = self.last_alert_id;
        loop {
            let Some(ws) = socket.as_mut() else {
                tokio::select! {
                    _ = stopped.changed() => return self.log,
                    () = tokio::time::sleep(RECONNECT_DELAY) => {},
                }
                if let Ok(ws) = open(&self.ws_base, resume, self.token.as_deref()).await {
                    self.log.reconnects += 1;
                    socket = Some(ws);
                }
                continue;
            };
            tokio::select! {
                _ = stopped.changed() => {
                    let _ = ws.close(None).await;
                    return self.log;
                }
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        if let Some(since) = self.frame(text.as_str(), Instant::now()) {
                            resume = since;
                            socket = None;
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        resume = self.last_alert_id;
                        socket = None;
                    }
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Handles one text frame that arrived `at`; returns where to resume if the api gave up
    /// on this connection.
    fn frame(&mut self, text: &str, at: Instant) -> Option<i64> {
        let Ok(frame) = serde_json::from_str::<Value>(text) else { return None };
        match frame["type"].as_str() {
            Some("alert") => {
                let alert = &frame["alert"];
                if let Some(id) = alert["alert_id"].as_i64() {
                    self.last_alert_id = self.last_alert_id.max(id);
                }
                let n = alert["transaction_id"].as_str().and_then(|t| request_number(&self.run_id, t));
                if let Some(n) = n
                    && self.seen.insert(n)
                {
                    self.log.arrivals.push((n, at));
                    self.received.fetch_add(1, Ordering::Relaxed);
                }
                None
            }
            Some("lagged") => {
                self.log.lagged += 1;
                Some(frame["resume_since"].as_i64().unwrap_or(self.last_alert_id))
            }
            _ => None,
        }
    }
}

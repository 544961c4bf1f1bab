//! `WS /alerts/stream`: every alert, live, with no gaps across reconnects.
//!
//! - On connect, `?since=<alert_id>` first replays from PostgreSQL what the client missed
//!   (ids above `since`, oldest first), then the connection continues live.
//! - Live alerts come from the Redis channel `{p}alerts` through one subscriber per api
//!   process, fanned out on a bounded broadcast channel. Pub/sub is at-most-once (a Redis
//!   reconnect drops messages), so every connection also catches up from PostgreSQL every
//!   [`CATCH_UP_EVERY`]: an alert reaches the client either way, and ids already sent are
//!   never sent twice on one connection.
//! - Filters: `min_risk` (`LOW`, `MEDIUM`, `HIGH`) and `account_id`.
//! - Heartbeat: a ping every [`PING_EVERY`]; a client silent for three of them is dropped.
//! - A slow client never slows the others: when it falls [`FEED_CAPACITY`] alerts behind, or
//!   a send blocks for [`SEND_TIMEOUT`], it gets `{"type": "lagged", "resume_since": N}` and
//!   the connection closes; reconnecting with `since=N` loses nothing.
//!
//! - Workflow changes: when an analyst acknowledges or resolves an alert on any api replica,
//!   every connection whose filter admits it gets `{"type": "update", "alert": {...}}` (the
//!   alert with its new status). These ride pub/sub only; a client that reconnects re-reads
//!   the statuses it shows from `GET /alerts`.
//! - Shutdown: when the api stops, every connection is closed with code 1001 (going away) so
//!   the server does not wait on open sockets and clients reconnect to another replica (or
//!   this one, restarted) with `since`.
//!
//! - Authentication: the route is guarded like every other ([`crate::auth`]), so the token
//!   is checked before the upgrade; browsers pass it as the subprotocol `bearer.<token>`
//!   next to [`crate::auth::WS_PROTOCOL`], which the server selects. The connection closes
//!   (code 1008) when the token expires; the client reconnects with a fresh one and `since`.
//!   Clients have nothing to send but pongs: a message over `WS_MAX_MESSAGE_BYTES` closes
//!   the connection.
//!
//! Messages are JSON text frames: `{"type": "alert", "alert": {...}}`, `update`,
//! `{"type": "replayed", "last_alert_id": N}` once the replay is done, and `lagged`.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    Extension,
    extract::{
        Query, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code},
    },
    response::Response,
};
use deadpool_postgres::Pool;
use fraudsense_actors::{auth::Principal, outbox::AlertEvent, store::alerts::AlertRecord};
use fred::{
    clients::{Client, SubscriberClient},
    interfaces::{ClientLike, EventInterface, PubsubInterface},
};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use crate::{problem::ApiError, state::AppState};

/// Alerts buffered per connection before it counts as fallen behind.
pub const FEED_CAPACITY: usize = 1024;
/// How often each connection checks PostgreSQL for alerts pub/sub did not bring.
pub const CATCH_UP_EVERY: Duration = Duration::from_secs(2);
/// Heartbeat period.
pub const PING_EVERY: Duration = Duration::from_secs(15);
/// Longest one send to a client may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Alerts per replay query.
const PAGE: i64 = 500;

/// One item of the live feed.
#[derive(Debug)]
pub enum FeedItem {
    /// A new alert, as a worker published it.
    Raised(AlertEvent),
    /// An alert's workflow state changed (acknowledged or resolved) on some api replica.
    Updated(AlertRecord),
}

/// The process-wide live feed: one Redis subscription, fanned out to every connection.
#[derive(Clone)]
pub struct AlertFeed {
    tx: broadcast::Sender<Arc<FeedItem>>,
    _subscriber: SubscriberClient,
    /// `{p}alerts.updates`: where acknowledgements and resolutions are announced.
    updates_channel: String,
    /// Flips to `true` when the api shuts down: every connection closes.
    closing: watch::Receiver<bool>,
}

impl AlertFeed {
    /// Subscribes to the deployment's alert and update channels (re-subscribing after
    /// reconnects). Connections close once `closing` turns `true`.
    pub async fn start(
        settings: &fraudsense_actors::settings::RedisSettings,
        closing: watch::Receiver<bool>,
    ) -> Result<Self, fred::error::Error> {
        use fred::types::{Builder, config::ReconnectPolicy};
        let subscriber = Builder::from_config(fraudsense_actors::redis_config(settings)?)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 5_000, 2))
            .build_subscriber_client()?;
        subscriber.init().await?;
        let _resubscribe = subscriber.manage_subscriptions();
        let alerts_channel = format!("{}alerts", settings.key_prefix);
        let updates_channel = format!("{}alerts.updates", settings.key_prefix);
        subscriber.subscribe(vec![alerts_channel.clone(), updates_channel.clone()]).await?;
        let (tx, _) = broadcast::channel(FEED_CAPACITY);
        let mut messages = subscriber.message_rx();
        let sender = tx.clone();
        tokio::spawn(async move {
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        let text: Option<String> = message.value.convert().ok();
                        let text = text.unwrap_or_default();
                        let item = if *message.channel == *alerts_channel {
                            serde_json::from_str(&text).map(FeedItem::Raised)
                        } else {
                            serde_json::from_str(&text).map(FeedItem::Updated)
                        };
                        match item {
                            // No receiver is fine: nobody is watching.
                            Ok(item) => drop(sender.send(Arc::new(item))),
                            Err(error) => tracing::warn!(
                                component = "stream",
                                channel = &*message.channel,
                                %error,
                                "unreadable message on the alert channels"
                            ),
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(
                            component = "stream",
                            missed = n,
                            "alert feed lagged; catch-up fills it"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Self { tx, _subscriber: subscriber, updates_channel, closing })
    }

    /// A receiver of every alert and update published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<FeedItem>> {
        self.tx.subscribe()
    }

    /// Tells every api replica's live clients that `alert` changed. Best effort: the change
    /// is already committed, and a client that misses it re-reads statuses on reconnect.
    pub async fn announce(&self, redis: &Client, alert: &AlertRecord) {
        let body = match serde_json::to_string(alert) {
            Ok(body) => body,
            Err(error) => return tracing::warn!(component = "stream", %error, "alert update not encodable"),
        };
        if let Err(error) = redis.publish::<i64, _, _>(&self.updates_channel, body).await {
            tracing::warn!(component = "stream", alert_id = alert.alert_id, %error, "alert update not announced");
        }
    }
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::Validation(vec![fraudsense_actors::transaction::FieldError::new(field, reason)])
}

/// Query of `WS /alerts/stream`.
#[derive(Debug, Deserialize)]
pub struct StreamQuery {
    /// Replay alerts with a larger id first (0: everything kept).
    pub since: Option<i64>,
    /// Lowest risk label to send (default LOW: everything).
    pub min_risk: Option<String>,
    /// Only this account's alerts.
    pub account_id: Option<String>,
}

/// What a connection sends.
#[derive(Debug, Clone)]
struct Filter {
    min_rank: u8,
    account_id: Option<String>,
}

fn rank(risk: &str) -> Option<u8> {
    match risk {
        "LOW" => Some(0),
        "MEDIUM" => Some(1),
        "HIGH" => Some(2),
        _ => None,
    }
}

impl Filter {
    fn admits(&self, risk_label: &str, account_id: &str) -> bool {
        rank(risk_label).unwrap_or(0) >= self.min_rank
            && self.account_id.as_ref().is_none_or(|a| a == account_id)
    }
}

/// `GET /alerts/stream` (WebSocket upgrade).
pub async fn stream(
    State(state): State<AppState>,
    Query(query): Query<StreamQuery>,
    Extension(principal): Extension<Principal>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let min_rank = match query.min_risk.as_deref() {
        None => 0,
        Some(r) => rank(r).ok_or_else(|| invalid("min_risk", "must be LOW, MEDIUM or HIGH"))?,
    };
    if let Some(a) = &query.account_id {
        ApiError::check_id("account_id", a)?;
    }
    let since = query.since.unwrap_or(0);
    if since < 0 {
        return Err(invalid("since", "must be an alert id (a non-negative integer)"));
    }
    let filter = Filter { min_rank, account_id: query.account_id };
    let feed = state.alerts.subscribe();
    let closing = state.alerts.closing.clone();
    let pool = state.pool.clone();
    let expires =
        Duration::from_secs(principal.expires_at.saturating_sub(fraudsense_actors::auth::now_secs()));
    Ok(upgrade
        .protocols([crate::auth::WS_PROTOCOL])
        .max_message_size(state.ws_max_message_bytes)
        .max_frame_size(state.ws_max_message_bytes)
        .on_upgrade(move |socket| serve(socket, pool, feed, closing, filter, since, expires)))
}

/// Alerts above `after`, oldest first, one page.
async fn replay_page(
    pool: &Pool,
    after: i64,
) -> Result<Vec<AlertEvent>, fraudsense_actors::store::StoreError> {
    fraudsense_actors::outbox::events_after(pool, after, PAGE).await
}

/// One connection: replay, then live + catch-up, until the client leaves or falls behind.
async fn serve(
    mut socket: WebSocket,
    pool: Pool,
    mut feed: broadcast::Receiver<Arc<FeedItem>>,
    mut closing: watch::Receiver<bool>,
    filter: Filter,
    since: i64,
    expires: Duration,
) {
    metrics::gauge!("alert_stream_clients").increment(1.0);
    let mut conn = Connection { sent: HashSet::new(), cursor: since, filter };
    let outcome = tokio::select! {
        outcome = conn.run(&mut socket, &pool, &mut feed) => outcome,
        _ = closing.wait_for(|closing| *closing) => Err(GOING_AWAY),
        () = tokio::time::sleep(expires) => Err(TOKEN_EXPIRED),
    };
    let close = match outcome {
        Err(GOING_AWAY) => Some(CloseFrame {
            code: close_code::AWAY,
            reason: "server shutting down; reconnect with since".into(),
        }),
        Err(TOKEN_EXPIRED) => Some(CloseFrame {
            code: close_code::POLICY,
            reason: "token expired; reconnect with a fresh token and since".into(),
        }),
        Err(reason) => {
            tracing::debug!(component = "stream", reason, "alert stream closed");
            None
        }
        Ok(()) => None,
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(close))).await;
    metrics::gauge!("alert_stream_clients").decrement(1.0);
}

/// Why a connection ends when the api stops.
const GOING_AWAY: &str = "going away";
/// Why a connection ends when its token expires.
const TOKEN_EXPIRED: &str = "token expired";

struct Connection {
    /// Ids already sent on this connection (dedupe across replay, catch-up and live).
    sent: HashSet<i64>,
    /// Everything up to here was checked in PostgreSQL.
    cursor: i64,
    filter: Filter,
}

impl Connection {
    async fn send(&mut self, socket: &mut WebSocket, alert: &AlertEvent) -> Result<(), &'static str> {
        if !self.filter.admits(&alert.risk_label, &alert.account_id) || !self.sent.insert(alert.alert_id) {
            return Ok(());
        }
        let text = json!({"type": "alert", "alert": alert}).to_string();
        let sent = self.send_text(socket, text).await;
        if sent.is_err() {
            self.sent.remove(&alert.alert_id);
        }
        sent
    }

    /// Passes on a workflow change to an alert this connection may show.
    async fn update(&mut self, socket: &mut WebSocket, alert: &AlertRecord) -> Result<(), &'static str> {
        if !self.filter.admits(&alert.risk_label, &alert.account_id) {
            return Ok(());
        }
        self.send_text(socket, json!({"type": "update", "alert": alert}).to_string()).await
    }

    /// One frame within [`SEND_TIMEOUT`]; a client that cannot take it is told it lagged.
    async fn send_text(&mut self, socket: &mut WebSocket, text: String) -> Result<(), &'static str> {
        match tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err("client gone"),
            Err(_) => {
                self.lagged(socket).await;
                Err("client too slow")
            }
        }
    }

    /// Tells the client where to resume and gives up on it.
    async fn lagged(&self, socket: &mut WebSocket) {
        let text = json!({"type": "lagged", "resume_since": self.cursor}).to_string();
        let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Text(text.into()))).await;
        metrics::counter!("alert_stream_lagged_total").increment(1);
    }

    /// Sends every stored alert above the cursor, page by page.
    async fn catch_up(&mut self, socket: &mut WebSocket, pool: &Pool) -> Result<(), &'static str> {
        loop {
            let page = replay_page(pool, self.cursor).await.map_err(|_| "database unavailable")?;
            let full = page.len() as i64 == PAGE;
            for alert in &page {
                self.send(socket, alert).await?;
                self.cursor = self.cursor.max(alert.alert_id);
            }
            if !full {
                // Keep the dedupe set small: ids at or below the cursor can't come from replay again.
                let cursor = self.cursor;
                self.sent.retain(|id| *id > cursor - 10_000);
                return Ok(());
            }
        }
    }

    async fn run(
        &mut self,
        socket: &mut WebSocket,
        pool: &Pool,
        feed: &mut broadcast::Receiver<Arc<FeedItem>>,
    ) -> Result<(), &'static str> {
        self.catch_up(socket, pool).await?;
        let done = json!({"type": "replayed", "last_alert_id": self.cursor}).to_string();
        socket.send(Message::Text(done.into())).await.map_err(|_| "client gone")?;
        let mut ping = tokio::time::interval(PING_EVERY);
        let mut catch_up = tokio::time::interval(CATCH_UP_EVERY);
        let mut silent_pings = 0u32;
        loop {
            tokio::select! {
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                    Some(Ok(_)) => silent_pings = 0,
                },
                live = feed.recv() => match live {
                    Ok(item) => match &*item {
                        FeedItem::Raised(alert) => self.send(socket, alert).await?,
                        FeedItem::Updated(alert) => self.update(socket, alert).await?,
                    },
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        self.lagged(socket).await;
                        return Err("fell behind the live feed");
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err("feed closed"),
                },
                _ = catch_up.tick() => self.catch_up(socket, pool).await?,
                _ = ping.tick() => {
                    silent_pings += 1;
                    if silent_pings > 3 {
                        return Err("no pong");
                    }
                    socket.send(Message::Ping(Vec::new().into())).await.map_err(|_| "client gone")?;
                }
            }
        }
    }
}

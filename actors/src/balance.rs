//! Spreading shards across worker nodes.
//!
//! Each shard queue has `x-single-active-consumer`, so the broker guarantees one active
//! consumer per shard and fails over to a waiting one when a node dies. On RabbitMQ 3.10 it
//! never *moves* a shard to a newer consumer, though: left alone, the first node stays active
//! on every shard. So every node, every `BALANCE_INTERVAL_MS`, reads who is active and who is
//! waiting from the management API and plans:
//!
//! - with `n` live nodes and `N` shards, a fair share is `ceil(N / n)`;
//! - a node over its share **yields** a shard it is active on (cancels that consumer) when a
//!   node under its share is waiting there, so the broker activates that node;
//! - a node at or over its share **withdraws** its waiting consumers from shards where some
//!   other node also waits (so yields land on the under-loaded, not back on a loaded node);
//! - a node **subscribes** (waits) on a shard where it has no consumer if it is under its
//!   share, or if nobody else waits there — so every shard always has a standby and a node
//!   death is covered by the broker at once, without waiting for the next round.
//!
//! Consumer tags are `fsn-<node>.<shard>.<n>`, which is how nodes recognise each other.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::ExposeSecret;
use serde::{Deserialize, de::DeserializeOwned};

use crate::settings::BalanceSettings;

/// Who consumes one shard, as the management API reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardView {
    /// The node whose consumer is active, if any.
    pub active: Option<String>,
    /// Nodes with a waiting consumer.
    pub waiting: BTreeSet<String>,
}

/// What this node should change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Shards to stop being active on.
    pub yield_active: Vec<usize>,
    /// Shards to stop waiting on.
    pub withdraw: Vec<usize>,
    /// Shards to start waiting on.
    pub subscribe: Vec<usize>,
}

/// The consumer tag for `node`'s consumer number `seq` on `shard`.
pub fn consumer_tag(node: &str, shard: usize, seq: u32) -> String {
    format!("fsn-{node}.{shard}.{seq}")
}

/// The node a consumer tag belongs to, if it is one of ours.
pub fn node_of(tag: &str) -> Option<&str> {
    tag.strip_prefix("fsn-")?.split('.').next()
}

/// One consumer in `GET /api/consumers/{vhost}`.
#[derive(Debug, Deserialize)]
pub struct ApiConsumer {
    /// The consumer tag.
    pub consumer_tag: String,
    /// Whether it is the active one (single-active-consumer).
    #[serde(default)]
    pub active: bool,
    /// Its queue.
    pub queue: ApiQueue,
}

/// The queue part of [`ApiConsumer`].
#[derive(Debug, Deserialize)]
pub struct ApiQueue {
    /// Queue name.
    pub name: String,
}

/// GETs `/api/{path}` from the RabbitMQ management API with the node's credentials.
pub async fn management_get<T: DeserializeOwned>(
    http: &reqwest::Client,
    balance: &BalanceSettings,
    path: &str,
) -> Result<T, reqwest::Error> {
    let url = format!("{}/api/{path}", balance.url.trim_end_matches('/'));
    http.get(url)
        .basic_auth(&balance.user, Some(balance.password.expose_secret()))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

/// Turns the management API's consumer list into one view per shard queue.
pub fn views(shard_queues: &[String], consumers: &[ApiConsumer]) -> Vec<ShardView> {
    let index: BTreeMap<&str, usize> =
        shard_queues.iter().enumerate().map(|(i, q)| (q.as_str(), i)).collect();
    let mut views = vec![ShardView::default(); shard_queues.len()];
    for c in consumers {
        let (Some(&shard), Some(node)) = (index.get(c.queue.name.as_str()), node_of(&c.consumer_tag)) else {
            continue;
        };
        if c.active {
            views[shard].active = Some(node.to_owned());
        } else {
            views[shard].waiting.insert(node.to_owned());
        }
    }
    views
}

/// Plans `me`'s moves. `subscribed[s]` says whether `me` has a consumer on shard `s` now.
pub fn plan(me: &str, views: &[ShardView], subscribed: &[bool]) -> Plan {
    let mut nodes: BTreeSet<&str> = BTreeSet::from([me]);
    for v in views {
        nodes.extend(v.active.as_deref());
        nodes.extend(v.waiting.iter().map(String::as_str));
    }
    let fair = views.len().div_ceil(nodes.len());
    let load = |node: &str| views.iter().filter(|v| v.active.as_deref() == Some(node)).count();
    let mine = load(me);
    let mut plan = Plan::default();

    if mine > fair {
        let takers = views.iter().enumerate().filter(|(_, v)| {
            v.active.as_deref() == Some(me) && v.waiting.iter().any(|n| n != me && load(n) < fair)
        });
        plan.yield_active = takers.map(|(s, _)| s).take(mine - fair).collect();
    }
    for (s, v) in views.iter().enumerate() {
        let is_active = v.active.as_deref() == Some(me);
        let others_wait = v.waiting.iter().any(|n| n != me);
        let has_consumer = subscribed.get(s).copied().unwrap_or(false);
        if has_consumer && !is_active && mine >= fair && others_wait {
            plan.withdraw.push(s);
        }
        if !has_consumer && (mine < fair || !others_wait || v.active.is_none()) {
            plan.subscribe.push(s);
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(active: Option<&str>, waiting: &[&str]) -> ShardView {
        ShardView {
            active: active.map(str::to_owned),
            waiting: waiting.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn tags_name_their_node() {
        assert_eq!(node_of(&consumer_tag("abc", 3, 7)), Some("abc"));
        assert_eq!(node_of("amq.ctag-xyz"), None);
    }

    #[test]
    fn a_node_alone_keeps_everything() {
        let views = vec![view(Some("a"), &[]); 4];
        assert_eq!(plan("a", &views, &[true; 4]), Plan::default());
    }

    #[test]
    fn a_loaded_node_yields_its_excess_to_a_waiting_newcomer() {
        let views = vec![view(Some("a"), &["b"]); 4];
        let p = plan("a", &views, &[true; 4]);
        assert_eq!(p.yield_active.len(), 2);
        // The newcomer keeps waiting everywhere (it is under its share).
        assert_eq!(plan("b", &views, &[true; 4]), Plan::default());
    }

    #[test]
    fn a_node_at_its_share_withdraws_standbys_where_others_wait() {
        let views = vec![view(Some("a"), &["b", "c"]), view(Some("b"), &["a", "c"]), view(Some("c"), &["a"])];
        let p = plan("a", &views, &[true; 3]);
        assert_eq!(p.withdraw, [1], "shard 1 has c waiting too; shard 2 has only a as standby");
        assert!(p.yield_active.is_empty());
    }

    #[test]
    fn every_shard_keeps_a_standby_and_orphans_are_picked_up() {
        let views = vec![view(Some("a"), &[]), view(None, &[]), view(Some("b"), &["a"])];
        let p = plan("a", &views, &[true, false, true]);
        assert_eq!(p.subscribe, [1]);
        let p = plan("b", &views, &[false, false, true]);
        assert_eq!(p.subscribe, [0, 1], "b stands by where nobody else does");
    }

    #[test]
    fn views_come_from_the_consumer_list() {
        let q = vec!["s.0".to_owned(), "s.1".to_owned()];
        let c = |tag: &str, queue: &str, active| ApiConsumer {
            consumer_tag: tag.into(),
            active,
            queue: ApiQueue { name: queue.into() },
        };
        let list = [
            c("fsn-a.0.1", "s.0", true),
            c("fsn-b.0.1", "s.0", false),
            c("amq.x", "s.1", true),
            c("fsn-b.9.1", "other", true),
        ];
        let v = views(&q, &list);
        assert_eq!(v[0], view(Some("a"), &["b"]));
        assert_eq!(v[1], ShardView::default());
    }
}

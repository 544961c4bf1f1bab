//! How much work waits on the broker: the depth of each shard queue, of the dead-letter
//! queue and of the delayed-retry queue, read from the RabbitMQ management API on every
//! balancing round and exported as gauges.
//!
//! | gauge | value |
//! |---|---|
//! | `worker_shard_queue_depth{shard}` | messages ready + unacknowledged in shard queue `shard` |
//! | `worker_dead_letter_queue_depth` | messages in the dead-letter queue |
//! | `worker_retry_queue_depth` | messages parked on the delayed-retry path |
//!
//! The management API refreshes its figures every few seconds (`collect_statistics_interval`),
//! so the gauges lag the broker by about that much. A failed read is logged at debug level
//! and counted in `worker_queue_depth_fetch_failures_total`; the gauges then keep their last
//! value and nothing else is affected.

use std::collections::HashMap;

use serde::Deserialize;

use crate::{settings::BalanceSettings, topology::Topology};

/// The columns asked of the management API: enough for the depth, nothing else.
const COLUMNS: &str = "name,messages,messages_ready,messages_unacknowledged";

/// One queue in `GET /api/queues/{vhost}`. The counts are absent until the broker has
/// collected statistics for a newly declared queue.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiQueueDepth {
    /// Queue name.
    pub name: String,
    /// Messages ready and unacknowledged together.
    #[serde(default)]
    pub messages: Option<u64>,
    /// Messages waiting to be delivered.
    #[serde(default)]
    pub messages_ready: Option<u64>,
    /// Messages delivered and not yet acknowledged.
    #[serde(default)]
    pub messages_unacknowledged: Option<u64>,
}

impl ApiQueueDepth {
    /// Ready plus unacknowledged, if the broker reported them.
    pub fn depth(&self) -> Option<u64> {
        match (self.messages_ready, self.messages_unacknowledged) {
            (Some(ready), Some(unacked)) => Some(ready + unacked),
            _ => self.messages,
        }
    }
}

/// The depth of every queue of one topology; `None` where the broker reported nothing
/// (the queue is missing or has no statistics yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backlog {
    /// One entry per shard queue, in shard order.
    pub shards: Vec<Option<u64>>,
    /// The dead-letter queue.
    pub dead_letter: Option<u64>,
    /// The delayed-retry queue.
    pub retry: Option<u64>,
}

impl Backlog {
    /// Picks `topology`'s queues out of the management API's queue list.
    pub fn from_queues(topology: &Topology, queues: &[ApiQueueDepth]) -> Self {
        let by_name: HashMap<&str, &ApiQueueDepth> = queues.iter().map(|q| (q.name.as_str(), q)).collect();
        let depth = |name: &str| by_name.get(name).and_then(|q| q.depth());
        Self {
            shards: topology.shard_queues.iter().map(|q| depth(q)).collect(),
            dead_letter: depth(&topology.dead_letter_queue),
            retry: depth(&topology.retry_queue),
        }
    }

    /// Sets the gauges to these depths, leaving alone any the broker reported nothing for.
    pub fn record(&self) {
        for (shard, depth) in self.shards.iter().enumerate() {
            if let Some(depth) = depth {
                metrics::gauge!("worker_shard_queue_depth", "shard" => shard.to_string()).set(*depth as f64);
            }
        }
        if let Some(depth) = self.dead_letter {
            metrics::gauge!("worker_dead_letter_queue_depth").set(depth as f64);
        }
        if let Some(depth) = self.retry {
            metrics::gauge!("worker_retry_queue_depth").set(depth as f64);
        }
    }
}

/// Reads the depth of `topology`'s queues from the management API.
pub async fn fetch(
    http: &reqwest::Client,
    balance: &BalanceSettings,
    topology: &Topology,
) -> Result<Backlog, reqwest::Error> {
    let path = format!("queues/{}?columns={COLUMNS}", balance.vhost_path());
    let queues: Vec<ApiQueueDepth> = crate::balance::management_get(http, balance, &path).await?;
    Ok(Backlog::from_queues(topology, &queues))
}

/// Reads the depths in the background and updates the gauges; a failure is logged at debug
/// level and counted, never propagated. `http` should carry a timeout, which bounds the task.
pub fn spawn_report(http: &reqwest::Client, balance: &BalanceSettings, topology: &Topology) {
    let (http, balance, topology) = (http.clone(), balance.clone(), topology.clone());
    tokio::spawn(async move {
        match fetch(&http, &balance, &topology).await {
            Ok(backlog) => backlog.record(),
            Err(error) => {
                tracing::debug!(component = "backlog", %error, "queue depths unavailable");
                metrics::counter!("worker_queue_depth_fetch_failures_total").increment(1);
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths_come_from_the_queue_list_and_missing_figures_stay_unknown() {
        let topology = Topology::new("t.", 3, 5, 1000);
        let queues: Vec<ApiQueueDepth> = serde_json::from_str(
            r#"[
                {"name": "t.shard.0", "messages": 7, "messages_ready": 4, "messages_unacknowledged": 3},
                {"name": "t.shard.1"},
                {"name": "t.transactions.dead", "messages": 2},
                {"name": "t.transactions.retry", "messages": 0, "messages_ready": 0, "messages_unacknowledged": 0},
                {"name": "other.shard.2", "messages": 99, "messages_ready": 99, "messages_unacknowledged": 0}
            ]"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let backlog = Backlog::from_queues(&topology, &queues);
        assert_eq!(
            backlog,
            Backlog { shards: vec![Some(7), None, None], dead_letter: Some(2), retry: Some(0) }
        );
    }
}

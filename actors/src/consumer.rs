//! The consumer actor: owns the AMQP connection it consumes from, decodes deliveries and
//! routes each to its account's actor, spawning that actor on first use.
//!
//! Closing its channel (on stop or restart) returns every unacknowledged delivery to the
//! queue, which is what makes "a failure mid-message means redelivery" hold for the whole
//! pipeline.

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{FieldTable, ShortString},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use secrecy::ExposeSecret;
use tokio::task::JoinHandle;

use crate::{
    account::{AccountActor, AccountArgs, AccountMsg},
    events::TransactionCreated,
    features::WindowStore,
    job::{Job, Settlement},
    scorer::ScorerMsg,
    settings::AmqpSettings,
    topology::Topology,
};

/// Messages the consumer accepts.
#[derive(Debug)]
pub enum ConsumerMsg {
    /// A delivery from the broker.
    Delivery(Box<Delivery>),
    /// The delivery stream ended (connection or channel lost): fail so we get restarted.
    StreamEnded(String),
    /// Stop consuming, finish what is in flight, and answer once every delivery is settled.
    Drain(RpcReplyPort<()>),
    /// Time to stop account actors that have been idle.
    Sweep,
    /// Deliveries whose outcome is known.
    Settle {
        /// Their tags on our channel.
        tags: Vec<u64>,
        /// Ack (committed) or retry.
        how: Settlement,
    },
}

/// Start-up arguments of the consumer.
#[derive(Debug, Clone)]
pub struct ConsumerArgs {
    /// Broker connection settings.
    pub amqp: AmqpSettings,
    /// What to declare and consume.
    pub topology: Topology,
    /// Handed to every account actor.
    pub windows: WindowStore,
    /// Where account actors send their jobs.
    pub scorer: ActorRef<ScorerMsg>,
    /// An account actor idle this long is stopped (its state lives in Redis).
    pub account_idle: Duration,
    /// At most this many account actors live at once; the least recently used go first.
    pub max_accounts: usize,
}

/// One live account actor.
struct AccountEntry {
    actor: ActorRef<AccountMsg>,
    last_used: Instant,
}

/// Runtime state of the consumer.
pub struct ConsumerState {
    args: ConsumerArgs,
    connection: Connection,
    channel: Channel,
    forwarders: Vec<JoinHandle<()>>,
    accounts: HashMap<String, AccountEntry>,
    sweeper: JoinHandle<()>,
    /// Delivered and not yet settled.
    outstanding: BTreeSet<u64>,
    /// Committed but not yet acked, because a lower tag is still outstanding.
    committed: BTreeSet<u64>,
    /// Our consumer tags on the channel, one per shard (to cancel them when draining).
    consumer_tags: Vec<ShortString>,
    /// Set while draining: who to tell once everything is settled.
    draining: Option<RpcReplyPort<()>>,
    /// Delivery streams that have ended (after a cancel, all of a stream's deliveries have
    /// been forwarded).
    streams_ended: usize,
}

/// Consumes `transaction.created` and fans out to account actors.
#[derive(Debug, Default)]
pub struct ConsumerActor;

impl Actor for ConsumerActor {
    type Msg = ConsumerMsg;
    type State = ConsumerState;
    type Arguments = ConsumerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ConsumerArgs,
    ) -> Result<ConsumerState, ActorProcessingErr> {
        let connection =
            Connection::connect(args.amqp.url.expose_secret(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        args.topology.declare(&channel).await?;
        channel.basic_qos(args.amqp.prefetch, BasicQosOptions::default()).await?;
        // One consumer per shard queue, all on this channel (prefetch applies per consumer).
        let mut consumer_tags = Vec::new();
        let mut forwarders = Vec::new();
        for queue in &args.topology.shard_queues {
            let stream = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumer_tags.push(stream.tag());
            forwarders.push(tokio::spawn(forward(stream, myself.clone())));
        }
        let sweep_every = (args.account_idle / 2).max(Duration::from_millis(100));
        let sweeper = myself.send_interval(sweep_every, || ConsumerMsg::Sweep);
        tracing::info!(component = "consumer", shards = args.topology.shard_queues.len(), "consuming");
        Ok(ConsumerState {
            args,
            connection,
            channel,
            forwarders,
            accounts: HashMap::new(),
            sweeper,
            outstanding: BTreeSet::new(),
            committed: BTreeSet::new(),
            consumer_tags,
            draining: None,
            streams_ended: 0,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConsumerMsg,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumerMsg::Delivery(delivery) => {
                let Delivery { data, delivery_tag, redelivered, .. } = *delivery;
                let event = match TransactionCreated::decode(&data) {
                    Ok(event) => event,
                    Err(error) => {
                        // Retrying cannot fix a body we cannot read: dead-letter it now.
                        tracing::error!(component = "consumer", %error, "undecodable message dead-lettered");
                        metrics::counter!("dead_lettered_total", "reason" => "undecodable").increment(1);
                        let reject = BasicNackOptions { requeue: false, multiple: false };
                        state.channel.basic_nack(delivery_tag, reject).await?;
                        return Ok(());
                    }
                };
                state.outstanding.insert(delivery_tag);
                let account = self.account(&myself, state, &event.transaction.account_id).await?;
                let job = Job::new(event, delivery_tag, redelivered, myself.clone());
                if let Err(error) = account.cast(AccountMsg::Observe(job)) {
                    return Err(format!("account actor unavailable: {error}").into());
                }
                Ok(())
            }
            ConsumerMsg::StreamEnded(reason) => {
                if state.draining.is_none() {
                    return Err(format!("delivery stream ended: {reason}").into());
                }
                state.streams_ended += 1;
                finish_drain(state);
                Ok(())
            }
            ConsumerMsg::Drain(reply) => {
                tracing::info!(component = "consumer", in_flight = state.outstanding.len(), "draining");
                state.draining = Some(reply);
                for tag in state.consumer_tags.clone() {
                    state.channel.basic_cancel(tag, BasicCancelOptions::default()).await?;
                }
                Ok(())
            }
            ConsumerMsg::Sweep => {
                let idle = state.args.account_idle;
                evict(state, "idle", |entry| entry.last_used.elapsed() >= idle);
                Ok(())
            }
            ConsumerMsg::Settle { tags, how } => {
                settle(state, tags, how).await?;
                finish_drain(state);
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            // An account actor died holding deliveries we can no longer settle: fail, so the
            // supervisor restarts us and the channel close returns them to the queue.
            SupervisionEvent::ActorFailed(cell, error) => {
                Err(format!("account actor {:?} failed: {error}", cell.get_id()).into())
            }
            SupervisionEvent::ActorTerminated(cell, _, _) => {
                let before = state.accounts.len();
                state.accounts.retain(|_, a| a.actor.get_id() != cell.get_id());
                metrics::gauge!("worker_account_actors").decrement((before - state.accounts.len()) as f64);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        for forwarder in &state.forwarders {
            forwarder.abort();
        }
        state.sweeper.abort();
        metrics::gauge!("worker_account_actors").decrement(state.accounts.len() as f64);
        state.accounts.clear();
        myself.stop_children(None);
        // Closing returns unacked deliveries to the queue; bounded so shutdown cannot hang.
        let close = async {
            let _ = state.channel.close(200, "consumer stopping".into()).await;
            let _ = state.connection.close(200, "consumer stopping".into()).await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), close).await;
        Ok(())
    }
}

/// Records the outcome of `tags` and settles with the broker: retries are nacked one by one
/// (back to the queue), acks go out as one `multiple` ack up to the highest tag below which
/// nothing is outstanding, so a lower delivery still in the pipeline is never acked early.
async fn settle(
    state: &mut ConsumerState,
    tags: Vec<u64>,
    how: Settlement,
) -> Result<(), ActorProcessingErr> {
    for tag in tags {
        if !state.outstanding.remove(&tag) {
            continue; // Not ours (a previous channel) or already settled.
        }
        match how {
            Settlement::Ack => {
                state.committed.insert(tag);
            }
            Settlement::Retry => {
                let requeue = BasicNackOptions { requeue: true, multiple: false };
                state.channel.basic_nack(tag, requeue).await?;
            }
        }
    }
    let ackable = match state.outstanding.first() {
        Some(lowest) => state.committed.range(..*lowest).next_back().copied(),
        None => state.committed.last().copied(),
    };
    if let Some(upto) = ackable {
        state.channel.basic_ack(upto, BasicAckOptions { multiple: true }).await?;
        state.committed = state.committed.split_off(&(upto + 1));
    }
    Ok(())
}

/// Forwards one shard's deliveries to the consumer actor, then reports the stream's end.
async fn forward(mut stream: lapin::Consumer, consumer: ActorRef<ConsumerMsg>) {
    let reason = loop {
        match stream.next().await {
            Some(Ok(delivery)) => {
                if consumer.cast(ConsumerMsg::Delivery(Box::new(delivery))).is_err() {
                    break String::from("consumer actor stopped");
                }
            }
            Some(Err(error)) => break error.to_string(),
            None => break String::from("consumer cancelled"),
        }
    };
    // Ignored if the actor is already stopping.
    let _ = consumer.cast(ConsumerMsg::StreamEnded(reason));
}

/// Stops the account actors `pick` selects. `drain` lets each finish what is already in its
/// mailbox first, so no job is dropped; its windows stay in Redis for the next one.
fn evict(state: &mut ConsumerState, reason: &'static str, pick: impl Fn(&AccountEntry) -> bool) {
    let before = state.accounts.len();
    state.accounts.retain(|_, entry| {
        if pick(entry) {
            let _ = entry.actor.drain();
            false
        } else {
            true
        }
    });
    let evicted = before - state.accounts.len();
    if evicted > 0 {
        metrics::gauge!("worker_account_actors").decrement(evicted as f64);
        metrics::counter!("account_actor_evictions_total", "reason" => reason).increment(evicted as u64);
    }
}

/// Answers a pending drain once the stream has ended and every delivery is acked.
fn finish_drain(state: &mut ConsumerState) {
    if state.streams_ended >= state.consumer_tags.len()
        && state.outstanding.is_empty()
        && state.committed.is_empty()
        && let Some(reply) = state.draining.take()
    {
        tracing::info!(component = "consumer", "drained: every delivery settled");
        let _ = reply.send(());
    }
}

impl ConsumerActor {
    /// The actor owning `account_id`, spawned (linked to us) on first use.
    async fn account(
        &self,
        myself: &ActorRef<ConsumerMsg>,
        state: &mut ConsumerState,
        account_id: &str,
    ) -> Result<ActorRef<AccountMsg>, ActorProcessingErr> {
        if let Some(entry) = state.accounts.get_mut(account_id) {
            entry.last_used = Instant::now();
            return Ok(entry.actor.clone());
        }
        if state.accounts.len() >= state.args.max_accounts {
            // Make room in one go (the oldest hundredth), not one scan per new account.
            let mut ages: Vec<Instant> = state.accounts.values().map(|e| e.last_used).collect();
            let room = (state.args.max_accounts / 100).max(1).min(ages.len());
            let (_, cutoff, _) = ages.select_nth_unstable(room - 1);
            let cutoff = *cutoff;
            evict(state, "cap", |entry| entry.last_used <= cutoff);
        }
        let args = AccountArgs {
            account_id: account_id.to_owned(),
            windows: state.args.windows.clone(),
            scorer: state.args.scorer.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, AccountActor, args, myself.get_cell()).await?;
        state
            .accounts
            .insert(account_id.to_owned(), AccountEntry { actor: actor.clone(), last_used: Instant::now() });
        metrics::gauge!("worker_account_actors").increment(1.0);
        Ok(actor)
    }
}

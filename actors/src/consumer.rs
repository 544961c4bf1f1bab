//! The consumer actor: owns the AMQP connection it consumes from, decodes deliveries and
//! routes each to its account's actor, spawning that actor on first use.
//!
//! Closing its channel (on stop or restart) returns every unacknowledged delivery to the
//! queue, which is what makes "a failure mid-message means redelivery" hold for the whole
//! pipeline.
//!
//! It holds one consumer per shard queue it subscribes to and, when a management API is
//! configured, takes part in spreading shards across nodes (see [`crate::balance`]). A
//! shard it gives up is cancelled only while none of its deliveries is in flight here, and
//! anything the broker still sends on it before the cancel completes is handed straight
//! back (to the front of the queue), so the next owner starts exactly where this one
//! stopped: one owner per account at a time, in order.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions,
        BasicQosOptions, ConfirmSelectOptions,
    },
    types::{AMQPValue, FieldTable, ShortString},
};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::JoinHandle;

use crate::{
    account::{AccountActor, AccountArgs, AccountMsg, AccountState},
    balance::{self, ShardView},
    events::TransactionCreated,
    features::{AccountWindow, WindowStore},
    job::{Job, Settlement},
    scorer::ScorerMsg,
    settings::{AmqpSettings, BalanceSettings},
    topology::Topology,
};

/// Messages the consumer accepts.
#[derive(Debug)]
pub enum ConsumerMsg {
    /// A delivery from the broker on shard `shard`.
    Delivery {
        /// Index of the shard queue.
        shard: usize,
        /// The delivery.
        delivery: Box<Delivery>,
    },
    /// A shard's delivery stream ended: expected after a cancel, else the connection or
    /// channel was lost and we fail so the supervisor restarts us.
    StreamEnded {
        /// Index of the shard queue.
        shard: usize,
        /// Why it ended.
        reason: String,
    },
    /// Time to look at who consumes which shard.
    Balance,
    /// Who consumes which shard, per the management API.
    View(Vec<ShardView>),
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
    /// How long a stopped actor's window is kept for the account's next actor.
    pub window_park: Duration,
    /// At most this many parked windows; the oldest go first.
    pub max_parked: usize,
    /// This node's id, part of every consumer tag.
    pub node_id: String,
    /// Shard balancing across nodes, if a management API is configured.
    pub balance: Option<BalanceSettings>,
}

/// A dispatched delivery.
struct Pending {
    shard: usize,
    data: Vec<u8>,
    properties: BasicProperties,
}

/// Header counting a message's trips round the delayed-retry path.
pub const RETRIES_HEADER: &str = "x-fraudsense-retries";

/// One shard queue from this consumer's point of view.
struct Shard {
    queue: String,
    /// Our consumer tag while subscribed.
    tag: Option<ShortString>,
    /// A cancel was sent and its stream has not ended yet.
    cancelling: bool,
    /// Deliveries from this shard dispatched and not yet settled.
    in_flight: usize,
    forwarder: Option<JoinHandle<()>>,
    /// Consumer tags are unique per subscription.
    seq: u32,
}

/// One live account actor.
struct AccountEntry {
    actor: ActorRef<AccountMsg>,
    last_used: Instant,
}

/// The window of a stopped account actor, kept for the account's next one: an actor costs
/// about 9 KiB (ractor's task and channels) while a window of a few payments costs a few
/// hundred bytes, so idle accounts keep warm windows without keeping their actors.
struct Parked {
    window: AccountWindow,
    at: Instant,
}

/// Runtime state of the consumer.
pub struct ConsumerState {
    args: ConsumerArgs,
    connection: Connection,
    channel: Channel,
    shards: Vec<Shard>,
    accounts: HashMap<String, AccountEntry>,
    /// Windows of stopped account actors, by account.
    parked: HashMap<String, Parked>,
    sweeper: JoinHandle<()>,
    balancer: Option<JoinHandle<()>>,
    http: reqwest::Client,
    /// Delivered and not yet settled: the shard each came from, and what is needed to send
    /// it round the delayed-retry path if it must be retried.
    outstanding: BTreeMap<u64, Pending>,
    /// Committed but not yet acked, because a lower tag is still outstanding.
    committed: BTreeSet<u64>,
    /// Set while draining: who to tell once everything is settled.
    draining: Option<RpcReplyPort<()>>,
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
        let connection = crate::topology::connect_amqp(&args.amqp).await?;
        let channel = connection.create_channel().await?;
        // Confirms, for the copies sent round the delayed-retry path.
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        args.topology.declare(&channel).await?;
        channel.basic_qos(args.amqp.prefetch, BasicQosOptions::default()).await?;
        let sweep_every = (args.account_idle / 2).max(Duration::from_millis(100));
        let sweeper = myself.send_interval(sweep_every, || ConsumerMsg::Sweep);
        let balancer = args.balance.as_ref().map(|b| myself.send_interval(b.every, || ConsumerMsg::Balance));
        let shards = args
            .topology
            .shard_queues
            .iter()
            .map(|queue| Shard {
                queue: queue.clone(),
                tag: None,
                cancelling: false,
                in_flight: 0,
                forwarder: None,
                seq: 0,
            })
            .collect();
        let mut state = ConsumerState {
            args,
            connection,
            channel,
            shards,
            accounts: HashMap::new(),
            parked: HashMap::new(),
            sweeper,
            balancer,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?,
            outstanding: BTreeMap::new(),
            committed: BTreeSet::new(),
            draining: None,
        };
        // Start by waiting on every shard: alone, this node takes them all; with others,
        // balancing hands out fair shares from here.
        for shard in 0..state.shards.len() {
            subscribe(&myself, &mut state, shard).await?;
        }
        tracing::info!(component = "consumer", shards = state.shards.len(), node = %state.args.node_id, "consuming");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: ConsumerMsg,
        state: &mut ConsumerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ConsumerMsg::Delivery { shard, delivery } => {
                let Delivery { data, delivery_tag, properties, .. } = *delivery;
                let giving_up =
                    state.draining.is_some() || state.shards.get(shard).is_none_or(|s| s.cancelling);
                if giving_up {
                    // Sent before our cancel took effect: give it back, to the front of the
                    // queue, for whoever owns the shard next.
                    let back = BasicNackOptions { requeue: true, multiple: false };
                    state.channel.basic_nack(delivery_tag, back).await?;
                    return Ok(());
                }
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
                let span = job_span(&event, properties.headers().as_ref(), state.shards.get(shard));
                state.outstanding.insert(delivery_tag, Pending { shard, data, properties });
                if let Some(s) = state.shards.get_mut(shard) {
                    s.in_flight += 1;
                }
                let account = self.account(&myself, state, &event.transaction.account_id).await?;
                let job = Job::new(event, delivery_tag, myself.clone(), span.clone());
                // Sent inside the job's span, so the account actor (and every actor after it)
                // handles the job in that span.
                let sent =
                    span.in_scope(|| account.cast(AccountMsg::Observe(job)).map_err(|e| e.to_string()));
                if let Err(error) = sent {
                    return Err(format!("account actor unavailable: {error}").into());
                }
                Ok(())
            }
            ConsumerMsg::StreamEnded { shard, reason } => {
                let Some(s) = state.shards.get_mut(shard) else { return Ok(()) };
                if !s.cancelling {
                    return Err(format!("delivery stream of {} ended: {reason}", s.queue).into());
                }
                s.cancelling = false;
                s.forwarder = None;
                finish_drain(state);
                Ok(())
            }
            ConsumerMsg::Balance => {
                if let (Some(balance), None) = (&state.args.balance, &state.draining) {
                    crate::backlog::spawn_report(&state.http, balance, &state.args.topology);
                    let http = state.http.clone();
                    let balance = balance.clone();
                    let queues = state.args.topology.shard_queues.clone();
                    let me = myself.clone();
                    tokio::spawn(async move {
                        match fetch_views(&http, &balance, &queues).await {
                            Ok(views) => {
                                let _ = me.cast(ConsumerMsg::View(views));
                            }
                            Err(error) => {
                                tracing::debug!(component = "consumer", %error, "management API unavailable")
                            }
                        }
                    });
                }
                Ok(())
            }
            ConsumerMsg::View(views) => {
                if state.draining.is_none() {
                    rebalance(&myself, state, &views).await?;
                }
                Ok(())
            }
            ConsumerMsg::Drain(reply) => {
                tracing::info!(component = "consumer", in_flight = state.outstanding.len(), "draining");
                state.draining = Some(reply);
                for shard in 0..state.shards.len() {
                    cancel(state, shard).await?;
                }
                finish_drain(state);
                Ok(())
            }
            ConsumerMsg::Sweep => {
                let idle = state.args.account_idle;
                evict(state, "idle", |entry| entry.last_used.elapsed() >= idle);
                let park = state.args.window_park;
                state.parked.retain(|_, p| p.at.elapsed() < park);
                metrics::gauge!("worker_parked_windows").set(state.parked.len() as f64);
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
            SupervisionEvent::ActorTerminated(cell, last, _) => {
                let Some(account) = last.and_then(|mut s| s.take::<AccountState>().ok()) else {
                    // Not an account actor's normal end (no state to read the account from).
                    let before = state.accounts.len();
                    state.accounts.retain(|_, a| a.actor.get_id() != cell.get_id());
                    metrics::gauge!("worker_account_actors")
                        .decrement((before - state.accounts.len()) as f64);
                    return Ok(());
                };
                let id = account.args.account_id;
                match state.accounts.get(&id) {
                    // It stopped by itself while still listed (not evicted): unlist it.
                    Some(entry) if entry.actor.get_id() == cell.get_id() => {
                        state.accounts.remove(&id);
                        metrics::gauge!("worker_account_actors").decrement(1.0);
                    }
                    // A successor already runs for this account: its window is the newer one.
                    Some(_) => return Ok(()),
                    None => {}
                }
                park(state, id, account.window);
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
        for forwarder in state.shards.iter().filter_map(|s| s.forwarder.as_ref()) {
            forwarder.abort();
        }
        state.sweeper.abort();
        if let Some(balancer) = &state.balancer {
            balancer.abort();
        }
        metrics::gauge!("worker_account_actors").decrement(state.accounts.len() as f64);
        state.accounts.clear();
        state.parked.clear();
        metrics::gauge!("worker_parked_windows").set(0.0);
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
        let Some(pending) = state.outstanding.remove(&tag) else {
            continue; // Not ours (a previous channel) or already settled.
        };
        if let Some(s) = state.shards.get_mut(pending.shard) {
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        match how {
            Settlement::Ack => {
                state.committed.insert(tag);
            }
            Settlement::Retry => retry_later(state, tag, pending).await?,
        }
    }
    if let Some(upto) = multiple_ack_upto(&mut state.committed, state.outstanding.keys().next().copied()) {
        state.channel.basic_ack(upto, BasicAckOptions { multiple: true }).await?;
    }
    Ok(())
}

/// The tag a `multiple` ack may go up to: the highest committed tag below the lowest one
/// still outstanding (any, when nothing is). It and every committed tag below it are taken
/// out of `committed`, since the ack settles them.
pub fn multiple_ack_upto(committed: &mut BTreeSet<u64>, lowest_outstanding: Option<u64>) -> Option<u64> {
    let upto = match lowest_outstanding {
        Some(lowest) => committed.range(..lowest).next_back().copied(),
        None => committed.last().copied(),
    }?;
    *committed = committed.split_off(&(upto + 1));
    Some(upto)
}

/// Sends a delivery that failed on its own round the delayed-retry path (back in
/// `RETRY_DELAY_MS`, to the same shard), or to the dead-letter queue once it has been
/// round `RETRY_MAX` times. The original is settled only after the broker confirmed the copy.
async fn retry_later(
    state: &mut ConsumerState,
    tag: u64,
    pending: Pending,
) -> Result<(), ActorProcessingErr> {
    let mut headers = pending.properties.headers().clone().unwrap_or_default();
    let retries = match headers.inner().get(RETRIES_HEADER) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        _ => 0,
    };
    if retries >= state.args.amqp.retry_max {
        tracing::error!(component = "consumer", retries, "delivery keeps failing; dead-lettered");
        metrics::counter!("dead_lettered_total", "reason" => "retries_exhausted").increment(1);
        let reject = BasicNackOptions { requeue: false, multiple: false };
        state.channel.basic_nack(tag, reject).await?;
        return Ok(());
    }
    headers.insert(RETRIES_HEADER.into(), AMQPValue::LongLongInt(i64::from(retries + 1)));
    let properties = pending.properties.with_headers(headers);
    let confirm = state
        .channel
        .basic_publish(
            state.args.topology.retry_exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &pending.data,
            properties,
        )
        .await?
        .await?;
    if confirm.is_ack() {
        metrics::counter!("delayed_retries_total").increment(1);
        state.channel.basic_ack(tag, BasicAckOptions { multiple: false }).await?;
    } else {
        // Could not park it: let the broker redeliver it instead.
        let back = BasicNackOptions { requeue: true, multiple: false };
        state.channel.basic_nack(tag, back).await?;
    }
    Ok(())
}

/// Forwards one shard's deliveries to the consumer actor, then reports the stream's end.
async fn forward(shard: usize, mut stream: lapin::Consumer, consumer: ActorRef<ConsumerMsg>) {
    let reason = loop {
        match stream.next().await {
            Some(Ok(delivery)) => {
                if consumer.cast(ConsumerMsg::Delivery { shard, delivery: Box::new(delivery) }).is_err() {
                    break String::from("consumer actor stopped");
                }
            }
            Some(Err(error)) => break error.to_string(),
            None => break String::from("consumer cancelled"),
        }
    };
    // Ignored if the actor is already stopping.
    let _ = consumer.cast(ConsumerMsg::StreamEnded { shard, reason });
}

/// Starts (or restarts) our consumer on `shard`.
async fn subscribe(
    myself: &ActorRef<ConsumerMsg>,
    state: &mut ConsumerState,
    shard: usize,
) -> Result<(), ActorProcessingErr> {
    let node = state.args.node_id.clone();
    let Some(s) = state.shards.get_mut(shard) else { return Ok(()) };
    if s.tag.is_some() || s.cancelling {
        return Ok(());
    }
    s.seq += 1;
    let tag = balance::consumer_tag(&node, shard, s.seq);
    let stream = state
        .channel
        .basic_consume(
            s.queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    s.tag = Some(stream.tag());
    s.forwarder = Some(tokio::spawn(forward(shard, stream, myself.clone())));
    Ok(())
}

/// Cancels our consumer on `shard`; its stream's end is reported as `StreamEnded`.
async fn cancel(state: &mut ConsumerState, shard: usize) -> Result<(), ActorProcessingErr> {
    let Some(s) = state.shards.get_mut(shard) else { return Ok(()) };
    let Some(tag) = s.tag.take() else { return Ok(()) };
    s.cancelling = true;
    state.channel.basic_cancel(tag, BasicCancelOptions::default()).await?;
    Ok(())
}

/// The span of one delivery's whole processing, continuing the trace whose context the
/// message headers carry (the api's publish).
fn job_span(
    event: &TransactionCreated,
    headers: Option<&FieldTable>,
    shard: Option<&Shard>,
) -> tracing::Span {
    let tx = &event.transaction;
    let span = tracing::info_span!(
        "process_transaction",
        component = "worker",
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.destination.name = shard.map(|s| s.queue.as_str()).unwrap_or_default(),
        transaction_id = %tx.transaction_id,
        account_id = %tx.account_id,
    );
    let parent = crate::telemetry::propagation::extract_amqp(headers);
    if opentelemetry::trace::TraceContextExt::has_active_span(&parent) {
        // Fails only without a tracing subscriber, when there is no trace to join.
        let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, parent);
    }
    span
}

/// Who consumes which shard, from the management API.
pub(crate) async fn fetch_views(
    http: &reqwest::Client,
    balance: &BalanceSettings,
    queues: &[String],
) -> Result<Vec<ShardView>, reqwest::Error> {
    let path = format!("consumers/{}", balance.vhost_path());
    let consumers: Vec<balance::ApiConsumer> = balance::management_get(http, balance, &path).await?;
    Ok(balance::views(queues, &consumers))
}

/// Applies this round's plan (see [`crate::balance`]).
async fn rebalance(
    myself: &ActorRef<ConsumerMsg>,
    state: &mut ConsumerState,
    views: &[ShardView],
) -> Result<(), ActorProcessingErr> {
    if views.len() != state.shards.len() {
        return Ok(());
    }
    let me = state.args.node_id.clone();
    let subscribed: Vec<bool> = state.shards.iter().map(|s| s.tag.is_some() || s.cancelling).collect();
    let plan = balance::plan(&me, views, &subscribed);
    for &shard in &plan.yield_active {
        // Only hand over a shard with nothing of it in flight here, so the next owner
        // cannot overtake work we are still doing for one of its accounts.
        if state.shards[shard].in_flight == 0 {
            tracing::info!(component = "consumer", shard, "yielding shard to a less loaded node");
            metrics::counter!("shard_handovers_total").increment(1);
            cancel(state, shard).await?;
        }
    }
    for &shard in &plan.withdraw {
        cancel(state, shard).await?;
    }
    for &shard in &plan.subscribe {
        subscribe(myself, state, shard).await?;
    }
    let mut owned = 0;
    for (shard, view) in views.iter().enumerate() {
        let active = view.active.as_deref() == Some(me.as_str());
        owned += usize::from(active);
        metrics::gauge!("worker_shard_active", "shard" => shard.to_string()).set(f64::from(u8::from(active)));
    }
    metrics::gauge!("worker_shards_owned").set(owned as f64);
    Ok(())
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

/// Keeps a stopped actor's warm window for the account's next actor, making room by dropping
/// the oldest hundredth when [`ConsumerArgs::max_parked`] is reached.
fn park(state: &mut ConsumerState, account_id: String, window: AccountWindow) {
    if window.version().is_none() || state.args.max_parked == 0 || state.args.window_park.is_zero() {
        return;
    }
    if state.parked.len() >= state.args.max_parked
        && let Some(cutoff) = oldest_hundredth(state.parked.values().map(|p| p.at), state.args.max_parked)
    {
        state.parked.retain(|_, p| p.at > cutoff);
    }
    state.parked.insert(account_id, Parked { window, at: Instant::now() });
    metrics::gauge!("worker_parked_windows").set(state.parked.len() as f64);
}

/// The instant at or before which the oldest hundredth of `times` lies (at least one of
/// them; a hundredth of `cap`): dropping everything up to it makes room in one go instead of
/// one scan per insertion. `None` when `times` is empty.
fn oldest_hundredth(times: impl Iterator<Item = Instant>, cap: usize) -> Option<Instant> {
    let mut times: Vec<Instant> = times.collect();
    let room = (cap / 100).max(1).min(times.len());
    let (_, cutoff, _) = times.select_nth_unstable(room.checked_sub(1)?);
    Some(*cutoff)
}

/// Answers a pending drain once every stream has ended and every delivery is acked.
fn finish_drain(state: &mut ConsumerState) {
    if state.shards.iter().all(|s| s.tag.is_none() && !s.cancelling)
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
        if state.accounts.len() >= state.args.max_accounts
            && let Some(cutoff) =
                oldest_hundredth(state.accounts.values().map(|e| e.last_used), state.args.max_accounts)
        {
            evict(state, "cap", |entry| entry.last_used <= cutoff);
        }
        let window = match state.parked.remove(account_id) {
            Some(parked) => {
                metrics::counter!("account_window_reuses_total").increment(1);
                parked.window
            }
            None => AccountWindow::default(),
        };
        let args = AccountArgs {
            account_id: account_id.to_owned(),
            windows: state.args.windows.clone(),
            scorer: state.args.scorer.clone(),
            window,
        };
        let (actor, _) = Actor::spawn_linked(None, AccountActor, args, myself.get_cell()).await?;
        state
            .accounts
            .insert(account_id.to_owned(), AccountEntry { actor: actor.clone(), last_used: Instant::now() });
        metrics::gauge!("worker_account_actors").increment(1.0);
        Ok(actor)
    }
}

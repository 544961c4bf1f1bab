//! The root supervisor: starts the pipeline and restarts it, with backoff, when any part fails.
//!
//! The strategy is one-for-all: the pipeline stages hold references to each other and the
//! consumer's channel owns every in-flight delivery, so the only restart that keeps the
//! promises is a fresh pipeline on a fresh channel, which returns whatever was in flight to
//! the queue (and every effect is idempotent, so reprocessing is harmless).

use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort, SupervisionEvent};

use crate::{
    alert::{AlertActor, AlertArgs},
    consumer::{ConsumerActor, ConsumerArgs, ConsumerMsg},
    features::WindowStore,
    scorer::{ScorerActor, ScorerArgs},
    scoring::Engine,
    settings::Settings,
    topology::Topology,
};

/// First restart delay; doubles per consecutive failure up to [`MAX_BACKOFF`].
pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// Longest restart delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A pipeline that ran this long without failing resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(30);

/// Messages the supervisor accepts.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// (Re)start the pipeline now.
    Start,
    /// Graceful stop, first half: stop consuming and answer once every in-flight delivery
    /// is committed and acked.
    Drain(RpcReplyPort<()>),
}

/// What the pipeline needs, shared by every generation of it.
#[derive(Debug, Clone)]
pub struct SupervisorArgs {
    /// The node's settings.
    pub settings: Settings,
    /// PostgreSQL pool.
    pub pool: Pool,
    /// Redis windows.
    pub windows: WindowStore,
    /// This node's id (in its consumer tags and metrics).
    pub node_id: String,
    /// Poked when alerts were committed (the outbox publisher waits on it).
    pub alerts_raised: std::sync::Arc<tokio::sync::Notify>,
    /// The live scoring engine (hot-reloaded rules and models).
    pub engine: tokio::sync::watch::Receiver<std::sync::Arc<Engine>>,
    /// The `transaction.scored` publisher, unless `PUBLISH_SCORED=false`.
    pub scored: Option<crate::scored::ScoredSender>,
}

/// Supervisor state.
pub struct SupervisorState {
    args: SupervisorArgs,
    children: Vec<ActorCell>,
    consumer: Option<ActorRef<ConsumerMsg>>,
    failures: u32,
    started_at: tokio::time::Instant,
}

/// Root of the tree.
#[derive(Debug, Default)]
pub struct Supervisor;

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<SupervisorState, ActorProcessingErr> {
        myself.cast(SupervisorMsg::Start)?;
        Ok(SupervisorState {
            args,
            children: Vec::new(),
            consumer: None,
            failures: 0,
            started_at: tokio::time::Instant::now(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::Start => {
                if let Err(error) = spawn_pipeline(&myself, state).await {
                    tracing::error!(component = "supervisor", %error, "pipeline failed to start");
                    restart_later(&myself, state).await;
                }
            }
            SupervisorMsg::Drain(reply) => match &state.consumer {
                Some(consumer) => {
                    if let Err(MessagingErr::SendErr(ConsumerMsg::Drain(reply))) =
                        consumer.cast(ConsumerMsg::Drain(reply))
                    {
                        let _ = reply.send(());
                    }
                }
                None => {
                    let _ = reply.send(());
                }
            },
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, error) => (cell, error.to_string()),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, reason.unwrap_or_else(|| "stopped".into()))
            }
            _ => return Ok(()),
        };
        // Events from a previous generation (which we stopped ourselves) are old news.
        if !state.children.iter().any(|c| c.get_id() == cell.get_id()) {
            return Ok(());
        }
        tracing::error!(component = "supervisor", actor = ?cell.get_name(), why, "pipeline actor exited; restarting pipeline");
        restart_later(&myself, state).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        stop_children(state).await;
        Ok(())
    }
}

/// Starts alert → scorer → consumer (sinks first, so nothing is sent to a missing actor).
async fn spawn_pipeline(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
) -> Result<(), ActorProcessingErr> {
    let args = &state.args;
    let sup = myself.get_cell();
    let alert_args = AlertArgs {
        pool: args.pool.clone(),
        batch_max: args.settings.commit.batch_max,
        batch_wait: args.settings.commit.batch_wait,
        node_id: args.node_id.clone(),
        alerts_raised: args.alerts_raised.clone(),
        scored: args.scored.clone(),
    };
    let (alert, _) = Actor::spawn_linked(None, AlertActor, alert_args, sup.clone()).await?;
    state.children.push(alert.get_cell());
    let scorer_args = ScorerArgs { engine: args.engine.clone(), alert };
    let (scorer, _) = Actor::spawn_linked(None, ScorerActor, scorer_args, sup.clone()).await?;
    state.children.push(scorer.get_cell());
    let consumer_args = ConsumerArgs {
        amqp: args.settings.amqp.clone(),
        topology: Topology::from_settings(&args.settings.amqp),
        windows: args.windows.clone(),
        scorer,
        account_idle: args.settings.accounts.idle,
        max_accounts: args.settings.accounts.max,
        window_park: args.settings.accounts.park,
        max_parked: args.settings.accounts.max_parked,
        node_id: args.node_id.clone(),
        balance: args.settings.amqp.balance.clone(),
    };
    let (consumer, _) = Actor::spawn_linked(None, ConsumerActor, consumer_args, sup).await?;
    state.children.push(consumer.get_cell());
    state.consumer = Some(consumer);
    state.started_at = tokio::time::Instant::now();
    tracing::info!(component = "supervisor", "pipeline started");
    Ok(())
}

/// Stops what is left of the pipeline and schedules a fresh one after the backoff.
async fn restart_later(myself: &ActorRef<SupervisorMsg>, state: &mut SupervisorState) {
    stop_children(state).await;
    if state.started_at.elapsed() > STABLE_AFTER {
        state.failures = 0;
    }
    let delay = backoff(state.failures);
    state.failures = state.failures.saturating_add(1);
    tracing::warn!(
        component = "supervisor",
        delay_ms = delay.as_millis() as u64,
        "pipeline restart scheduled"
    );
    myself.send_after(delay, || SupervisorMsg::Start);
}

/// Stops children downstream-last: the consumer first, so nothing new enters the pipeline.
async fn stop_children(state: &mut SupervisorState) {
    state.consumer = None;
    for cell in state.children.drain(..).rev() {
        let _ = cell.stop_and_wait(None, Some(Duration::from_secs(10))).await;
    }
}

/// Restart delay after `failures` consecutive failures: 100 ms, 200 ms, ... capped at 10 s.
pub fn backoff(failures: u32) -> Duration {
    crate::backoff::exponential(MIN_BACKOFF, MAX_BACKOFF, failures)
}

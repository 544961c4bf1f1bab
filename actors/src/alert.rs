//! The alert actor: the end of the pipeline. It group-commits decisions — transactions,
//! scores and, for HIGH risk, alerts — in one PostgreSQL transaction per batch, and only
//! then settles the batch's deliveries. A batch is every decision queued by the time the
//! actor gets to it, up to `COMMIT_BATCH_MAX`: a lone decision commits at once, and while a
//! commit runs the next batch collects in the mailbox, so batches grow exactly when load
//! does. `COMMIT_BATCH_WAIT_MS` > 0 adds a fixed wait for more after a batch's first
//! decision (fewer, larger commits for more latency).
//!
//! A commit that fails for a transient reason (PostgreSQL down or unreachable) is retried
//! here, with exponential backoff, holding the batch: nothing is acked, the consumer's
//! prefetch fills up and the broker stops delivering, so an outage applies back-pressure
//! instead of burning through the queue's delivery limit into the dead-letter queue.
//! A commit the database itself refuses (a row it will never accept) is retried item by
//! item; the items that still fail go round the delayed-retry path and, after `RETRY_MAX`
//! trips, to the dead-letter queue — so one poison row never blocks its shard.

use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::{
    job::{Job, Settlement},
    scoring::Decision,
    store,
};

/// Messages the alert actor accepts.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "Record is the hot message; boxing it would allocate per transaction"
)]
pub enum AlertMsg {
    /// Commit this decision (with the next batch) and then settle its delivery.
    Record {
        /// The delivery being decided.
        job: Job,
        /// The scorer's decision.
        decision: Decision,
    },
    /// The batch timer fired.
    Flush,
}

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct AlertArgs {
    /// PostgreSQL.
    pub pool: Pool,
    /// Largest batch per commit.
    pub batch_max: usize,
    /// Longest a decision waits for its batch to fill; zero commits whatever is queued.
    pub batch_wait: Duration,
    /// This node's id, recorded with every decision.
    pub node_id: String,
    /// Poked after a commit that raised alerts, so the outbox publishes them at once.
    pub alerts_raised: std::sync::Arc<tokio::sync::Notify>,
    /// Publishes `transaction.scored` for each committed batch and then acks it; `None`
    /// (`PUBLISH_SCORED=false`) acks right after the commit.
    pub scored: Option<crate::scored::ScoredSender>,
}

/// First delay before retrying a failed commit; doubles up to [`MAX_RETRY_DELAY`].
pub const MIN_RETRY_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between commit attempts.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// State: the batch being filled.
pub struct AlertState {
    args: AlertArgs,
    batch: Vec<(Job, Decision)>,
    timer_armed: bool,
    /// Consecutive failed commits; while non-zero, batches only flush on the retry timer.
    failures: u32,
}

/// Commits decisions in batches.
#[derive(Debug, Default)]
pub struct AlertActor;

impl Actor for AlertActor {
    type Msg = AlertMsg;
    type State = AlertState;
    type Arguments = AlertArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AlertArgs,
    ) -> Result<AlertState, ActorProcessingErr> {
        let batch = Vec::with_capacity(args.batch_max);
        Ok(AlertState { args, batch, timer_armed: false, failures: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: AlertMsg,
        state: &mut AlertState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AlertMsg::Record { job, decision } => {
                state.batch.push((job, decision));
                if state.failures == 0 && state.batch.len() >= state.args.batch_max {
                    flush(state).await;
                }
            }
            AlertMsg::Flush => {
                state.timer_armed = false;
                flush(state).await;
            }
        }
        if !state.batch.is_empty() && !state.timer_armed {
            state.timer_armed = true;
            let delay = match state.failures {
                0 => state.args.batch_wait,
                n => crate::backoff::exponential(MIN_RETRY_DELAY, MAX_RETRY_DELAY, n - 1),
            };
            if !delay.is_zero() {
                myself.send_after(delay, || AlertMsg::Flush);
            } else if myself.send_message(AlertMsg::Flush).is_err() {
                // Behind every decision already queued, so they all join this batch. Refused
                // only when the mailbox is closed: the actor is stopping and post_stop commits.
                state.timer_armed = false;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut AlertState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever is still buffered is committed before we go (graceful stop). If that
        // fails, the deliveries stay unacked and return to the queue when the channel closes.
        flush(state).await;
        Ok(())
    }
}

/// Commits the batch, then acks its deliveries. On failure the batch is kept for the next
/// attempt (see the module doc).
async fn flush(state: &mut AlertState) {
    if state.batch.is_empty() {
        return;
    }
    let rows: Vec<_> = state.batch.iter().map(|(job, decision)| decided(job, decision)).collect();
    // Each transaction's trace gets a span for the commit that made its decision durable;
    // the statements themselves appear under the first one's.
    let spans: Vec<_> = state.batch.iter().map(|(job, _)| commit_span(job, rows.len())).collect();
    let statements = spans.first().cloned().unwrap_or_else(tracing::Span::none);
    let started = std::time::Instant::now();
    let committed =
        store::record_decisions(&state.args.pool, &state.args.node_id, &rows).instrument(statements).await;
    drop(spans);
    match committed {
        Ok(recorded) => {
            if state.failures > 0 {
                tracing::info!(component = "alert", attempts = state.failures + 1, "commit succeeded again");
            }
            state.failures = 0;
            let batch = std::mem::take(&mut state.batch);
            metrics::histogram!("commit_batch_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("commit_batch_size").record(batch.len() as f64);
            for ((job, decision), recorded) in batch.iter().zip(&recorded) {
                account_for(job, decision, recorded);
            }
            if recorded.iter().any(|r| r.alert_id.is_some()) {
                state.args.alerts_raised.notify_one();
            }
            acknowledge(&state.args, batch, &recorded).await;
        }
        Err(error) if !error.is_transient() => {
            tracing::warn!(component = "alert", %error, size = state.batch.len(), "batch refused; committing one by one");
            metrics::counter!("commit_failures_total").increment(1);
            isolate(state).await;
        }
        Err(error) => {
            state.failures = state.failures.saturating_add(1);
            tracing::error!(
                component = "alert",
                %error,
                size = state.batch.len(),
                attempt = state.failures,
                "batch commit failed; will retry"
            );
            metrics::counter!("commit_failures_total").increment(1);
        }
    }
}

/// Commits the batch one decision at a time: what commits is acked, what the database
/// refuses goes round the delayed-retry path, what fails transiently stays for the next flush.
async fn isolate(state: &mut AlertState) {
    let batch = std::mem::take(&mut state.batch);
    let (mut committed, mut records, mut refused) = (Vec::new(), Vec::new(), Vec::new());
    let mut unrecorded = Vec::new();
    for (job, decision) in batch {
        let one = [decided(&job, &decision)];
        let recorded = store::record_decisions(&state.args.pool, &state.args.node_id, &one)
            .instrument(commit_span(&job, 1))
            .await;
        match recorded {
            Ok(recorded) => {
                // Committed either way; without a record (the store answers one per decision)
                // there is nothing to announce, but the delivery is still acked.
                let Some(recorded) = recorded.into_iter().next() else {
                    unrecorded.push(job);
                    continue;
                };
                account_for(&job, &decision, &recorded);
                if recorded.alert_id.is_some() {
                    state.args.alerts_raised.notify_one();
                }
                committed.push((job, decision));
                records.push(recorded);
            }
            Err(error) if error.is_transient() => {
                state.failures = state.failures.saturating_add(1);
                state.batch.push((job, decision));
            }
            Err(error) => {
                tracing::error!(
                    component = "alert",
                    transaction_id = job.transaction_id(),
                    %error,
                    "decision refused by the database; retrying later"
                );
                refused.push(job);
            }
        }
    }
    acknowledge(&state.args, committed, &records).await;
    Job::settle_all(unrecorded, Settlement::Ack);
    Job::settle_all(refused, Settlement::Retry);
}

/// Settles committed decisions: through the `transaction.scored` publisher when there is
/// one (it acks once the broker confirmed the events), else acks them at once.
async fn acknowledge(args: &AlertArgs, committed: Vec<(Job, Decision)>, recorded: &[store::Recorded]) {
    match &args.scored {
        Some(scored) => scored.publish(&args.node_id, committed, recorded).await,
        None => Job::settle_all(committed.into_iter().map(|(job, _)| job), Settlement::Ack),
    }
}

/// What the store records for one job.
fn decided<'a>(job: &'a Job, decision: &'a Decision) -> store::Decided<'a> {
    store::Decided { event: &job.event, decision, traceparent: job.traceparent.as_deref() }
}

/// The span, in `job`'s trace, of the commit that records it with `batch - 1` others.
fn commit_span(job: &Job, batch: usize) -> tracing::Span {
    tracing::info_span!(parent: &job.span, "commit decisions", component = "alert", db.system = "postgresql", batch)
}

/// Metrics and the alert log line for one committed decision.
fn account_for(job: &Job, decision: &Decision, recorded: &store::Recorded) {
    // Log lines go to the job's trace whichever job's message triggered the flush.
    let _in_trace = job.span.enter();
    let tx = &job.event.transaction;
    if recorded.new_transaction {
        let label = decision.risk_label.as_str();
        metrics::counter!("transactions_processed_total", "risk_label" => label).increment(1);
        let latency = (chrono::Utc::now() - job.event.received_at).to_std().unwrap_or_default();
        metrics::histogram!("transaction_processing_seconds").record(latency.as_secs_f64());
    } else {
        metrics::counter!("duplicate_deliveries_total").increment(1);
    }
    if let Some(alert_id) = recorded.alert_id {
        metrics::counter!("alerts_created_total", "risk_label" => decision.risk_label.as_str()).increment(1);
        tracing::info!(
            component = "alert",
            transaction_id = %tx.transaction_id,
            account_id = %tx.account_id,
            alert_id,
            score = decision.score,
            "alert raised"
        );
    }
}

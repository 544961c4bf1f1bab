//! The alert actor: the end of the pipeline. It group-commits decisions — transactions,
//! scores and, for HIGH risk, alerts — in one PostgreSQL transaction per batch (up to
//! `COMMIT_BATCH_MAX` decisions or `COMMIT_BATCH_WAIT_MS` after the first, whichever comes
//! first), and only then settles the batch's deliveries.

use std::time::Duration;

use deadpool_postgres::Pool;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{
    job::{Job, Settlement},
    scoring::Decision,
    store,
};

/// Messages the alert actor accepts.
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "Record is the hot message; boxing it would allocate per transaction")]
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
    /// Longest a decision waits for its batch to fill.
    pub batch_wait: Duration,
}

/// State: the batch being filled.
pub struct AlertState {
    args: AlertArgs,
    batch: Vec<(Job, Decision)>,
    timer_armed: bool,
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
        Ok(AlertState { args, batch, timer_armed: false })
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
                if state.batch.len() >= state.args.batch_max {
                    flush(state).await;
                } else if !state.timer_armed {
                    state.timer_armed = true;
                    myself.send_after(state.args.batch_wait, || AlertMsg::Flush);
                }
            }
            AlertMsg::Flush => {
                state.timer_armed = false;
                flush(state).await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut AlertState,
    ) -> Result<(), ActorProcessingErr> {
        // Whatever is still buffered is committed before we go (graceful stop).
        flush(state).await;
        Ok(())
    }
}

/// Commits the batch, then settles its deliveries: acked if committed, retried if not.
async fn flush(state: &mut AlertState) {
    if state.batch.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut state.batch);
    let pairs: Vec<_> = batch.iter().map(|(job, decision)| (&job.event, decision)).collect();
    let started = std::time::Instant::now();
    match store::record_decisions(&state.args.pool, &pairs).await {
        Ok(recorded) => {
            metrics::histogram!("commit_batch_seconds").record(started.elapsed().as_secs_f64());
            metrics::histogram!("commit_batch_size").record(batch.len() as f64);
            let now = chrono::Utc::now();
            for ((job, decision), recorded) in batch.iter().zip(&recorded) {
                let tx = &job.event.transaction;
                if recorded.new_transaction {
                    let label = decision.risk_label.as_str();
                    metrics::counter!("transactions_processed_total", "risk_label" => label).increment(1);
                    let latency = (now - job.event.received_at).to_std().unwrap_or_default();
                    metrics::histogram!("transaction_processing_seconds").record(latency.as_secs_f64());
                } else {
                    metrics::counter!("duplicate_deliveries_total").increment(1);
                }
                if let Some(alert_id) = recorded.alert_id {
                    metrics::counter!("alerts_created_total", "risk_label" => decision.risk_label.as_str())
                        .increment(1);
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
            Job::settle_all(batch.into_iter().map(|(job, _)| job), Settlement::Ack);
        }
        Err(error) => {
            tracing::error!(component = "alert", %error, size = batch.len(), "batch commit failed; deliveries retried");
            metrics::counter!("commit_failures_total").increment(1);
            Job::settle_all(batch.into_iter().map(|(job, _)| job), Settlement::Retry);
        }
    }
}

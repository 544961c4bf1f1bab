//! The scorer actor: pure CPU work (rules, Isolation Forest, regression), kept off the I/O
//! actors' mailboxes. It reads the newest [`Engine`] for every message, so an activated
//! rule set or model applies from the next transaction on.

use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::watch;

use crate::{alert::AlertMsg, features::Features, job::Job, scoring::Engine};

/// Messages the scorer accepts.
#[derive(Debug)]
pub enum ScorerMsg {
    /// Score this job on these features and pass the decision on.
    Score {
        /// The delivery being scored.
        job: Job,
        /// Features the account actor computed at the job's event time; `None` if the
        /// feature store was unavailable (the decision is then degraded).
        features: Option<Features>,
    },
}

/// Start-up arguments of the scorer.
#[derive(Debug, Clone)]
pub struct ScorerArgs {
    /// The live engine (rules, model, shadow), swapped on activation.
    pub engine: watch::Receiver<Arc<Engine>>,
    /// Where decisions go.
    pub alert: ActorRef<AlertMsg>,
}

/// Scores jobs and forwards decisions to the alert actor.
#[derive(Debug, Default)]
pub struct ScorerActor;

impl Actor for ScorerActor {
    type Msg = ScorerMsg;
    type State = ScorerArgs;
    type Arguments = ScorerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ScorerArgs,
    ) -> Result<ScorerArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: ScorerMsg,
        state: &mut ScorerArgs,
    ) -> Result<(), ActorProcessingErr> {
        let ScorerMsg::Score { job, features } = msg;
        let tx = &job.event.transaction;
        let engine = state.engine.borrow().clone();
        let started = std::time::Instant::now();
        // ractor runs this handler inside the job's span: this one is its child.
        let span = tracing::info_span!(
            "score",
            component = "scorer",
            model_version = %engine.model.version,
            rules_version = %engine.rules.version,
            risk_label = tracing::field::Empty,
            score = tracing::field::Empty,
        );
        let decision = span.in_scope(|| engine.decide(tx, features.as_ref()));
        span.record("risk_label", decision.risk_label.as_str());
        span.record("score", decision.score);
        drop(span);
        metrics::histogram!("model_scoring_seconds").record(started.elapsed().as_secs_f64());
        let degraded = if decision.degraded { "true" } else { "false" };
        metrics::counter!("decisions_total", "risk_label" => decision.risk_label.as_str(), "degraded" => degraded)
            .increment(1);
        // If the alert actor is gone the supervisor is restarting the pipeline; the
        // unacked delivery comes back when the consumer's channel closes.
        if let Err(error) = state.alert.cast(AlertMsg::Record { job, decision }) {
            return Err(format!("alert actor unavailable: {error}").into());
        }
        Ok(())
    }
}

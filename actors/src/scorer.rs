//! The scorer actor: pure CPU work, kept off the I/O actors' mailboxes.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{alert::AlertMsg, features::Features, job::Job, scoring::RuleScorer};

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
    /// The model.
    pub scorer: RuleScorer,
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
        let decision = match &features {
            Some(features) => state.scorer.score(tx, features),
            None => state.scorer.score_degraded(tx),
        };
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

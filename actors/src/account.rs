//! Per-account actors: one per active account, so one account's transactions are handled
//! strictly in order while different accounts proceed in parallel.

use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{features::WindowStore, job::Job, scorer::ScorerMsg};

/// Messages an account actor accepts.
#[derive(Debug)]
pub enum AccountMsg {
    /// Add this transaction to the account's windows and send it on for scoring.
    Observe(Job),
}

/// Start-up arguments (also the state: the actor keeps nothing else in memory).
#[derive(Debug, Clone)]
pub struct AccountArgs {
    /// The account this actor owns.
    pub account_id: String,
    /// The Redis windows.
    pub windows: WindowStore,
    /// Where jobs go next.
    pub scorer: ActorRef<ScorerMsg>,
}

/// Keeps one account's sliding windows.
#[derive(Debug, Default)]
pub struct AccountActor;

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountArgs;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: AccountArgs,
    ) -> Result<AccountArgs, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: AccountMsg,
        state: &mut AccountArgs,
    ) -> Result<(), ActorProcessingErr> {
        let AccountMsg::Observe(job) = msg;
        match state.windows.observe(&job.event.transaction).await {
            Ok(features) => {
                if let Err(error) = state.scorer.cast(ScorerMsg::Score { job, features }) {
                    return Err(format!("scorer unavailable: {error}").into());
                }
            }
            Err(error) => {
                tracing::warn!(component = "account", account_id = %state.account_id, %error, "window update failed");
                job.retry("redis window update failed").await;
            }
        }
        Ok(())
    }
}

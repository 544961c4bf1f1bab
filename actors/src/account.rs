//! Per-account actors: one per active account, so one account's transactions are handled
//! strictly in order while different accounts proceed in parallel. Each keeps its account's
//! window entries in memory ([`AccountWindow`]): Redis records every transaction, but the
//! features of a warm account are computed here, without reading its window back.

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::{
    features::{AccountWindow, WindowStore},
    job::Job,
    scorer::ScorerMsg,
};

/// Messages an account actor accepts.
#[derive(Debug)]
pub enum AccountMsg {
    /// Add this transaction to the account's windows and send it on for scoring.
    Observe(Job),
}

/// Start-up arguments.
#[derive(Debug, Clone)]
pub struct AccountArgs {
    /// The account this actor owns.
    pub account_id: String,
    /// The Redis windows.
    pub windows: WindowStore,
    /// Where jobs go next.
    pub scorer: ActorRef<ScorerMsg>,
    /// The window a previous actor of this account left (parked by the consumer), or an
    /// empty, cold one. Redis' version check decides whether it is still current.
    pub window: AccountWindow,
}

/// What an account actor holds.
#[derive(Debug)]
pub struct AccountState {
    /// What it was started with.
    pub args: AccountArgs,
    /// Its account's window entries, in step with Redis.
    pub window: AccountWindow,
}

/// Keeps one account's sliding windows.
#[derive(Debug, Default)]
pub struct AccountActor;

impl Actor for AccountActor {
    type Msg = AccountMsg;
    type State = AccountState;
    type Arguments = AccountArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        mut args: AccountArgs,
    ) -> Result<AccountState, ActorProcessingErr> {
        // A parked window is checked against Redis' version on the first write; a cold one
        // is brought from Redis by that write.
        let window = std::mem::take(&mut args.window);
        Ok(AccountState { args, window })
    }

    fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: AccountMsg,
        state: &mut AccountState,
    ) -> impl Future<Output = Result<(), ActorProcessingErr>> + Send {
        // Boxed: ractor keeps each actor's handler future inside the actor's task for the
        // actor's whole life, and this one (the job, the Redis call, the features) is
        // kilobytes. Inline, every idle account actor would carry it; boxed, only the ones
        // busy with a payment do (docs/benchmarks.md, memory).
        let AccountMsg::Observe(job) = msg;
        Box::pin(observe(job, state))
    }
}

/// Updates the account's windows with the job's transaction and passes it on for scoring.
async fn observe(job: Job, state: &mut AccountState) -> Result<(), ActorProcessingErr> {
    // ractor runs this handler inside the job's span (it was current when the job was sent).
    let windows = tracing::info_span!(
        "redis windows",
        component = "account",
        otel.kind = "client",
        db.system = "redis",
        db.operation.name = "EVALSHA",
    );
    let AccountState { args, window } = state;
    let observed = args.windows.observe_with(window, &job.event.transaction).instrument(windows).await;
    let features = match observed {
        Ok(features) => Some(features),
        Err(error) => {
            // Users want a decision in the payment path more than a perfect one: score on
            // the transaction's own rules, flag the decision degraded, and count it.
            tracing::warn!(
                component = "account",
                account_id = %args.account_id,
                transaction_id = job.transaction_id(),
                %error,
                "feature store unavailable; scoring degraded"
            );
            None
        }
    };
    if let Err(error) = args.scorer.cast(ScorerMsg::Score { job, features }) {
        return Err(format!("scorer unavailable: {error}").into());
    }
    Ok(())
}

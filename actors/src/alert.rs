//! The alert actor: the end of the pipeline. It commits the transaction, its score and,
//! for HIGH risk, an alert in one PostgreSQL transaction, and only then acks the delivery.

use deadpool_postgres::Pool;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::{job::Job, scoring::Decision, store};

/// Messages the alert actor accepts.
#[derive(Debug)]
pub enum AlertMsg {
    /// Commit this decision and settle its delivery.
    Record {
        /// The delivery being decided.
        job: Job,
        /// The scorer's decision.
        decision: Decision,
    },
}

/// Commits decisions; stateless apart from its pool.
#[derive(Debug, Default)]
pub struct AlertActor;

impl Actor for AlertActor {
    type Msg = AlertMsg;
    type State = Pool;
    type Arguments = Pool;

    async fn pre_start(&self, _myself: ActorRef<Self::Msg>, pool: Pool) -> Result<Pool, ActorProcessingErr> {
        Ok(pool)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: AlertMsg,
        pool: &mut Pool,
    ) -> Result<(), ActorProcessingErr> {
        let AlertMsg::Record { job, decision } = msg;
        match store::record_decision(pool, &job.event, &decision).await {
            Ok(recorded) => {
                let tx = &job.event.transaction;
                if recorded.new_transaction {
                    let label = decision.risk_label.as_str();
                    metrics::counter!("transactions_processed_total", "risk_label" => label).increment(1);
                    let latency = (chrono::Utc::now() - job.event.received_at).to_std().unwrap_or_default();
                    metrics::histogram!("transaction_processing_seconds").record(latency.as_secs_f64());
                } else {
                    metrics::counter!("duplicate_deliveries_total").increment(1);
                }
                if recorded.alert_id.is_some() {
                    metrics::counter!("alerts_created_total", "risk_label" => decision.risk_label.as_str())
                        .increment(1);
                }
                if let Some(alert_id) = recorded.alert_id {
                    tracing::info!(
                        component = "alert",
                        transaction_id = %tx.transaction_id,
                        account_id = %tx.account_id,
                        alert_id,
                        score = decision.score,
                        "alert raised"
                    );
                }
                tracing::debug!(
                    component = "alert",
                    transaction_id = %tx.transaction_id,
                    risk_label = decision.risk_label.as_str(),
                    duplicate = !recorded.new_transaction,
                    "decision committed"
                );
                job.ack().await;
            }
            Err(error) => {
                tracing::error!(component = "alert", transaction_id = job.transaction_id(), %error, "commit failed");
                job.retry("database commit failed").await;
            }
        }
        Ok(())
    }
}

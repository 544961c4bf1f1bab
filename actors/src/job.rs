//! The unit of work that travels down the actor pipeline, with the means to settle its
//! delivery once (and only once) the outcome is known.

use lapin::{
    Acker,
    options::{BasicAckOptions, BasicNackOptions},
};

use crate::events::TransactionCreated;

/// One delivery of `transaction.created`, decoded.
#[derive(Debug)]
pub struct Job {
    /// The decoded event.
    pub event: TransactionCreated,
    /// Settles the delivery on the channel it came from.
    acker: Acker,
    /// Whether the broker has delivered it before (a retry or a takeover).
    pub redelivered: bool,
}

impl Job {
    /// Pairs an event with its delivery's acker.
    pub fn new(event: TransactionCreated, acker: Acker, redelivered: bool) -> Self {
        Self { event, acker, redelivered }
    }

    /// The client's transaction id, for logs.
    pub fn transaction_id(&self) -> &str {
        &self.event.transaction.transaction_id
    }

    /// Acknowledges: call only after the results are committed.
    pub async fn ack(self) {
        settle_ack(&self.acker, self.transaction_id()).await;
    }

    /// Hands the delivery back to the broker for another attempt. The queue's delivery
    /// limit dead-letters a message that keeps failing, so this cannot loop forever.
    pub async fn retry(self, why: &str) {
        tracing::warn!(transaction_id = self.transaction_id(), why, "delivery returned for retry");
        settle_nack(&self.acker, true).await;
    }
}

/// Acks a delivery; a failure only means the channel is gone and the broker will redeliver.
pub(crate) async fn settle_ack(acker: &Acker, transaction_id: &str) {
    if let Err(error) = acker.ack(BasicAckOptions::default()).await {
        tracing::warn!(transaction_id, %error, "ack failed; the broker will redeliver");
    }
}

/// Nacks a delivery, back to the queue (`requeue`) or to the dead-letter exchange.
pub(crate) async fn settle_nack(acker: &Acker, requeue: bool) {
    let options = BasicNackOptions { requeue, ..BasicNackOptions::default() };
    if let Err(error) = acker.nack(options).await {
        tracing::warn!(%error, "nack failed; the broker will redeliver");
    }
}

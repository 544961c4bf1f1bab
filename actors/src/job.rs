//! The unit of work that travels down the actor pipeline, and how its delivery is settled.
//!
//! A job does not ack itself: it reports to the consumer that owns its channel, which acks
//! with `multiple = true` up to the highest tag below which every delivery is settled
//! (one ack frame for a whole committed batch), and nacks individually what must be retried.

use ractor::ActorRef;

use crate::{consumer::ConsumerMsg, events::TransactionCreated};

/// One delivery of `transaction.created`, decoded.
#[derive(Debug)]
pub struct Job {
    /// The decoded event.
    pub event: TransactionCreated,
    /// The delivery's tag on the consumer's channel.
    pub tag: u64,
    /// The consumer that owns the channel the delivery came on.
    consumer: ActorRef<ConsumerMsg>,
    /// The job's span (`process_transaction`), a child of the api's trace; it ends when
    /// the job is settled and dropped. Actors work inside it, so their spans join the trace.
    pub span: tracing::Span,
    /// That span's W3C `traceparent`, stored with the transaction.
    pub traceparent: Option<String>,
}

/// How a batch of deliveries is to be settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Results committed: acknowledge.
    Ack,
    /// A transient failure: hand back to the broker for another attempt (the queue's
    /// delivery limit dead-letters a message that keeps failing).
    Retry,
}

impl Job {
    /// A job for delivery `tag` on `consumer`'s channel, traced by `span`.
    pub fn new(
        event: TransactionCreated,
        tag: u64,
        consumer: ActorRef<ConsumerMsg>,
        span: tracing::Span,
    ) -> Self {
        let traceparent = crate::telemetry::propagation::traceparent(&span);
        Self { event, tag, consumer, span, traceparent }
    }

    /// The client's transaction id, for logs.
    pub fn transaction_id(&self) -> &str {
        &self.event.transaction.transaction_id
    }

    /// Settles every job in `jobs` the same way, one message per consumer.
    pub fn settle_all(jobs: impl IntoIterator<Item = Job>, how: Settlement) {
        let mut by_consumer: Vec<(ActorRef<ConsumerMsg>, Vec<u64>)> = Vec::new();
        for job in jobs {
            match by_consumer.iter_mut().find(|(c, _)| c.get_id() == job.consumer.get_id()) {
                Some((_, tags)) => tags.push(job.tag),
                None => by_consumer.push((job.consumer, vec![job.tag])),
            }
        }
        for (consumer, tags) in by_consumer {
            // A consumer that is gone took its channel with it: the broker redelivers.
            let _ = consumer.cast(ConsumerMsg::Settle { tags, how });
        }
    }
}

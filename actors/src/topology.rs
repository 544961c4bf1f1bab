//! The RabbitMQ topology: names derived from one prefix, declared idempotently by every
//! process at start-up so publishing works before any worker has run.
//!
//! ```text
//! {p}transactions (topic) ──transaction.created──▶ {p}transactions.created (quorum,
//!                                                   x-delivery-limit, dead-letters to ▼)
//! {p}dead-letter (fanout) ───────────────────────▶ {p}transactions.dead (quorum)
//! {p}alerts (topic)  ◀── alert.<risk> (for downstream consumers)
//! ```

use lapin::{
    Channel, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

/// Routing key of newly accepted transactions.
pub const TRANSACTION_CREATED: &str = "transaction.created";

/// The names of everything this deployment declares on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange the api publishes transactions to.
    pub transactions_exchange: String,
    /// Durable quorum queue the workers consume.
    pub created_queue: String,
    /// Fanout exchange receiving rejected and over-delivered messages.
    pub dead_letter_exchange: String,
    /// Durable queue holding dead letters for inspection and replay.
    pub dead_letter_queue: String,
    /// Topic exchange alerts are published to (routing key `alert.<risk>`).
    pub alerts_exchange: String,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: u32,
}

impl Topology {
    /// Derives every name from `prefix` (e.g. `fraudsense.`).
    pub fn new(prefix: &str, delivery_limit: u32) -> Self {
        Self {
            transactions_exchange: format!("{prefix}transactions"),
            created_queue: format!("{prefix}transactions.created"),
            dead_letter_exchange: format!("{prefix}dead-letter"),
            dead_letter_queue: format!("{prefix}transactions.dead"),
            alerts_exchange: format!("{prefix}alerts"),
            delivery_limit,
        }
    }

    /// Declares exchanges, queues and bindings. Safe to call from any number of processes:
    /// redeclaring with the same arguments is a no-op on the broker.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for (name, kind) in [
            (&self.transactions_exchange, ExchangeKind::Topic),
            (&self.dead_letter_exchange, ExchangeKind::Fanout),
            (&self.alerts_exchange, ExchangeKind::Topic),
        ] {
            channel.exchange_declare(name.as_str().into(), kind, durable, FieldTable::default()).await?;
        }

        let mut created_args = quorum();
        created_args
            .insert("x-delivery-limit".into(), AMQPValue::LongLongInt(i64::from(self.delivery_limit)));
        created_args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange.as_str())),
        );
        self.queue(
            channel,
            &self.created_queue,
            created_args,
            &self.transactions_exchange,
            TRANSACTION_CREATED,
        )
        .await?;
        self.queue(channel, &self.dead_letter_queue, quorum(), &self.dead_letter_exchange, "").await
    }

    async fn queue(
        &self,
        channel: &Channel,
        name: &str,
        args: FieldTable,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), lapin::Error> {
        let options = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare(name.into(), options, args).await?;
        channel
            .queue_bind(
                name.into(),
                exchange.into(),
                ShortString::from(routing_key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args
}

//! The RabbitMQ topology, as data: names derived from one prefix, declared idempotently by
//! every process at start-up (so publishing works before any worker has run) and exported as
//! a management-UI definitions file (`infra/rabbitmq/definitions.json`) from the same list.
//!
//! ```text
//!                                              ┌─▶ {p}shard.0 ┐ quorum, single-active-consumer,
//! api ─transaction.created─▶ {p}transactions ──▶ {p}transactions.shards ─┼─▶ {p}shard.1 ┤ x-delivery-limit,
//!      (header x-shard-key)   (topic; other       (x-consistent-hash on    └─▶ …         ┘ dead-letter to ▼
//!                              consumers bind)      the x-shard-key header)
//! {p}dead-letter (fanout) ─────────────────────────────────────────────▶ {p}transactions.dead (quorum)
//! {p}alerts (topic) ◀── alert.<risk> (for downstream consumers)
//! ```
//!
//! Hashing the shard key (the account by default) onto a fixed set of shard queues, each
//! with one active consumer at a time, is what gives "one owner per account, in order"
//! across any number of worker nodes.

use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
        QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString},
};
use serde_json::{Value, json};

use crate::settings::AmqpSettings;

/// Opens a broker connection from `AMQP_URL`: every process connects through here.
///
/// `amqps://` (default port 5671) uses TLS: rustls with the ring provider, trusting the system's
/// CAs and the certificates of `AMQP_CA_FILE`, and checking the host name. A TLS URL never
/// falls back to plain TCP: an untrusted or missing certificate fails the connection.
pub async fn connect_amqp(settings: &AmqpSettings) -> Result<Connection, lapin::Error> {
    use secrecy::ExposeSecret;
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: settings.ca_file.as_ref().map(|ca| ca.pem().to_owned()),
    };
    Connection::connect_with_config(
        settings.url.expose_secret(),
        ConnectionProperties::default(),
        tls,
        lapin::runtime::default_runtime()?,
    )
    .await
}

/// Routing key of newly accepted transactions.
pub const TRANSACTION_CREATED: &str = "transaction.created";
/// Message header carrying the value transactions are sharded on.
pub const SHARD_KEY_HEADER: &str = "x-shard-key";

/// The names of everything this deployment declares on the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Topic exchange the api publishes transactions to (others may bind to it too).
    pub transactions_exchange: String,
    /// Consistent-hash exchange spreading transactions over the shard queues.
    pub shard_exchange: String,
    /// Shard queue names, `{p}shard.0` … `{p}shard.{n-1}`.
    pub shard_queues: Vec<String>,
    /// Fanout exchange receiving rejected and over-delivered messages.
    pub dead_letter_exchange: String,
    /// Durable queue holding dead letters for inspection and replay.
    pub dead_letter_queue: String,
    /// Topic exchange alerts are published to (routing key `alert.<risk>`).
    pub alerts_exchange: String,
    /// Fanout exchange for messages to try again later.
    pub retry_exchange: String,
    /// Holds retried messages for `retry_delay_ms`, then dead-letters them back to the
    /// transactions exchange (and so to the same shard).
    pub retry_queue: String,
    /// Delay before a retried message comes back.
    pub retry_delay_ms: u32,
    /// Deliveries before a message is dead-lettered.
    pub delivery_limit: u32,
}

/// One exchange: name, type, arguments.
type ExchangeDef<'a> = (&'a str, &'static str, Vec<(&'static str, Value)>);
/// One queue: name, arguments.
type QueueDef<'a> = (&'a str, Vec<(&'static str, Value)>);
/// One binding: source exchange, destination, destination is an exchange, routing key.
type BindingDef<'a> = (&'a str, &'a str, bool, &'a str);

impl Topology {
    /// Names for `prefix` (e.g. `fraudsense.`) with `shards` shard queues.
    pub fn new(prefix: &str, shards: u16, delivery_limit: u32, retry_delay_ms: u32) -> Self {
        Self {
            transactions_exchange: format!("{prefix}transactions"),
            shard_exchange: format!("{prefix}transactions.shards"),
            shard_queues: (0..shards).map(|i| format!("{prefix}shard.{i}")).collect(),
            dead_letter_exchange: format!("{prefix}dead-letter"),
            dead_letter_queue: format!("{prefix}transactions.dead"),
            alerts_exchange: format!("{prefix}alerts"),
            retry_exchange: format!("{prefix}retry"),
            retry_queue: format!("{prefix}transactions.retry"),
            retry_delay_ms,
            delivery_limit,
        }
    }

    /// The topology the settings describe.
    pub fn from_settings(amqp: &AmqpSettings) -> Self {
        Self::new(&amqp.prefix, amqp.shards, amqp.delivery_limit, amqp.retry_delay_ms)
    }

    fn exchanges(&self) -> Vec<ExchangeDef<'_>> {
        vec![
            (&self.transactions_exchange, "topic", vec![]),
            (&self.shard_exchange, "x-consistent-hash", vec![("hash-header", json!(SHARD_KEY_HEADER))]),
            (&self.dead_letter_exchange, "fanout", vec![]),
            (&self.alerts_exchange, "topic", vec![]),
            (&self.retry_exchange, "fanout", vec![]),
        ]
    }

    fn queues(&self) -> Vec<QueueDef<'_>> {
        let shard_args = || {
            vec![
                ("x-queue-type", json!("quorum")),
                ("x-single-active-consumer", json!(true)),
                ("x-delivery-limit", json!(self.delivery_limit)),
                ("x-dead-letter-exchange", json!(self.dead_letter_exchange)),
            ]
        };
        let mut queues: Vec<QueueDef<'_>> =
            self.shard_queues.iter().map(|q| (q.as_str(), shard_args())).collect();
        queues.push((&self.dead_letter_queue, vec![("x-queue-type", json!("quorum"))]));
        // A plain delay line: nobody consumes it; expiry sends messages back for another try.
        queues.push((
            &self.retry_queue,
            vec![
                ("x-message-ttl", json!(self.retry_delay_ms)),
                ("x-dead-letter-exchange", json!(self.transactions_exchange)),
                ("x-dead-letter-routing-key", json!(TRANSACTION_CREATED)),
            ],
        ));
        queues
    }

    fn bindings(&self) -> Vec<BindingDef<'_>> {
        let mut bindings = vec![(
            self.transactions_exchange.as_str(),
            self.shard_exchange.as_str(),
            true,
            TRANSACTION_CREATED,
        )];
        // In a consistent-hash exchange the routing key is the queue's weight.
        bindings
            .extend(self.shard_queues.iter().map(|q| (self.shard_exchange.as_str(), q.as_str(), false, "1")));
        bindings.push((&self.dead_letter_exchange, &self.dead_letter_queue, false, ""));
        bindings.push((&self.retry_exchange, &self.retry_queue, false, ""));
        bindings
    }

    /// Declares exchanges, queues and bindings. Safe to call from any number of processes:
    /// redeclaring with the same arguments is a no-op on the broker.
    pub async fn declare(&self, channel: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        for (name, kind, args) in self.exchanges() {
            let kind = match kind {
                "topic" => ExchangeKind::Topic,
                "fanout" => ExchangeKind::Fanout,
                other => ExchangeKind::Custom(other.into()),
            };
            channel.exchange_declare(name.into(), kind, durable, field_table(&args)).await?;
        }
        let durable = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        for (name, args) in self.queues() {
            channel.queue_declare(name.into(), durable, field_table(&args)).await?;
        }
        for (source, destination, to_exchange, key) in self.bindings() {
            if to_exchange {
                channel
                    .exchange_bind(
                        destination.into(),
                        source.into(),
                        key.into(),
                        ExchangeBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            } else {
                channel
                    .queue_bind(
                        destination.into(),
                        source.into(),
                        key.into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// A connection ([`connect_amqp`]) and a confirm-mode channel on it, with this topology
    /// declared: what every publisher in the worker starts from.
    pub async fn open_confirming(&self, amqp: &AmqpSettings) -> Result<(Connection, Channel), lapin::Error> {
        let connection = connect_amqp(amqp).await?;
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        self.declare(&channel).await?;
        Ok((connection, channel))
    }

    /// Waits (at most `timeout`) for the broker to confirm every publish of a batch: an
    /// error names what went wrong (no confirm in time, a nack, a lost channel).
    pub async fn confirm_all(
        confirms: Vec<lapin::PublisherConfirm>,
        timeout: std::time::Duration,
    ) -> Result<(), String> {
        let confirmed = tokio::time::timeout(timeout, futures_util::future::join_all(confirms))
            .await
            .map_err(|_| "no confirm in time".to_owned())?;
        for confirm in confirmed {
            if matches!(confirm.map_err(|e| e.to_string())?, lapin::Confirmation::Nack(_)) {
                return Err("nacked by the broker".into());
            }
        }
        Ok(())
    }

    /// The same topology as a RabbitMQ definitions document (management UI "import").
    pub fn definitions(&self, vhost: &str) -> Value {
        let args = |a: &[(&str, Value)]| {
            Value::Object(a.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect())
        };
        json!({
            "vhosts": [{ "name": vhost }],
            "exchanges": self.exchanges().iter().map(|(name, kind, a)| json!({
                "name": name, "vhost": vhost, "type": kind, "durable": true, "auto_delete": false,
                "internal": false, "arguments": args(a),
            })).collect::<Vec<_>>(),
            "queues": self.queues().iter().map(|(name, a)| json!({
                "name": name, "vhost": vhost, "durable": true, "auto_delete": false, "arguments": args(a),
            })).collect::<Vec<_>>(),
            "bindings": self.bindings().iter().map(|(source, destination, to_exchange, key)| json!({
                "source": source, "vhost": vhost, "destination": destination,
                "destination_type": if *to_exchange { "exchange" } else { "queue" },
                "routing_key": key, "arguments": {},
            })).collect::<Vec<_>>(),
        })
    }
}

/// AMQP arguments from JSON values (strings, booleans and integers are all we use).
fn field_table(args: &[(&str, Value)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in args {
        let value = match value {
            Value::Bool(b) => AMQPValue::Boolean(*b),
            Value::Number(n) => AMQPValue::LongLongInt(n.as_i64().unwrap_or_default()),
            Value::String(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            _ => AMQPValue::Void,
        };
        table.insert((*key).into(), value);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_numbered_and_bound_with_weight_one() {
        let t = Topology::new("x.", 3, 5, 1000);
        assert_eq!(t.shard_queues, ["x.shard.0", "x.shard.1", "x.shard.2"]);
        let defs = t.definitions("/");
        let bound: Vec<_> = defs["bindings"]
            .as_array()
            .map(|b| b.iter().filter(|b| b["source"] == "x.transactions.shards").collect())
            .unwrap_or_default();
        assert_eq!(bound.len(), 3);
        assert!(bound.iter().all(|b| b["routing_key"] == "1"));
        let q = &defs["queues"][0]["arguments"];
        assert_eq!(
            (q["x-single-active-consumer"].as_bool(), q["x-delivery-limit"].as_u64()),
            (Some(true), Some(5))
        );
    }
}

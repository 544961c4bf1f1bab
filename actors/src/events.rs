//! The wire contract: what travels over RabbitMQ between the api and the workers.
//!
//! Every body carries `schema_version`; consumers accept the versions they know and
//! dead-letter the rest instead of guessing.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{scoring::Decision, transaction::Transaction};

/// Current version of [`TransactionCreated`].
pub const TRANSACTION_CREATED_VERSION: u32 = 1;
/// Current version of [`TransactionScored`].
pub const TRANSACTION_SCORED_VERSION: u32 = 1;

/// Published by the api once a transaction passed validation (`transaction.created`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionCreated {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// The validated transaction.
    pub transaction: Transaction,
    /// The request body exactly as the client sent it, stored as JSONB for audits.
    pub raw: Value,
    /// When the api accepted it (processing time, as opposed to the event time inside).
    pub received_at: DateTime<Utc>,
}

/// Why a message body could not be turned into an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes are not a well-formed event.
    #[error("malformed message body: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A version this build does not understand.
    #[error("unsupported schema_version {0}")]
    UnsupportedVersion(u32),
}

impl TransactionCreated {
    /// Wraps a freshly validated transaction.
    pub fn new(transaction: Transaction, raw: Value, received_at: DateTime<Utc>) -> Self {
        Self { schema_version: TRANSACTION_CREATED_VERSION, transaction, raw, received_at }
    }

    /// Decodes a message body, refusing versions this build does not know.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let event: Self = serde_json::from_slice(body)?;
        if event.schema_version != TRANSACTION_CREATED_VERSION {
            return Err(DecodeError::UnsupportedVersion(event.schema_version));
        }
        Ok(event)
    }
}

/// Published by a worker once a decision is committed (`transaction.scored`, on the
/// transactions exchange), before the delivery it answers is acked: at least once. A
/// redelivered transaction is published again with `redelivered` set; consumers keep the
/// first event per `transaction_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransactionScored {
    /// Version of this message's schema.
    pub schema_version: u32,
    /// The transaction as it was accepted.
    pub transaction: Transaction,
    /// The committed decision: score, label, reasons, features and contributions, versions.
    pub decision: Decision,
    /// The alert this decision raised, when it raised one.
    pub alert_id: Option<i64>,
    /// True when the transaction had already been recorded (a redelivery): the stored
    /// decision from the first delivery is the one of record.
    pub redelivered: bool,
    /// When the api accepted the transaction.
    pub received_at: DateTime<Utc>,
    /// When the worker committed the decision.
    pub decided_at: DateTime<Utc>,
    /// The worker node that decided it.
    pub node_id: String,
}

impl TransactionScored {
    /// Decodes a message body, refusing versions this build does not know. Unknown fields
    /// are ignored: later minor versions may add some.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        let event: Self = serde_json::from_slice(body)?;
        if event.schema_version != TRANSACTION_SCORED_VERSION {
            return Err(DecodeError::UnsupportedVersion(event.schema_version));
        }
        Ok(event)
    }
}

//! The idempotency backstop, batched: for ids whose Redis entry has expired, PostgreSQL's
//! copy of the raw body decides whether a request repeats an earlier one.
//!
//! Every new transaction needs this lookup, so doing one query per request cost a round trip
//! (parse, bind, execute) and a PostgreSQL backend wake-up each: 15 % of the api's CPU at
//! 1,000 tx/s (docs/benchmarks.md). Here every request queues its id and one task turns
//! whatever is queued into one `transaction_id = ANY($1)` query on a prepared statement.
//! Nothing waits on a timer: a lone request is looked up at once, and while queries are
//! running the next batch collects by itself, so batches grow exactly when load does.

use std::sync::Arc;

use deadpool_postgres::Pool;
use fraudsense_actors::store::{self, StoreError};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Most ids in one query.
const MAX_BATCH: usize = 512;
/// Queries running at once (each holds one pooled connection).
const CONCURRENT_QUERIES: usize = 2;
/// Requests that may wait for a batch; beyond that a request waits to queue.
const QUEUE: usize = 4096;

/// Why a lookup has no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackstopError {
    /// The batch's query failed (shared by every request in the batch).
    #[error(transparent)]
    Store(Arc<StoreError>),
    /// The batching task is gone (the api is shutting down).
    #[error("the idempotency backstop stopped")]
    Stopped,
}

/// What a lookup answers: the stored raw body, if the transaction was recorded.
pub type Lookup = Result<Option<Value>, BackstopError>;

type Request = (String, oneshot::Sender<Lookup>);

/// Handle on the batching task; cheap to clone. The task ends when the last handle drops.
#[derive(Clone)]
pub struct Backstop {
    requests: mpsc::Sender<Request>,
}

impl Backstop {
    /// Starts the batching task on `pool`.
    pub fn start(pool: Pool) -> Self {
        let (requests, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, queue));
        Self { requests }
    }

    /// The raw body stored for `transaction_id`, looked up together with every other
    /// request's id queued at the same time.
    pub async fn raw_payload(&self, transaction_id: &str) -> Lookup {
        let (reply, answer) = oneshot::channel();
        self.requests.send((transaction_id.to_owned(), reply)).await.map_err(|_| BackstopError::Stopped)?;
        answer.await.map_err(|_| BackstopError::Stopped)?
    }
}

async fn run(pool: Pool, mut queue: mpsc::Receiver<Request>) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_QUERIES));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Wait for a free query slot first: while both are busy, requests pile up and
        // the next batch is bigger.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else { return };
        if queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
            return;
        }
        let pool = pool.clone();
        let requests = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
        tokio::spawn(async move {
            let _slot = slot;
            answer(&pool, requests).await;
        });
    }
}

async fn answer(pool: &Pool, requests: Vec<Request>) {
    let ids: Vec<&str> = requests.iter().map(|(id, _)| id.as_str()).collect();
    metrics::histogram!("idempotency_backstop_batch_size").record(ids.len() as f64);
    match store::raw_payloads(pool, &ids).await {
        Ok(found) => {
            for (id, reply) in requests {
                let _ = reply.send(Ok(found.get(&id).cloned()));
            }
        }
        Err(error) => {
            let error = BackstopError::Store(Arc::new(error));
            for (_, reply) in requests {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

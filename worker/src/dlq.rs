//! `fraudsense-worker dlq …`: the dead-letter queue from the command line
//! ([`fraudsense_actors::dlq`]). Replays and purges are recorded in the audit trail as
//! `cli:<login>`.

use fraudsense_actors::{Settings, auth::Principal, store};

pub use fraudsense_actors::dlq::DeadLetter;

/// Up to `limit` dead letters, oldest first, left in place.
pub async fn list(settings: &Settings, limit: usize) -> anyhow::Result<Vec<DeadLetter>> {
    Ok(fraudsense_actors::dlq::peek(&settings.amqp, limit).await?.1)
}

/// Replays up to `limit` dead letters; returns how many.
pub async fn replay(settings: &Settings, limit: usize) -> anyhow::Result<usize> {
    let pool = store::connect(&settings.database)?;
    let actor = Principal::command_line();
    Ok(fraudsense_actors::dlq::replay_audited(&pool, &settings.amqp, limit, &actor).await?)
}

/// Deletes every dead letter; returns how many there were.
pub async fn purge(settings: &Settings) -> anyhow::Result<u32> {
    let pool = store::connect(&settings.database)?;
    let actor = Principal::command_line();
    Ok(fraudsense_actors::dlq::purge_audited(&pool, &settings.amqp, &actor).await?)
}

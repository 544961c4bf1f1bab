//! Resident memory of idle account actors: spawns N of them (as the consumer does, linked to
//! a parent, each with its Redis window store) and prints what the process's resident set
//! grew by, per actor. With one actor per active account, this number times the active
//! accounts is most of a worker's memory (the target: 100,000 accounts in 512 MiB).
//!
//! `cargo bench -p fraudsense-actors --bench actor_memory` (needs the local Redis only to
//! build the client; the actors stay idle).

use std::time::Instant;

use fraudsense_actors::{
    account::{AccountActor, AccountArgs},
    features::WindowStore,
    scorer::ScorerMsg,
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Where the account actors would send jobs; nothing is sent in this benchmark.
struct Sink;

impl Actor for Sink {
    type Msg = ScorerMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ScorerMsg>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

/// The consumer's role here: the actors' supervisor.
struct Parent;

impl Actor for Parent {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, (): ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Spawns 10,000, then 50,000, then 100,000 actors with `spawn`, printing the resident set's
/// growth per actor at each step; returns them (alive).
async fn spawn_many<F, Fut>(label: &str, mut spawn: F) -> anyhow::Result<Vec<ractor::ActorCell>>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<ractor::ActorCell, ractor::SpawnErr>>,
{
    let base = resident_bytes();
    let mut actors = Vec::new();
    for target in [10_000usize, 50_000, 100_000] {
        let started = Instant::now();
        let before = actors.len();
        while actors.len() < target {
            actors.push(spawn(actors.len()).await?);
        }
        let spawn_us = started.elapsed().as_secs_f64() * 1e6 / (target - before) as f64;
        let grown = resident_bytes().saturating_sub(base);
        println!(
            "{label:<36} {target:>9} {:>14.1} {:>16.2} {spawn_us:>10.2}",
            resident_bytes() as f64 / f64::from(1 << 20),
            grown as f64 / 1024.0 / target as f64,
        );
    }
    Ok(actors)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = fraudsense_actors::Settings::from_env()?;
    let redis = fraudsense_actors::connect_redis(&settings.redis).await?;
    let windows = WindowStore::new(redis, "bench-actor-memory:", &settings.scoring);
    let (sink, _) = Actor::spawn(None, Sink, ()).await?;
    println!(
        "{:<36} {:>9} {:>14} {:>16} {:>10}",
        "actor", "actors", "resident MiB", "KiB per actor", "spawn µs"
    );
    // The floor: ractor's own cost for an actor that holds and does nothing.
    let (empty_parent, _) = Actor::spawn(None, Parent, ()).await?;
    let empty = spawn_many("empty ractor actor (the floor)", |_| {
        let parent = empty_parent.get_cell();
        async move { Actor::spawn_linked(None, Parent, (), parent).await.map(|(a, _)| a.get_cell()) }
    })
    .await?;
    let (account_parent, _) = Actor::spawn(None, Parent, ()).await?;
    let accounts = spawn_many("account actor (idle, cold window)", |n| {
        let args = AccountArgs {
            account_id: format!("acct-{n:07}"),
            windows: windows.clone(),
            scorer: sink.clone(),
            window: Default::default(),
        };
        let parent = account_parent.get_cell();
        async move { Actor::spawn_linked(None, AccountActor, args, parent).await.map(|(a, _)| a.get_cell()) }
    })
    .await?;
    for actor in empty.iter().chain(&accounts) {
        actor.stop(None);
    }
    Ok(())
}

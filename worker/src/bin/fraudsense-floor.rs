//! `fraudsense-floor` (`make bench-floor`): what RabbitMQ, PostgreSQL and Redis alone cost per
//! transaction for the operations FraudSense's promises require, at fixed open-loop rates
//! (see `fraudsense_worker::bench::floor`). Needs the local services, not the api or worker;
//! run it with the stack idle, since the servers' CPU figures include all their work.
//!
//! Exit codes: 0 every run completed, 2 misuse (bad flag), 1 anything else.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use fraudsense_worker::{
    bench::{ceiling, floor},
    load::{self, MAX_DURATION_SECS},
};

/// The same allocator as the other binaries.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "The services' floor: RabbitMQ, PostgreSQL and Redis doing only what the promises require \
             per transaction (claim, confirmed persistent publish to quorum shards, window update, \
             group commit, transaction.scored, ack), driven open-loop with no FraudSense process in the path"
)]
struct Cli {
    /// Offered rates, tx/s, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1000.0, 3000.0])]
    rates: Vec<f64>,
    /// Seconds of sending per run.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Accounts the transactions are spread over.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    accounts: u64,
    /// Shard queues (default: AMQP_SHARDS, as the pipeline).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
    /// Type of the shard queues (the pipeline declares quorum queues).
    #[arg(long, value_enum, default_value_t = floor::QueueType::Quorum)]
    queue_type: floor::QueueType,
    /// Also write the reports as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    if let Some(bad) = cli.rates.iter().find(|r| !(r.is_finite() && **r > 0.0 && **r <= 100_000.0)) {
        eprintln!("fraudsense-floor: --rates: {bad} is not a rate in (0, 100000]");
        return ExitCode::from(2);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fraudsense-floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let (settings, _telemetry) = load::tool_setup("floor", None)?;
    let body = ceiling::sample_event(cli.accounts as usize, chrono::Utc::now())?;
    let mut reports = Vec::new();
    for &rate in &cli.rates {
        let config = floor::FloorConfig {
            rate,
            duration: Duration::from_secs(cli.duration),
            accounts: cli.accounts,
            shards: cli.shards.unwrap_or(settings.amqp.shards),
            queue_type: cli.queue_type,
            body: body.clone(),
        };
        eprintln!(
            "floor: {rate} tx/s for {} s on {} {:?} shard queues",
            cli.duration, config.shards, config.queue_type
        );
        let report =
            floor::run(&settings, &config).await.with_context(|| format!("the run at {rate} tx/s"))?;
        reports.push(report);
    }
    print!("{}", floor::table(&reports));
    if let Some(path) = cli.json {
        let json = serde_json::to_string_pretty(&reports)?;
        std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

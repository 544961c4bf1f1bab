//! `fraudsense-load`: open-loop load generator for a local FraudSense api (see
//! `fraudsense_worker::load`). Prints a table (stdout), optionally writes the same report as
//! JSON; progress and warnings go to stderr.
//!
//! Exit codes: 0 the run completed (even with request errors: it is a measuring tool),
//! 2 misuse (bad flag, non-local target), 3 the api was unreachable before the run,
//! 1 anything else that stopped the run from starting (configuration, PostgreSQL).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use fraudsense_actors::store;
use fraudsense_worker::load::{self, ApiTarget, LoadConfig, LoadError, MAX_DURATION_SECS, RateLimit};

/// mimalloc instead of glibc malloc: allocation-heavy async code spent a quarter of its CPU in
/// glibc's allocator under load (docs/benchmarks.md, profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Open-loop load generator for a local FraudSense api: constant arrival rate, \
             POST / decision / alert latency percentiles"
)]
struct Cli {
    /// The api (only 127.0.0.1, localhost or [::1]).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token with the ingest and analyst roles (default: one minted with the
    /// configured HS256 secret, as `make load` / `make bench` provide).
    #[arg(long, env = "FRAUDSENSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Requests per second, sent on schedule whether or not earlier ones answered.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending (at most 3600).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    duration: u64,
    /// Accounts payments are drawn from (keep rate × 60 / accounts well under RATE_LIMIT_PER_ACCOUNT).
    #[arg(long, default_value_t = 10_000)]
    accounts: usize,
    /// Merchants payments are drawn from.
    #[arg(long, default_value_t = 500)]
    merchants: usize,
    /// Fraction (0..1) of payments built to be HIGH risk (amounts of 10,000-50,000).
    #[arg(long, default_value_t = 0.05)]
    fraud_mix: f64,
    /// PostgreSQL the api and workers write to (default: DATABASE_URL, as the other binaries).
    #[arg(long)]
    database_url: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// HTTP connections the requests share.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    /// Most requests outstanding at once (default 10 × rate, at least 100); more are not sent
    /// and count as errors.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Seconds to wait after the last response for decisions and alerts.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Seconds to wait for one response.
    #[arg(long, default_value_t = 30)]
    request_timeout: u64,
    /// Prefix of this run's transaction ids (default: load-<UTC time to the ms>).
    #[arg(long)]
    run_id: Option<String>,
    /// Seed of the payment sequence.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also sample this worker's /metrics every second (resident memory, live account
    /// actors) and report them, e.g. http://127.0.0.1:9100 (only this machine).
    #[arg(long)]
    watch_worker: Option<String>,
    /// Every this many seconds, move on to a fresh pool of --accounts account ids (the
    /// memory soak: idle actors must be stopped for memory to stay flat).
    #[arg(long)]
    account_churn_secs: Option<u64>,
    /// First account number (account ids are load-acc-<number>): another base pays from
    /// accounts no earlier run used.
    #[arg(long, default_value_t = 0)]
    account_base: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fraudsense-load: {error:#}");
            ExitCode::from(LoadError::exit_code(&error))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = ApiTarget::parse(&cli.api)?;
    let (mut settings, _telemetry) = load::tool_setup("load", cli.database_url)?;
    let ttl = Duration::from_secs(cli.duration + cli.drain_timeout + 600);
    let token = load::tool_token(&settings, "fraudsense-load", cli.token, ttl)?;
    let config = LoadConfig {
        token: Some(token),
        accounts: cli.accounts,
        merchants: cli.merchants,
        fraud_mix: cli.fraud_mix,
        connections: cli.connections,
        max_in_flight: cli.max_in_flight,
        request_timeout: Duration::from_secs(cli.request_timeout),
        drain_timeout: Duration::from_secs(cli.drain_timeout),
        run_id: cli.run_id.unwrap_or_else(|| load::default_run_id(chrono::Utc::now())),
        seed: cli.seed,
        rate_limit: Some(RateLimit::of(&settings.http)),
        watch_worker: cli
            .watch_worker
            .as_deref()
            .map(|w| ApiTarget::parse_flag(w, "--watch-worker"))
            .transpose()?,
        account_churn: cli.account_churn_secs.map(Duration::from_secs),
        account_base: cli.account_base,
        ..LoadConfig::new(api, cli.rate, Duration::from_secs(cli.duration))
    };
    config.validate()?;
    for warning in load::warnings(&config) {
        eprintln!("warning: {warning}");
    }
    settings.database.pool_size = settings.database.pool_size.clamp(1, 4);
    // Its decision poll is a keyed lookup too (see `connect_for_lookups`).
    let pool = store::connect_for_lookups(&settings.database).context("building the PostgreSQL pool")?;
    let report = load::run(config, pool).await?;
    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(&path, report.to_json() + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
        eprintln!("JSON report written to {}", path.display());
    }
    Ok(())
}

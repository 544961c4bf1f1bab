//! `fraudsense-bench` (`make bench`): steps the load generator's offered rate up until the
//! local stack saturates, measures the broker's raw ceiling in the same run, and prints the
//! steps, the sustained rate and its ratio to the ceiling (see `fraudsense_worker::bench`).
//!
//! Exit codes: 0 the run completed (saturation is a result, not a failure), 2 misuse (bad
//! flag, non-local target), 3 the api was unreachable, 1 anything else.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use fraudsense_actors::{store, topology::Topology};
use fraudsense_worker::{
    bench::{self, BenchReport, Increment, QUEUE_DRAIN_TIMEOUT, StepPlan, StepResult, Thresholds},
    load::{self, ApiTarget, LoadConfig, LoadError, MAX_DURATION_SECS, RateLimit},
};

/// mimalloc instead of glibc malloc: allocation-heavy async code spent a quarter of its CPU in
/// glibc's allocator under load (docs/benchmarks.md, profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Saturation benchmark of the local FraudSense stack: rising open-loop load until it \
             saturates, plus the broker's raw ceiling (lapin, confirms, manual acks) for comparison"
)]
struct Cli {
    /// The api (only 127.0.0.1, localhost or [::1]).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api: String,
    /// Bearer token with the ingest and analyst roles (default: one minted with the
    /// configured HS256 secret, as `make load` / `make bench` provide).
    #[arg(long, env = "FRAUDSENSE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Offered rate of the first step, tx/s.
    #[arg(long, default_value_t = 250.0)]
    start_rate: f64,
    /// Added to the offered rate at each step, tx/s.
    #[arg(long, default_value_t = 250.0, conflicts_with = "step_factor")]
    step: f64,
    /// Multiply the offered rate by this factor (> 1) at each step instead of adding --step.
    #[arg(long)]
    step_factor: Option<f64>,
    /// Highest offered rate, tx/s.
    #[arg(long, default_value_t = 5000.0)]
    max_rate: f64,
    /// Seconds of sending per step.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=MAX_DURATION_SECS))]
    step_duration: u64,
    /// Accounts payments are drawn from (keep rate × 60 / accounts well under RATE_LIMIT_PER_ACCOUNT).
    #[arg(long, default_value_t = 100_000)]
    accounts: usize,
    /// Merchants payments are drawn from (few merchants make every merchant busy, which the
    /// bootstrap model reads as risk: 500 merchants gave 70-90 % HIGH decisions).
    #[arg(long, default_value_t = 100_000)]
    merchants: usize,
    /// Fraction (0..1) of payments built to be HIGH risk.
    #[arg(long, default_value_t = 0.01)]
    fraud_mix: f64,
    /// Seconds each step may drain (decisions and alerts) after its last response.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Messages of the raw ceiling measurement (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    ceiling_messages: u64,
    /// PostgreSQL the api and workers write to (default: DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fraudsense-bench: {error:#}");
            ExitCode::from(LoadError::exit_code(&error))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = ApiTarget::parse(&cli.api)?;
    let increment = cli.step_factor.map_or(Increment::Add(cli.step), Increment::Factor);
    let plan = StepPlan { start: cli.start_rate, increment, max: cli.max_rate };
    if let Some(reason) = plan.problem() {
        return Err(LoadError::Invalid { flag: "--start-rate/--step/--max-rate", reason }.into());
    }
    let (mut settings, _telemetry) = load::tool_setup("bench", cli.database_url)?;
    let token = load::tool_token(&settings, "fraudsense-bench", cli.token, Duration::from_secs(6 * 3600))?;
    // Every step pays from accounts no step and no earlier run used, so no step inherits the
    // windows (and the velocity) of the one before: the mix of decisions stays what the
    // generator builds instead of drifting towards HIGH.
    let fresh = usize::try_from(chrono::Utc::now().timestamp() % 1_000_000).unwrap_or(0) * 100_000_000;
    let step_config = |rate: f64, step: usize| LoadConfig {
        accounts: cli.accounts,
        merchants: cli.merchants,
        fraud_mix: cli.fraud_mix,
        account_base: fresh + step * cli.accounts,
        drain_timeout: Duration::from_secs(cli.drain_timeout),
        run_id: format!("bench-{}-r{rate:.0}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ")),
        rate_limit: Some(RateLimit::of(&settings.http)),
        token: Some(token.clone()),
        ..LoadConfig::new(api.clone(), rate, Duration::from_secs(cli.step_duration))
    };
    let rates = plan.rates();
    // Check every step's configuration before anything runs.
    for (i, &rate) in rates.iter().enumerate() {
        step_config(rate, i).validate()?;
    }
    let last = rates.len().saturating_sub(1);
    if let Some(warning) =
        rates.last().and_then(|&r| load::warnings(&step_config(r, last)).into_iter().next())
    {
        eprintln!("warning (highest step): {warning}");
    }
    let shard_queues = Topology::from_settings(&settings.amqp).shard_queues;
    settings.database.pool_size = settings.database.pool_size.clamp(1, 4);
    // Its decision poll is a keyed lookup too (see `connect_for_lookups`).
    let pool = store::connect_for_lookups(&settings.database).context("building the PostgreSQL pool")?;

    let started = chrono::Utc::now();
    let mut report = BenchReport {
        api: api.http_base().to_owned(),
        started_at: started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        step_duration_secs: cli.step_duration,
        accounts: cli.accounts,
        plan,
        thresholds: Thresholds::default(),
        steps: Vec::new(),
        sustained_rate: None,
        ceiling: None,
        ratio_to_ceiling: None,
        warnings: Vec::new(),
    };

    // The raw ceiling first, while the pipeline is idle.
    if cli.ceiling_messages > 0 {
        let body = bench::ceiling::sample_event(cli.accounts, started)?;
        eprintln!(
            "raw ceiling: {} persistent messages of {} B through a temporary quorum queue ...",
            cli.ceiling_messages,
            body.len()
        );
        match bench::ceiling::measure(&settings.amqp, cli.ceiling_messages, &body).await {
            Ok(ceiling) => {
                eprintln!(
                    "raw ceiling: publish {:.0} msg/s, consume {:.0} msg/s",
                    ceiling.publish_rate, ceiling.consume_rate
                );
                report.ceiling = Some(ceiling);
            }
            Err(error) => report.warnings.push(format!("raw ceiling not measured: {error:#}")),
        }
    }

    for (i, &rate) in rates.iter().enumerate() {
        let left = bench::queues::wait_empty(&settings.amqp, &shard_queues, QUEUE_DRAIN_TIMEOUT)
            .await
            .context("looking at the shard queues")?;
        if left > 0 {
            report.warnings.push(format!(
                "before the {rate:.0} tx/s step {left} messages were still queued after {} s",
                QUEUE_DRAIN_TIMEOUT.as_secs()
            ));
        }
        eprintln!("step {}/{}: {rate:.0} tx/s for {} s ...", i + 1, rates.len(), cli.step_duration);
        let load_report = load::run(step_config(rate, i), pool.clone()).await?;
        for warning in &load_report.warnings {
            report.warnings.push(format!("{rate:.0} tx/s: {warning}"));
        }
        let mut step = StepResult::from_report(&load_report);
        step.saturated_by = report.thresholds.saturation(&step);
        eprintln!(
            "step {}: accepted {:.1} tx/s, decided {:.1} tx/s, backlog {}, errors {} -> {}",
            i + 1,
            step.accepted_rate,
            step.decided_rate_during_send,
            step.backlog_at_send_end,
            step.errors,
            if step.saturated() { step.saturated_by.join("; ") } else { "ok".into() }
        );
        let saturated = step.saturated();
        report.steps.push(step);
        if saturated {
            break;
        }
    }
    report.finish();

    print!("{}", report.table());
    if let Some(path) = cli.json {
        std::fs::write(&path, report.to_json() + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
        eprintln!("JSON report written to {}", path.display());
    }
    Ok(())
}

//! `fraudsense-worker`: run a worker node, train/evaluate/activate models, replay
//! decisions, or manage the dead-letter queue.

use std::path::PathBuf;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use fraudsense_actors::{
    Settings, iforest, model::FitParams, signal::shutdown_signal, store::catalog::ModelStatus,
    synth::SynthConfig, telemetry,
};
use fraudsense_worker::{
    Node, dlq,
    models::{self, Activate, LabelOptions, SyntheticOptions},
};

/// mimalloc instead of glibc malloc: allocation-heavy async code spent a quarter of its CPU in
/// glibc's allocator under load (docs/benchmarks.md, profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "FraudSense worker node: consumes transactions and scores them")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker node (the default).
    Run,
    /// Prepare the database and exit: apply pending migrations, then install and activate
    /// the shipped bootstrap model if no model is active (what `MIGRATE_ON_START` does at
    /// start-up; a cluster runs this once per release instead).
    Migrate,
    /// Print the RabbitMQ topology for the current settings as a definitions document
    /// (what `infra/rabbitmq/definitions.json` holds for the defaults).
    Topology {
        /// Virtual host the definitions are for.
        #[arg(long, default_value = "/")]
        vhost: String,
    },
    /// Inspect, replay or purge the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Train a model: on a generated history (default) or on stored decisions and labels
    /// (`--from-labels`); evaluate it on the latest days, store it, activate it if better.
    Train(TrainArgs),
    /// Evaluate a stored model version (default: the active one) on a generated history or
    /// on stored labelled decisions, and compare a shadow model with the active one.
    Evaluate {
        /// The version (default: the active model).
        #[arg(long)]
        version: Option<String>,
        /// Evaluate on stored labelled decisions of the last `--label-days` instead of generated data.
        #[arg(long)]
        from_labels: bool,
        /// Days of stored decisions (with `--from-labels`).
        #[arg(long, default_value_t = 30)]
        label_days: u32,
        #[command(flatten)]
        data: DataArgs,
    },
    /// List model versions, or change which one is active or in shadow.
    Models {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Recompute stored decisions with the model and rule-set versions they record and
    /// report any that come out different.
    Replay {
        /// Start of the period (event time, RFC 3339).
        #[arg(long)]
        from: DateTime<Utc>,
        /// End of the period (exclusive).
        #[arg(long)]
        to: DateTime<Utc>,
    },
}

#[derive(Args)]
struct DataArgs {
    /// Seed of the generated history.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Accounts in the generated history.
    #[arg(long, default_value_t = 400)]
    accounts: usize,
    /// Merchants in the generated history.
    #[arg(long, default_value_t = 150)]
    merchants: usize,
    /// Days of generated history.
    #[arg(long, default_value_t = 28)]
    days: u32,
}

impl DataArgs {
    fn config(&self) -> SynthConfig {
        SynthConfig {
            seed: self.seed,
            accounts: self.accounts,
            merchants: self.merchants,
            days: self.days,
            ..SynthConfig::default()
        }
    }
}

#[derive(Args)]
struct TrainArgs {
    /// Learn from the stored feature vectors and labels instead of generated data.
    #[arg(long)]
    from_labels: bool,
    /// Days of stored decisions to learn from (with `--from-labels`).
    #[arg(long, default_value_t = 90)]
    label_days: u32,
    /// Most recent days held out for evaluation (with `--from-labels`).
    #[arg(long, default_value_t = 7)]
    eval_days: u32,
    /// Labelled rows needed for a supervised part (fewer: only the forest is refit).
    #[arg(long, default_value_t = 200)]
    min_labels: usize,
    /// Fraud labels needed among them.
    #[arg(long, default_value_t = 20)]
    min_fraud: usize,
    /// When to activate the new version.
    #[arg(long, value_enum, default_value_t = Activate::IfBetter)]
    activate: Activate,
    /// Version tag (default: derived from the source and the time).
    #[arg(long)]
    version: Option<String>,
    /// Also write the model package (artifact, training facts, metrics) to this file
    /// (generated data only).
    #[arg(long, conflicts_with = "from_labels")]
    output: Option<PathBuf>,
    /// Do not store the model in PostgreSQL (with `--output`: produce a file only; generated
    /// data only).
    #[arg(long, conflicts_with = "from_labels")]
    no_store: bool,
    /// Trees of the Isolation Forest.
    #[arg(long, default_value_t = 100)]
    trees: usize,
    /// Rows per tree of the Isolation Forest.
    #[arg(long, default_value_t = 256)]
    sample_size: usize,
    /// Retrain again every this many hours (a long-running scheduled retrainer).
    #[arg(long)]
    every_hours: Option<u64>,
    #[command(flatten)]
    data: DataArgs,
}

#[derive(Subcommand)]
enum ModelAction {
    /// Print every version with its status, training facts and metrics.
    List,
    /// Make a version the active model (workers switch within ENGINE_REFRESH_MS).
    Activate {
        /// The version.
        version: String,
    },
    /// Score a version in shadow beside the active one (stored, never acted on).
    Shadow {
        /// The version.
        version: String,
    },
    /// Take a version out of use.
    Retire {
        /// The version.
        version: String,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// Print dead letters as JSON lines, oldest first, without removing them.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Send dead letters back for processing (each removed only after the broker confirmed it).
    Replay {
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Delete every dead letter.
    Purge,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env().context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let _telemetry = telemetry::init("worker", settings.log_format, &settings.tracing);
            let node = Node::start(settings).await?;
            node.run_until(shutdown_signal()).await;
        }
        Command::Migrate => {
            let _telemetry = telemetry::init("worker", settings.log_format, &settings.tracing);
            let pool = fraudsense_actors::store::connect(&settings.database)?;
            let applied = fraudsense_actors::store::migrate(&pool).await.context("applying migrations")?;
            fraudsense_actors::store::catalog::ensure_active_model(&pool)
                .await
                .context("installing the bootstrap model")?;
            tracing::info!(?applied, "database ready: migrations applied, a model is active");
        }
        Command::Topology { vhost } => {
            let topology = fraudsense_actors::topology::Topology::from_settings(&settings.amqp);
            println!("{}", serde_json::to_string_pretty(&topology.definitions(&vhost))?);
        }
        Command::Train(args) => {
            let _telemetry = telemetry::init("worker", settings.log_format, &settings.tracing);
            loop {
                let params = FitParams {
                    forest: iforest::Params {
                        trees: args.trees,
                        sample_size: args.sample_size,
                        ..iforest::Params::default()
                    },
                    min_labels: args.min_labels,
                    min_fraud: args.min_fraud,
                    ..FitParams::default()
                };
                let report = if args.from_labels {
                    let options = LabelOptions {
                        days: args.label_days,
                        eval_days: args.eval_days,
                        params,
                        version: args.version.clone(),
                        activate: args.activate,
                    };
                    models::train_from_labels(&settings, &options).await
                } else {
                    let options = SyntheticOptions {
                        data: args.data.config(),
                        params,
                        version: args.version.clone(),
                        output: args.output.clone(),
                        store: !args.no_store,
                        activate: args.activate,
                    };
                    models::train_synthetic(&settings, &options).await
                };
                let Some(hours) = args.every_hours else {
                    println!("{}", report?);
                    break;
                };
                // Scheduled: a failed round is reported and the next one tried.
                match report {
                    Ok(report) => println!("{report}"),
                    Err(error) => {
                        tracing::error!(error = format!("{error:#}"), "scheduled retraining failed")
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(hours.max(1) * 3600)) => {}
                    () = shutdown_signal() => break,
                }
            }
        }
        Command::Evaluate { version, from_labels, label_days, data } => {
            let config = data.config();
            let synthetic = (!from_labels).then_some(&config);
            println!("{}", models::evaluate(&settings, version.as_deref(), synthetic, label_days).await?);
        }
        Command::Models { action } => {
            let out = match action {
                ModelAction::List => models::list(&settings).await?,
                ModelAction::Activate { version } => {
                    models::set_status(&settings, &version, ModelStatus::Active).await?
                }
                ModelAction::Shadow { version } => {
                    models::set_status(&settings, &version, ModelStatus::Shadow).await?
                }
                ModelAction::Retire { version } => {
                    models::set_status(&settings, &version, ModelStatus::Retired).await?
                }
            };
            println!("{out}");
        }
        Command::Replay { from, to } => {
            let report = models::replay(&settings, from, to).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            if !report.differing.is_empty() {
                anyhow::bail!("{} decision(s) came out different", report.differing.len());
            }
        }
        Command::Dlq { action } => match action {
            DlqAction::List { limit } => {
                for letter in dlq::list(&settings, limit).await? {
                    println!("{}", serde_json::to_string(&letter)?);
                }
            }
            DlqAction::Replay { limit } => {
                let n = dlq::replay(&settings, limit).await?;
                eprintln!("replayed {n} dead letter(s)");
            }
            DlqAction::Purge => {
                let n = dlq::purge(&settings).await?;
                eprintln!("purged {n} dead letter(s)");
            }
        },
    }
    Ok(())
}

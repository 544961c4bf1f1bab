//! `fraudsense-worker`: run a worker node, or manage the dead-letter queue.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fraudsense_actors::{Settings, signal::shutdown_signal, telemetry};
use fraudsense_worker::{Node, dlq};

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
            telemetry::init("worker", settings.log_format);
            let node = Node::start(settings).await?;
            node.run_until(shutdown_signal()).await;
        }
        Command::Topology { vhost } => {
            let topology = fraudsense_actors::topology::Topology::from_settings(&settings.amqp);
            println!("{}", serde_json::to_string_pretty(&topology.definitions(&vhost))?);
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

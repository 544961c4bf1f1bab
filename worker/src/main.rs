//! `fraudsense-worker`: run a worker node.

use anyhow::Context;
use clap::Parser;
use fraudsense_actors::{Settings, signal::shutdown_signal, telemetry};
use fraudsense_worker::Node;

#[derive(Parser)]
#[command(version, about = "FraudSense worker node: consumes transactions and scores them")]
struct Cli {}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    let settings = Settings::from_env().context("invalid configuration")?;
    telemetry::init("worker", settings.log_format);
    let node = Node::start(settings).await?;
    node.run_until(shutdown_signal()).await;
    Ok(())
}

//! `fraudsense-api`: serve the HTTP edge, or apply migrations and exit.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fraudsense_actors::{Settings, signal::shutdown_signal, store, telemetry};
use fraudsense_api::Application;

/// mimalloc instead of glibc malloc: allocation-heavy async code spent a quarter of its CPU in
/// glibc's allocator under load (docs/benchmarks.md, profile).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "FraudSense HTTP api")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the api (the default).
    Serve,
    /// Apply pending database migrations, install the bootstrap model if no model is
    /// active, and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env().context("invalid configuration")?;
    let telemetry = telemetry::init("api", settings.log_format, &settings.tracing);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
        }
        Command::Migrate => {
            let pool = store::connect(&settings.database)?;
            let applied = store::migrate(&pool).await.context("applying migrations")?;
            store::catalog::ensure_active_model(&pool).await.context("installing the bootstrap model")?;
            tracing::info!(?applied, "database ready: migrations applied, a model is active");
        }
    }
    drop(telemetry);
    Ok(())
}

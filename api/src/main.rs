//! `fraudsense-api`: serve the HTTP edge, apply migrations, or print a development token.

use anyhow::Context;
use clap::{Parser, Subcommand};
use fraudsense_actors::{
    Settings,
    auth::{self, Role},
    signal::shutdown_signal,
    store, telemetry,
};
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
    /// Print a development token signed with the HS256 secret (`AUTH_HS256_SECRET` or
    /// `AUTH_HS256_SECRET_FILE`), alone on the last line. Production tokens come from your
    /// identity provider.
    Token {
        /// The role the token grants (repeat for several).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<Role>,
        /// Who the token names: the author recorded in the audit trail.
        #[arg(long, default_value = "dev")]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        ttl: u64,
    },
}

fn parse_role(value: &str) -> Result<Role, String> {
    Role::parse(value).ok_or_else(|| format!("{value:?} is not a role: ingest, analyst or admin"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::from_env().context("invalid configuration")?;
    if let Some(Command::Token { roles, sub, ttl }) = &cli.command {
        // No telemetry: the token alone goes to stdout, nothing to the logs.
        let claims = auth::claims(&settings.auth, sub, roles, std::time::Duration::from_secs(*ttl));
        let token = auth::mint(&settings.auth, &claims).context("minting a development token")?;
        eprintln!(
            "token for {sub} ({}), valid {ttl} s:",
            roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
        );
        println!("{token}");
        return Ok(());
    }
    let telemetry = telemetry::init("api", settings.log_format, &settings.tracing);
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
        }
        Command::Token { .. } => {}
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

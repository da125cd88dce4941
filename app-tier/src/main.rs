//! `app-tier`: command line around the library. `serve` runs the HTTP server,
//! `migrate` applies the schema migrations, `seed` loads the demo data.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use app_tier::Config;
use clap::{Parser, Subcommand};

/// mimalloc: a request allocates and frees many small objects (driver rows, response
/// buffers) across tokio's worker threads; glibc's malloc took about 10% of the
/// server's CPU in the `app` benchmark's list, mimalloc about half of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "HBNB API application server (MariaDB-backed)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the API until SIGTERM or Ctrl-C, then finish in-flight requests.
    Serve(Common),
    /// Apply pending schema migrations to the primary.
    Migrate(Common),
    /// Load the demo data set (idempotent).
    Seed(Common),
}

#[derive(clap::Args)]
struct Common {
    /// TOML configuration file; APP_TIER_* environment variables override it.
    #[arg(long, short, env = "APP_TIER_CONFIG")]
    config: Option<PathBuf>,
}

fn load(common: &Common) -> anyhow::Result<Config> {
    Config::load(common.config.as_deref())
        .context("loading configuration (see app-tier/examples/app.toml)")
}

async fn primary_pool(config: &Config) -> anyhow::Result<sqlx::MySqlPool> {
    let options =
        app_tier::db::connect_options(&config.database, &config.database.url, "database.url")?;
    sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(
            config
                .database
                .acquire_timeout()
                .max(Duration::from_secs(5)),
        )
        .connect_with(options)
        .await
        .with_context(|| format!("connecting to the primary {}", config.database.url))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info,sqlx=warn"))
        .format_timestamp_millis()
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(common) => {
            let config = load(&common)?;
            let grace = Duration::from_millis(config.shutdown_grace_ms);
            app_tier::serve(&config, shutdown_signal(grace))
                .await
                .context("app-tier serve")?;
        }
        Command::Migrate(common) => {
            let config = load(&common)?;
            let pool = primary_pool(&config).await?;
            app_tier::migrate::run(&pool)
                .await
                .context("applying migrations")?;
            log::info!(
                "schema at version {}",
                app_tier::migrate::required_version()
            );
        }
        Command::Seed(common) => {
            let config = load(&common)?;
            let pool = primary_pool(&config).await?;
            app_tier::migrate::check(&pool)
                .await
                .context("seed needs an up-to-date schema")?;
            let report = app_tier::seed::seed(&pool)
                .await
                .context("loading demo data")?;
            log::info!("seeded: {} rows inserted", report.inserted);
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT; afterwards, a watchdog exits the process if draining
/// takes longer than `grace` (a stuck client must not block a deploy forever).
async fn shutdown_signal(grace: Duration) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "cannot install the SIGTERM handler ({e}); only Ctrl-C will stop the server"
            );
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => log::info!("SIGTERM: draining in-flight requests"),
        _ = tokio::signal::ctrl_c() => log::info!("SIGINT: draining in-flight requests"),
    }
    tokio::spawn(async move {
        tokio::time::sleep(grace).await;
        log::warn!("shutdown grace of {grace:?} elapsed with requests still in flight; exiting");
        std::process::exit(1);
    });
}

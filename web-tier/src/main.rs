//! `web-tier --config FILE [--check]`: run the web tier, or only validate its config.
//!
//! Signals: SIGHUP re-reads the file and applies it (an invalid file is logged and the
//! running configuration kept); SIGUSR1 reopens the log files (logrotate's nginx
//! contract); SIGTERM, SIGINT or SIGQUIT (nginx's graceful stop) stop accepting and drain.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use web_tier::config::Config;

/// mimalloc: every proxied request allocates and frees small objects (headers, body
/// frames, pool bookkeeping) across tokio's threads; in the `web` benchmark it brought
/// the proxied request's server CPU from about 23 to about 20 us.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(version, about = "Static file server and reverse proxy")]
struct Args {
    /// Configuration file (TOML).
    #[arg(short, long)]
    config: PathBuf,
    /// Validate the configuration (including roots, certificates and logs) and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let config = Config::from_file(&args.config)
        .with_context(|| format!("loading {}", args.config.display()))?;
    if args.check {
        // Building the state opens roots, error pages and logs: what a start would do.
        web_tier::server::State::build(&config)
            .with_context(|| format!("checking {}", args.config.display()))?;
        println!("{}: configuration OK", args.config.display());
        return Ok(());
    }
    if config.listen.is_empty() {
        anyhow::bail!(
            "{}: no [[listen]] entries; add one such as addr = \"0.0.0.0:8080\"",
            args.config.display()
        );
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(run(args.config, config))
}

async fn run(path: PathBuf, config: Config) -> anyhow::Result<()> {
    let server = web_tier::Server::new(&config).context("building the server")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut quit = signal(SignalKind::quit()).context("installing the SIGQUIT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("installing the SIGUSR1 handler")?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let reloader = server.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => match reloader.reload_file(&path) {
                    Ok(()) => log::info!("reloaded {}", path.display()),
                    Err(e) => log::error!("reload of {} failed, keeping the old configuration: {e}", path.display()),
                },
                _ = usr1.recv() => match reloader.reopen_logs() {
                    Ok(()) => log::info!("reopened the log files"),
                    Err(e) => log::error!("reopening the log files failed, still writing to the old ones: {e}"),
                },
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = quit.recv() => break,
            }
        }
        log::info!("draining");
        let _ = stop_tx.send(());
    });
    server
        .run(&config, async move {
            let _ = stop_rx.await;
        })
        .await
        .context("serving")?;
    log::info!("stopped");
    Ok(())
}

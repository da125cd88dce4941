//! `lb-vrrp`: one VRRPv3 virtual router without the XDP data plane.
//!
//! Runs [`lb::vrrp::run`] from a TOML file whose top level is a
//! [`lb::vrrp::VrrpConfig`], so failover can be tested (and interoperated with
//! keepalived) on nodes that do not load the load balancer. SIGTERM / SIGINT stop it
//! gracefully: a master sends priority 0 and removes its VIPs.
//!
//! ```text
//! lb-vrrp --config vrrp.toml [--status-file /run/lb-vrrp.json]
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser, Debug)]
#[command(about = "Run one VRRPv3 (RFC 5798) virtual router from a TOML file")]
struct Args {
    /// TOML file whose top level is a VRRP config (interface, vrid, priority, ...).
    #[arg(long)]
    config: PathBuf,
    /// Write the status (state, master, counters) as JSON to this file on every
    /// change and every second, for tests and scripts.
    #[arg(long)]
    status_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let cfg: lb::vrrp::VrrpConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", args.config.display()))?;
    cfg.validate()
        .with_context(|| format!("invalid config {}", args.config.display()))?;

    // One thread is plenty for a few packets per second, and keeps the process small.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
        let tracker = lb::vrrp::Tracker::new();
        if let Some(path) = args.status_file {
            tokio::spawn(write_status(tracker.clone(), path));
        }
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => log::info!("SIGTERM: stopping"),
                _ = int.recv() => log::info!("SIGINT: stopping"),
            }
        };
        lb::vrrp::run(cfg, tracker, shutdown)
            .await
            .context("VRRP failed (needs root: raw sockets and `ip addr`)")
    })
}

/// Keeps `path` holding the latest status as JSON (written to a temporary file and
/// renamed, so a reader never sees half a document).
async fn write_status(tracker: lb::vrrp::Tracker, path: PathBuf) {
    let mut roles = tracker.subscribe();
    let tmp = path.with_extension("tmp");
    loop {
        match serde_json::to_vec(&tracker.status()) {
            Ok(json) => {
                if let Err(e) =
                    std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    log::warn!("writing {}: {e}", path.display());
                }
            }
            Err(e) => log::warn!("serializing status: {e}"),
        }
        tokio::select! {
            r = roles.changed() => if r.is_err() { return },
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

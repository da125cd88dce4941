//! `lb`: the load-balancer controller's command line.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use lb::{
    config::Config,
    daemon::{self, Request, RunOptions},
    dataplane::AttachMode,
};

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "XDP layer-4 load balancer: controller and CLI"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which running controller to talk to.
#[derive(clap::Args, Clone)]
struct Target {
    /// Admin socket of the controller.
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Instance name (socket /run/lb/<instance>.sock).
    #[arg(long, global = true, default_value = "lb")]
    instance: String,
}

impl Target {
    fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/lb/{}.sock", self.instance)))
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller: attach XDP to the configured NIC and serve until SIGTERM.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Override the config's XDP attach mode.
        #[arg(long, value_enum)]
        xdp_mode: Option<AttachMode>,
        /// On shutdown leave the program attached and pinned (for upgrades).
        #[arg(long)]
        keep_pins: bool,
    },
    /// Validate a config file and print what would be applied.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Services, backends, health, weights and counters of a running controller.
    Status {
        #[command(flatten)]
        target: Target,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Drain, enable or re-weight a backend at runtime.
    Backend {
        #[command(subcommand)]
        action: BackendCmd,
        #[command(flatten)]
        target: Target,
    },
    /// Re-read the config file (same as SIGHUP); a bad file, or one that changes a
    /// setting fixed at start (instance, interface, xdp_mode, conntrack_size, metrics,
    /// admin_socket, [failover]), changes nothing.
    Reload {
        #[command(flatten)]
        target: Target,
    },
    /// Exit-reason counters; with --watch, per-second rates refreshed in place.
    Stats {
        #[command(flatten)]
        target: Target,
        #[arg(long)]
        watch: bool,
        /// Refresh interval for --watch, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Generate packets at line rate (kernel pktgen, or BPF_PROG_RUN live frames).
    Pktgen(lb::pktgen::PktgenArgs),
    /// Attach a helper program (xdp_pass, xdp_decap, xdp_count, xdp_sink, xdp_tx) to an
    /// interface and pin its link, or detach one.
    Xdp {
        #[command(subcommand)]
        action: XdpCmd,
    },
}

#[derive(Subcommand)]
enum BackendCmd {
    /// Weight 0: no new flows; established flows continue.
    Drain { address: std::net::IpAddr },
    /// Undo drain or weight overrides.
    Enable { address: std::net::IpAddr },
    /// Set the weight.
    Weight {
        address: std::net::IpAddr,
        weight: u32,
    },
}

#[derive(Subcommand)]
enum XdpCmd {
    Attach {
        #[arg(long)]
        prog: String,
        #[arg(long)]
        iface: String,
        /// bpffs path to pin the link at.
        #[arg(long)]
        pin: PathBuf,
        #[arg(long, value_enum, default_value = "drv")]
        xdp_mode: AttachMode,
    },
    Detach {
        #[arg(long)]
        pin: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Run {
                config,
                xdp_mode,
                keep_pins,
            } => {
                daemon::run(
                    &config,
                    RunOptions {
                        xdp_mode,
                        keep_pins,
                    },
                )
                .await
            }
            Cmd::Check { config } => check(&config),
            Cmd::Status { target, json } => {
                let v = daemon::request(&target.socket(), &Request::Status {}).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&v["status"])?);
                } else {
                    print_status(&v["status"]);
                }
                Ok(())
            }
            Cmd::Backend { action, target } => {
                let req = match action {
                    BackendCmd::Drain { address } => Request::Drain { backend: address },
                    BackendCmd::Enable { address } => Request::Enable { backend: address },
                    BackendCmd::Weight { address, weight } => Request::Weight {
                        backend: address,
                        weight,
                    },
                };
                daemon::request(&target.socket(), &req).await?;
                println!("ok");
                Ok(())
            }
            Cmd::Reload { target } => {
                daemon::request(&target.socket(), &Request::Reload {}).await?;
                println!("reloaded");
                Ok(())
            }
            Cmd::Stats {
                target,
                watch,
                interval_ms,
            } => {
                stats(
                    &target.socket(),
                    watch,
                    Duration::from_millis(interval_ms.max(100)),
                )
                .await
            }
            Cmd::Pktgen(args) => lb::pktgen::run(&args),
            Cmd::Xdp { action } => match action {
                XdpCmd::Attach {
                    prog,
                    iface,
                    pin,
                    xdp_mode,
                } => {
                    lb::dataplane::attach_helper(&prog, &iface, xdp_mode, &pin)?;
                    println!(
                        "{prog} attached to {iface}, link pinned at {}",
                        pin.display()
                    );
                    Ok(())
                }
                XdpCmd::Detach { pin } => {
                    std::fs::remove_file(&pin)
                        .with_context(|| format!("removing {}", pin.display()))?;
                    let _ = std::fs::remove_file(lb::dataplane::sink_pin(&pin));
                    println!("detached ({} unpinned)", pin.display());
                    Ok(())
                }
            },
        }
    })
}

fn check(path: &Path) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    println!("{}: OK", path.display());
    println!(
        "instance {} on {} ({:?} mode), hash seed {}, conntrack {} entries",
        cfg.instance, cfg.interface, cfg.xdp_mode, cfg.hash_seed, cfg.conntrack_size
    );
    for s in cfg.services() {
        println!(
            "service {}: {} {:?}/{} mode {:?}, ring {}, health {:?} every {} ms (rise {}, fall {})",
            s.name,
            s.vip,
            s.proto,
            if s.port == 0 {
                "*".to_owned()
            } else {
                s.port.to_string()
            },
            s.mode,
            s.ring_size,
            s.health.kind,
            s.health.interval_ms,
            s.health.rise,
            s.health.fall
        );
        for b in &s.backends {
            println!(
                "  backend {} weight {} mac {}{}",
                b.address,
                b.weight,
                b.mac.as_deref().unwrap_or("(resolve)"),
                b.interface
                    .as_deref()
                    .map(|i| format!(" via {i}"))
                    .unwrap_or_default()
            );
        }
    }
    if let Some(f) = &cfg.failover {
        println!("failover: {f:?}");
    }
    Ok(())
}

fn print_status(s: &serde_json::Value) {
    println!(
        "instance {}  interface {}  conntrack {}/{}  ring rebuilds {}{}",
        s["instance"].as_str().unwrap_or("?"),
        s["interface"].as_str().unwrap_or("?"),
        s["conntrack_entries"],
        s["conntrack_size"],
        s["ring_rebuilds"],
        if s["adopted"] == true {
            "  (adopted)"
        } else {
            ""
        }
    );
    if let Some(f) = s.get("failover").filter(|f| !f.is_null()) {
        println!("failover: {f}");
    }
    for svc in s["services"].as_array().into_iter().flatten() {
        println!(
            "\nSERVICE {} {} {}/{} ({}), ring {}, {} pkts {} bytes",
            svc["name"].as_str().unwrap_or(""),
            svc["vip"].as_str().unwrap_or(""),
            svc["proto"].as_str().unwrap_or(""),
            svc["port"],
            svc["mode"].as_str().unwrap_or(""),
            svc["ring_size"],
            svc["packets"],
            svc["bytes"]
        );
        println!(
            "  {:<40} {:>6} {:>9} {:>8} {:>10} {:>12} {:>14}",
            "BACKEND", "HEALTH", "WEIGHT", "ADMIN", "SLOTS", "PACKETS", "BYTES"
        );
        for b in svc["backends"].as_array().into_iter().flatten() {
            println!(
                "  {:<40} {:>6} {:>4}/{:<4} {:>8} {:>10} {:>12} {:>14}",
                b["address"].as_str().unwrap_or(""),
                b["health"].as_str().unwrap_or(""),
                b["effective_weight"],
                b["weight"],
                b["admin"].as_str().unwrap_or("-"),
                b["ring_slots"],
                b["packets"],
                b["bytes"]
            );
        }
    }
}

async fn stats(socket: &Path, watch: bool, every: Duration) -> anyhow::Result<()> {
    let read = || async {
        let v = daemon::request(socket, &Request::Status {}).await?;
        let mut out = Vec::new();
        for (k, c) in v["status"]["reasons"].as_object().into_iter().flatten() {
            out.push((k.clone(), c["packets"].as_u64().unwrap_or(0)));
        }
        anyhow::Ok(out)
    };
    let mut prev = read().await?;
    if !watch {
        for (k, n) in &prev {
            println!("{k:<22} {n:>14}");
        }
        return Ok(());
    }
    loop {
        tokio::time::sleep(every).await;
        let now = read().await?;
        // Clear the screen and redraw, like `watch`.
        println!(
            "\x1b[2J\x1b[H{:<22} {:>14} {:>12}",
            "REASON", "PACKETS", "PER SECOND"
        );
        for ((k, n), (_, p)) in now.iter().zip(&prev) {
            let rate = (n - p) as f64 / every.as_secs_f64();
            println!("{k:<22} {n:>14} {rate:>12.0}");
        }
        prev = now;
    }
}

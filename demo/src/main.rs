//! `lb-demo`: brings the whole stack up in network namespaces, sends sample traffic
//! through the VIP and shows a live view; keys (or `--chaos`) break things so you can
//! watch the system heal. Run it through `cargo xtask demo`, which builds first.

use std::{
    collections::VecDeque,
    io::{IsTerminal as _, Read as _, Write as _},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use lb_demo::{
    Infra, Opts, Progress, plan, run,
    traffic::{Traffic, TrafficOpts},
};

#[derive(Parser)]
#[command(
    name = "lb-demo",
    about = "The XDP load balancer and its web, app and database tiers in network namespaces, live"
)]
struct Cli {
    /// Break things automatically on a schedule (kill the active LB, web1, app1,
    /// restart the database), healing in between.
    #[arg(long)]
    chaos: bool,
    /// Remove the leftovers of a demo that crashed, then exit.
    #[arg(long, conflicts_with_all = ["chaos", "duration"])]
    down: bool,
    /// Exit by itself after this many seconds (non-interactive runs, smoke tests).
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

/// `println!` that ignores a closed stdout (`| head`), which must not stop a teardown.
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("lb-demo: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!("the demo creates network namespaces and loads XDP programs: run it as root");
    }
    if cli.down {
        let done = run::down()?;
        if done.is_empty() {
            say!("nothing to remove: no leftovers of a crashed demo");
        }
        for d in done {
            say!("{d}");
        }
        return Ok(());
    }
    let _lock = run::Lock::acquire()?;
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    say!("xdp-webstack demo: the whole design in network namespaces");
    say!("{}\n", plan::diagram());

    let opts = Opts::beside_current_exe("demo")?;
    let started = Instant::now();
    let infra = Infra::up(&opts, &mut |p| match p {
        Progress::Begin { step, total, what } => {
            let _ = write!(std::io::stdout(), "  [{step:>2}/{total}] {what} ... ");
            let _ = std::io::stdout().flush();
        }
        Progress::Done { elapsed, .. } => say!("ok ({:.1}s)", elapsed.as_secs_f64()),
    });
    let mut infra = match infra {
        Ok(i) => i,
        Err(e) => {
            say!("FAILED");
            return Err(e).context("bringing the stack up (everything created was removed)");
        }
    };
    run::record(&infra)?;
    say!(
        "  all up in {:.1}s; logs and configs in {}",
        started.elapsed().as_secs_f64(),
        infra.dir.display()
    );
    say!(
        "  the site from the client namespace: ip netns exec {ns} curl http://{vip}/hbnb\n  \
         (or a browser: ip netns exec {ns} chromium --no-sandbox http://{vip}/hbnb)",
        ns = infra.client.name(),
        vip = plan::VIP
    );
    if STOP.load(Ordering::Relaxed) {
        return teardown(infra);
    }
    std::thread::sleep(Duration::from_secs(2));

    // Torn down whatever happens: an error here must not leave the state file of a
    // removed stack behind (a later `--down` would act on its stale PIDs).
    let result = serve(&mut infra, &cli);
    teardown(infra)?;
    result
}

/// Sample traffic and the live view until quit, `--duration` or a signal.
fn serve(infra: &mut Infra, cli: &Cli) -> anyhow::Result<()> {
    let mut traffic = Traffic::start(&infra.client, TrafficOpts::default())?;
    let result = live(infra, &traffic, cli);
    traffic.stop();
    let stats = &traffic.stats;
    say!(
        "traffic: {} ok, errors {:?}, failures {:?}",
        stats.ok(),
        stats.errors_by_status(),
        stats.failures()
    );
    result
}

fn teardown(infra: Infra) -> anyhow::Result<()> {
    say!("tearing down (processes, namespaces, pins, data directory) ...");
    drop(infra);
    run::forget();
    say!("done: nothing left behind");
    Ok(())
}

/// Raw terminal mode while alive; the old mode comes back on drop.
struct RawMode {
    old: libc::termios,
}

impl RawMode {
    fn enable() -> Option<RawMode> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        // SAFETY: termios calls on fd 0 with properly sized structs.
        unsafe {
            let mut old: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut old) != 0 {
                return None;
            }
            let mut raw = old;
            // No line buffering or echo; signals off (Ctrl-C arrives as a byte, so the
            // terminal is restored by the normal exit path); output processing stays on.
            raw.c_lflag &= !(libc::ICANON | libc::ECHO | libc::ISIG);
            raw.c_cc[libc::VMIN] = 1;
            raw.c_cc[libc::VTIME] = 0;
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
            Some(RawMode { old })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enable`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.old);
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    KillActiveLb,
    KillWeb1,
    KillApp1,
    RestartDb,
    RestartDown,
    Quit,
}

fn key_action(k: u8) -> Option<Action> {
    Some(match k {
        b'1' => Action::KillActiveLb,
        b'2' => Action::KillWeb1,
        b'3' => Action::KillApp1,
        b'4' => Action::RestartDb,
        b'r' | b'R' => Action::RestartDown,
        b'q' | b'Q' | 3 | 4 => Action::Quit,
        _ => return None,
    })
}

/// The chaos schedule: one step every `CHAOS_EVERY`, healing after each break.
const CHAOS: &[Action] = &[
    Action::KillActiveLb,
    Action::RestartDown,
    Action::KillWeb1,
    Action::RestartDown,
    Action::KillApp1,
    Action::RestartDown,
    Action::RestartDb,
];
const CHAOS_EVERY: Duration = Duration::from_secs(8);

struct Events {
    start: Instant,
    lines: VecDeque<String>,
}

impl Events {
    fn push(&mut self, s: impl Into<String>) {
        let t = self.start.elapsed().as_secs();
        self.lines
            .push_back(format!("{:02}:{:02}  {}", t / 60, t % 60, s.into()));
        while self.lines.len() > 8 {
            self.lines.pop_front();
        }
    }
}

fn act(infra: &mut Infra, a: Action, ev: &mut Events) -> anyhow::Result<()> {
    match a {
        Action::KillActiveLb => match infra.master() {
            Some(m) => {
                infra.kill_lb(m);
                ev.push(format!(
                    "killed {} (the active LB: SIGKILL, link down)",
                    plan::LB_NAMES[m]
                ));
            }
            None => ev.push("no LB is MASTER right now: nothing to kill"),
        },
        Action::KillWeb1 => {
            infra.kill_web(0);
            ev.push("killed web1 (SIGKILL): the LBs' health checks will take it out");
        }
        Action::KillApp1 => {
            infra.kill_app(0);
            ev.push("killed app1 (SIGKILL): the web tier retries on app2");
        }
        Action::RestartDb => {
            ev.push("restarting the database (SIGKILL, start again on the same data)");
            let t = Instant::now();
            infra.restart_db()?;
            ev.push(format!(
                "database back after {:.1}s",
                t.elapsed().as_secs_f64()
            ));
        }
        Action::RestartDown => {
            let done = infra.restart_down()?;
            if done.is_empty() {
                ev.push("everything is running; nothing to restart");
            } else {
                ev.push(format!("restarted {}", done.join(", ")));
            }
            run::record(infra)?;
        }
        Action::Quit => STOP.store(true, Ordering::Relaxed),
    }
    Ok(())
}

fn live(infra: &mut Infra, traffic: &Traffic, cli: &Cli) -> anyhow::Result<()> {
    let raw = RawMode::enable();
    let (ktx, krx) = mpsc::channel::<u8>();
    if raw.is_some() {
        // Reads keys until the process exits (a blocked read cannot be cancelled).
        std::thread::spawn(move || {
            let mut b = [0u8; 1];
            while std::io::stdin().read(&mut b).is_ok_and(|n| n == 1) {
                if ktx.send(b[0]).is_err() {
                    break;
                }
            }
        });
    }
    let start = Instant::now();
    let mut ev = Events {
        start,
        lines: VecDeque::new(),
    };
    ev.push("traffic started: 4 clients through the VIP");
    if cli.chaos {
        ev.push(format!(
            "chaos mode: a break or a heal every {}s",
            CHAOS_EVERY.as_secs()
        ));
    }
    let mut last_states: Vec<Option<String>> = vec![None, None];
    let mut last_ok = traffic.stats.ok();
    let mut last_tick = Instant::now();
    let mut rate = 0.0;
    let mut chaos_step = 0usize;
    let mut next_chaos = start + CHAOS_EVERY;
    let mut result = Ok(());
    while !STOP.load(Ordering::Relaxed) {
        if cli
            .duration
            .is_some_and(|d| start.elapsed() >= Duration::from_secs(d))
        {
            ev.push("--duration reached");
            break;
        }
        let mut actions = Vec::new();
        while let Ok(k) = krx.try_recv() {
            actions.extend(key_action(k));
        }
        if cli.chaos && Instant::now() >= next_chaos {
            actions.push(CHAOS[chaos_step % CHAOS.len()]);
            chaos_step += 1;
            next_chaos += CHAOS_EVERY;
        }
        for a in actions {
            if let Err(e) = act(infra, a, &mut ev) {
                ev.push(format!("{a:?} failed: {e:#}"));
            }
        }
        if last_tick.elapsed() >= Duration::from_secs(1) || STOP.load(Ordering::Relaxed) {
            let ok = traffic.stats.ok();
            rate = (ok - last_ok) as f64 / last_tick.elapsed().as_secs_f64();
            last_ok = ok;
            last_tick = Instant::now();
        }
        let snap = infra.snapshot();
        for (i, (name, _, state)) in snap.lbs.iter().enumerate() {
            if *state != last_states[i] && state.is_some() {
                ev.push(format!(
                    "{name} is now {}",
                    state.as_deref().unwrap_or("?").to_uppercase()
                ));
            }
            last_states[i] = state.clone();
        }
        draw(&snap, traffic, rate, start, &ev, cli, raw.is_some());
        // Wake for keys quickly, redraw about once a second.
        let tick = Instant::now();
        while tick.elapsed() < Duration::from_millis(1000) && !STOP.load(Ordering::Relaxed) {
            match krx.recv_timeout(Duration::from_millis(100)) {
                Ok(k) => {
                    if let Some(a) = key_action(k) {
                        if let Err(e) = act(infra, a, &mut ev) {
                            ev.push(format!("{a:?} failed: {e:#}"));
                        }
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if let Err(e) = run::record(infra) {
            result = Err(e);
            break;
        }
    }
    drop(raw);
    say!();
    result
}

fn draw(
    snap: &lb_demo::infra::Snapshot,
    traffic: &Traffic,
    rate: f64,
    start: Instant,
    ev: &Events,
    cli: &Cli,
    interactive: bool,
) {
    use std::fmt::Write as _;
    let mut o = String::new();
    let t = start.elapsed().as_secs();
    let _ = writeln!(
        o,
        "xdp-webstack demo   up {:02}:{:02}   VIP {}:80{}",
        t / 60,
        t % 60,
        plan::VIP,
        if cli.chaos { "   [chaos]" } else { "" }
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "load balancers (VRRP vrid {})", plan::VRID);
    for (i, (name, running, state)) in snap.lbs.iter().enumerate() {
        let _ = writeln!(
            o,
            "  {name}  {:<8} {:<10} priority {}",
            if *running { "running" } else { "DOWN" },
            state.as_deref().map_or("-".to_owned(), str::to_uppercase),
            plan::LB_PRIORITY[i]
        );
    }
    let _ = writeln!(o);
    match snap.master {
        Some(m) => {
            let _ = writeln!(
                o,
                "web nodes as the master ({}) sees them",
                plan::LB_NAMES[m]
            );
            for b in &snap.backends {
                let _ = writeln!(
                    o,
                    "  {}  {:<12} health {:<5} ring slots {:>5}  packets {:>9}",
                    b.name, b.address, b.health, b.ring_slots, b.packets
                );
            }
        }
        None => {
            let _ = writeln!(o, "no master right now (failover in progress?)");
        }
    }
    let _ = writeln!(o);
    let procs: Vec<String> = snap
        .procs
        .iter()
        .map(|(n, up)| format!("{n} {}", if *up { "up" } else { "DOWN" }))
        .collect();
    let _ = writeln!(o, "processes: {}", procs.join(" | "));
    let _ = writeln!(o);
    let s = &traffic.stats;
    let errs: Vec<String> = s
        .errors_by_status()
        .iter()
        .map(|(c, n)| format!("{c} x{n}"))
        .chain(s.failures().iter().map(|(f, n)| format!("{f} x{n}")))
        .collect();
    let _ = writeln!(
        o,
        "traffic (/, /static/..., /api/v1/places, /hbnb): {rate:>6.1} ok/s   total ok {}",
        s.ok()
    );
    let _ = writeln!(
        o,
        "  errors: {}",
        if errs.is_empty() {
            "none".to_owned()
        } else {
            errs.join(", ")
        }
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "events");
    for l in &ev.lines {
        let _ = writeln!(o, "  {l}");
    }
    let _ = writeln!(o);
    if interactive {
        let _ = writeln!(
            o,
            "keys: 1 kill active LB   2 kill web1   3 kill app1   4 restart db   r restart what is down   q quit"
        );
    } else {
        let _ = writeln!(
            o,
            "(no terminal: keys off; Ctrl-C or --duration ends the demo)"
        );
    }
    let mut out = std::io::stdout().lock();
    if interactive {
        // Home, clear, redraw.
        let _ = write!(out, "\x1b[H\x1b[2J{o}");
    } else {
        let _ = writeln!(out, "{o}");
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_takes_no_run_options() {
        assert!(Cli::try_parse_from(["lb-demo", "--down", "--chaos"]).is_err());
        assert!(Cli::try_parse_from(["lb-demo", "--down", "--duration", "5"]).is_err());
        assert!(Cli::try_parse_from(["lb-demo", "--duration", "-5"]).is_err());
        assert!(Cli::try_parse_from(["lb-demo", "--down"]).is_ok());
    }
}

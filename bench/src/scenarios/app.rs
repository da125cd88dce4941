//! `app`: the app tier beside Gunicorn + Flask + PyMySQL (the stack the design cites),
//! same endpoints, same MariaDB, same data, driven by wrk in the same round: a paginated
//! list, a get by id and a create.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use app_tier::testing::MariaDb;

use super::{
    Scenario,
    web::{proc_cpu_ticks, us_per_request},
};
use crate::wrk::{Wrk, error_note, wrk_run};
use crate::{
    ctx::{Check, Ctx, Row, clock_ticks},
    support::TempDir,
};

pub const SCENARIO: Scenario = Scenario {
    name: "app",
    description: "app-tier vs Gunicorn + Flask + PyMySQL with wrk: list (paginated), get by id, create",
    method: "\
One MariaDB server started for the round (`app_tier::testing::MariaDb`: its own data
directory, 127.0.0.1, 64 MB buffer pool), one database migrated and seeded with
`app-tier migrate` and `app-tier seed`, plus 1000 more places inserted in SQL; both
servers use that database, both over its Unix socket (on one host; TCP on loopback
cost each statement more on both sides, and app-tier's get was then 5.1x). The peer
is `bench/peers/gunicorn/app.py`: the same three endpoints, answers and SQL for the
reads except timestamps (Flask 2.2 + PyMySQL 1.0 under Debian's Gunicorn, `-w N` sync
workers for N cores, one persistent connection per worker). The peer has MariaDB format
timestamps (`DATE_FORMAT`), sparing Python the parsing and re-printing of datetime
objects; app-tier formats the `DATETIME` values itself. `app-tier serve` runs with its
defaults (tokio's N worker threads, a pool of up to 10 connections). Access logs off on
both (`RUST_LOG=warn`; Gunicorn logs no access by default).
`wrk -t2 -c32 --latency` runs 10 s (3 s under `--quick`) after a 1 s warm-up against:
**list** `GET /api/v1/places?page=1&per_page=20` (20 places along the `(created_at, id)`
index, which the statement names, each row carrying the total: the sum of the
trigger-kept `places_count` shards, migrations 0003 and 0004), **get** `GET /api/v1/places/<id>`,
**create** `POST /api/v1/cities/<id>/places` (a Lua script, a unique name per request;
Gunicorn runs a transaction with two existence checks, the insert and a read-back,
app-tier one `INSERT ... RETURNING` whose foreign keys do the checks). Gunicorn's sync workers close the connection after every response
(no keep-alive), which is part of what is compared. Everything shares the machine's
cores (nothing pinned). CPU shares are of the whole machine (100% = every core busy)
over the run, from `/proc/<pid>/stat`, and CPU per request is that time over the
requests served: where MariaDB's CPU per request exceeds the app server's and the
machine is saturated, MariaDB (on the same cores) is the bound, not the app server.
Target (from the issue): at least 5x Gunicorn's req/s with a lower p99 on every row.",
    pinned: false,
    run,
};

/// A seeded place, city and user (app_tier::seed's fixed ids).
const PLACE: &str = "00000000-0000-4000-8000-000000000401";
const CITY: &str = "00000000-0000-4000-8000-000000000101";
const USER: &str = "00000000-0000-4000-8000-000000000201";
const DB: &str = "hbnb_bench";
/// Extra places beyond the seed's 4, so a page of 20 is full and the count is not trivial.
const EXTRA_PLACES: u32 = 1000;

/// A child process in this namespace, killed by PID and reaped on drop.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if matches!(self.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_tcp(port: u16, child: &mut Child, what: &str) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!("{what} exited during start-up ({st})");
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{what} does not listen on {addr} after 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn mariadb_sql(db: &MariaDb, database: Option<&str>, sql: &str) -> anyhow::Result<()> {
    let mut cmd = Command::new("mariadb");
    cmd.arg("--no-defaults")
        .arg(format!("--socket={}", db.socket().display()))
        .args(["-uroot", "-e", sql]);
    if let Some(d) = database {
        cmd.arg(d);
    }
    lb_tests::run(&mut cmd).context("running the mariadb client")?;
    Ok(())
}

/// The database both servers use: migrated, seeded, plus [`EXTRA_PLACES`].
fn prepare(db: &MariaDb, app_bin: &Path, config: &Path) -> anyhow::Result<()> {
    mariadb_sql(
        db,
        None,
        &format!("CREATE DATABASE {DB} CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"),
    )?;
    for step in ["migrate", "seed"] {
        lb_tests::run(
            Command::new(app_bin)
                .arg(step)
                .arg("--config")
                .arg(config)
                .env("RUST_LOG", "warn"),
        )
        .with_context(|| format!("app-tier {step}"))?;
    }
    mariadb_sql(
        db,
        Some(DB),
        &format!(
            "INSERT INTO places (id, city_id, user_id, name, description, number_rooms, \
             number_bathrooms, max_guest, price_by_night, latitude, longitude) \
             SELECT UUID(), '{CITY}', '{USER}', CONCAT('Bench place ', seq), \
             'A place inserted for the benchmark.', 2, 1, 4, 100 + seq % 50, 37.7, -122.4 \
             FROM seq_1_to_{EXTRA_PLACES}"
        ),
    )
}

/// A wrk Lua script posting places with names unique to `tag`, thread and request.
fn create_script(dir: &Path, tag: &str) -> anyhow::Result<String> {
    let path = dir.join(format!("create-{tag}.lua"));
    std::fs::write(
        &path,
        format!(
            r#"local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end
function init(args)
  n = 0
end
function request()
  n = n + 1
  local body = string.format('{{"user_id":"{USER}","name":"{tag} %d-%d","number_rooms":2,"price_by_night":120}}', tid, n)
  return wrk.format("POST", "/api/v1/cities/{CITY}/places", {{["Content-Type"] = "application/json"}}, body)
end
"#
        ),
    )?;
    Ok(path.to_str().context("path")?.to_owned())
}

/// What one server did during one wrk run.
struct Measured {
    wrk: Wrk,
    server_cpu_us: f64,
    server_share: f64,
    mariadb_share: f64,
    mariadb_cpu_us: f64,
}

fn run(ctx: &mut Ctx) -> anyhow::Result<Vec<Row>> {
    let secs = ctx.pick(10, 3);
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let app_bin = ctx.lb.with_file_name("app-tier");
    if !app_bin.exists() {
        bail!(
            "{} not found: `cargo build --release --workspace --bins`",
            app_bin.display()
        );
    }
    let peer = ctx.root.join("bench/peers/gunicorn");
    if !peer.join("app.py").exists() {
        bail!("{} missing", peer.join("app.py").display());
    }
    let dir = TempDir::new("app")?;
    ctx.progress("starting MariaDB");
    let db = MariaDb::start().context("starting MariaDB (Debian's mariadb-server)")?;
    let db_pid = db.pid().context("MariaDB is not running")?;
    let app_port = free_port()?;
    let gun_port = free_port()?;
    let config = dir.0.join("app.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{app_port}\"\n\n[database]\nurl = \"{}\"\n",
            db.socket_url(DB)
        ),
    )?;
    prepare(&db, &app_bin, &config)?;

    let mut app = ChildGuard(
        Command::new(&app_bin)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("spawning app-tier serve")?,
    );
    wait_tcp(app_port, &mut app.0, "app-tier serve")?;
    let mut gunicorn = ChildGuard(
        Command::new("/usr/bin/gunicorn")
            .args([
                "-w",
                &ncpu.to_string(),
                "-b",
                &format!("127.0.0.1:{gun_port}"),
            ])
            .arg("--chdir")
            .arg(&peer)
            .arg("app:app")
            .env("HBNB_MYSQL_SOCKET", db.socket())
            .env("HBNB_MYSQL_USER", app_tier::testing::APP_USER)
            .env("HBNB_MYSQL_PWD", app_tier::testing::APP_PASSWORD)
            .env("HBNB_MYSQL_DB", DB)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("gunicorn.log")).context("gunicorn log")?)
            .spawn()
            .context("spawning gunicorn (Debian's gunicorn, python3-flask, python3-pymysql)")?,
    );
    wait_tcp(gun_port, &mut gunicorn.0, "gunicorn")?;
    // The arbiter listens before its workers have booted: wait for all of them.
    let start = Instant::now();
    while super::web::with_children(gunicorn.0.id()).len() < 1 + ncpu {
        if start.elapsed() > Duration::from_secs(30) {
            bail!("gunicorn did not start its {ncpu} workers within 30 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let app_pid = app.0.id();
    let gun_pid = gunicorn.0.id();

    let list = "/api/v1/places?page=1&per_page=20".to_owned();
    let get = format!("/api/v1/places/{PLACE}");
    let rows_spec: [(&str, &str, bool); 3] = [
        ("list", &list, false),
        ("get", &get, false),
        ("create", "/", true),
    ];
    let dur = format!("-d{secs}s");
    let machine = |ticks: u64, t: Duration| {
        100.0 * ticks as f64 / clock_ticks() / t.as_secs_f64() / ncpu as f64
    };
    let measure = |who: &str, port: u16, pids: &dyn Fn() -> Vec<u32>, path: &str, create: bool| {
        let url = format!("http://127.0.0.1:{port}{path}");
        // The create script per run, so every name is unique (warm-up included).
        let script = |phase: &str| -> anyhow::Result<Vec<String>> {
            Ok(if create {
                let tag = format!("{who}-r{}-{phase}", ctx.round);
                vec!["-s".to_owned(), create_script(&dir.0, &tag)?]
            } else {
                Vec::new()
            })
        };
        if !ctx.quick {
            let warm = script("warm")?;
            let mut args = vec!["-t2", "-c32", "-d1s"];
            args.extend(warm.iter().map(String::as_str));
            wrk_run(&[], &args, &url)?;
        }
        let main = script("run")?;
        let mut args = vec!["-t2", "-c32", dur.as_str()];
        args.extend(main.iter().map(String::as_str));
        // Per PID, so a worker forked during the run counts from zero.
        let s0: HashMap<u32, u64> = pids().into_iter().map(|x| (x, proc_cpu_ticks(x))).collect();
        let (d0, t0) = (proc_cpu_ticks(db_pid), Instant::now());
        let (w, out) = wrk_run(&[], &args, &url)?;
        let elapsed = t0.elapsed();
        let s: u64 = pids()
            .into_iter()
            .map(|x| proc_cpu_ticks(x).saturating_sub(s0.get(&x).copied().unwrap_or(0)))
            .sum();
        let d = proc_cpu_ticks(db_pid).saturating_sub(d0);
        if w.requests == 0 || w.errors * 10 > w.requests {
            let log = std::fs::read_to_string(dir.0.join("gunicorn.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect::<Vec<_>>();
            bail!(
                "{who} {path}: mostly failed requests:\n{out}\ngunicorn log (last lines, newest first):\n{}",
                tail.join("\n")
            );
        }
        let m = Measured {
            wrk: w,
            server_cpu_us: us_per_request(s, w.requests),
            server_share: machine(s, elapsed),
            mariadb_share: machine(d, elapsed),
            mariadb_cpu_us: us_per_request(d, w.requests),
        };
        ctx.progress(format!(
            "{who} {}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, server {:.0} us CPU/request; \
             CPU share: server {:.0}%, MariaDB {:.0}% of the machine{}",
            if create { "create" } else { path },
            w.rps,
            w.p50_ms,
            w.p99_ms,
            m.server_cpu_us,
            m.server_share,
            m.mariadb_share,
            error_note(&w, &out)
        ));
        anyhow::Ok(m)
    };

    let mut rows = Vec::new();
    for (label, path, create) in rows_spec {
        let path = if create {
            format!("/api/v1/cities/{CITY}/places")
        } else {
            path.to_owned()
        };
        // Gunicorn's workers are children of its arbiter: list them at each run.
        let g = measure(
            "gunicorn",
            gun_port,
            &|| super::web::with_children(gun_pid),
            &path,
            create,
        )?;
        let a = measure("app-tier", app_port, &|| vec![app_pid], &path, create)?;
        rows.push(
            Row::new(format!("{label} req/s"), a.wrk.rps, "req/s")
                .vs("gunicorn", g.wrk.rps)
                .target(Check::RatioAtLeast(5.0), ">= 5x Gunicorn"),
        );
        rows.push(
            Row::new(format!("{label} p50"), a.wrk.p50_ms, "ms").vs("gunicorn", g.wrk.p50_ms),
        );
        rows.push(
            Row::new(format!("{label} p99"), a.wrk.p99_ms, "ms")
                .vs("gunicorn", g.wrk.p99_ms)
                .target(Check::RatioAtMost(1.0), "< Gunicorn"),
        );
        rows.push(
            Row::new(format!("{label} server CPU/request"), a.server_cpu_us, "us")
                .vs("gunicorn", g.server_cpu_us),
        );
        rows.push(
            Row::new(format!("{label} server CPU share"), a.server_share, "%")
                .vs("gunicorn", g.server_share),
        );
        rows.push(
            Row::new(format!("{label} MariaDB CPU share"), a.mariadb_share, "%")
                .vs("gunicorn", g.mariadb_share),
        );
        rows.push(
            Row::new(
                format!("{label} MariaDB CPU/request"),
                a.mariadb_cpu_us,
                "us",
            )
            .vs("gunicorn", g.mariadb_cpu_us),
        );
    }
    drop(gunicorn);
    drop(app);
    drop(db);
    Ok(rows)
}

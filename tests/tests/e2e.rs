//! End to end: client -> VIP -> lb1/lb2 (XDP, VRRP) -> web1/web2 -> app1/app2 -> MariaDB,
//! every tier a real binary of the workspace in its own network namespace, built by
//! the same [`lb_demo::Infra`] the demo runs (`cargo xtask demo`).
//!
//! Each test builds its own stack and tears it down (drop), one test at a time (a
//! full stack per test on 2 cores; the whole file takes about two minutes). Every
//! loop is bounded; nothing asserts how fast something happened, only what happened
//! and in which order: failures are attributed to the window between breaking a part
//! and the system observing it (VRRP master change, health check down), and after
//! that window every request must succeed.
//!
//! Needs root, the workspace's binaries (`cargo build --workspace --bins`), nftables,
//! mariadb-server and chromium (`cargo xtask setup`). Run: `cargo xtask test e2e`.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use lb_demo::{
    Infra, Opts,
    http::{self, Conn, Failure},
    netns::{self, Reach},
    plan,
    traffic::{Record, Traffic, TrafficOpts},
};
use serde_json::Value;

/// One stack at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bound of every wait below; generous because the machine may be loaded.
const LIMIT: Duration = Duration::from_secs(30);
/// Per-request timeout (connect, each read and write): several times what a request
/// takes on a loaded 2-core machine with debug builds.
const T: Duration = Duration::from_secs(5);

const PLACES: [&str; 4] = [
    "Loft in SoMa",
    "Garden cottage",
    "Desert house",
    "Strip view suite",
];

fn stack(tag: &str) -> (std::sync::MutexGuard<'static, ()>, Infra) {
    lb_tests::require_root();
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lb = lb_tests::bin_path("lb");
    let opts = Opts::with_bin_dir(lb.parent().expect("bin dir"), tag);
    let infra = Infra::up(&opts, &mut |p| println!("{tag}: {p:?}")).expect("bringing the stack up");
    (guard, infra)
}

/// Runs `f` on a thread in the client namespace.
fn in_client<R: Send + 'static>(infra: &Infra, f: impl FnOnce() -> R + Send + 'static) -> R {
    netns::run_in(&infra.client, f).expect("client thread")
}

fn open_vip(infra: &Infra) -> Conn {
    in_client(infra, || Conn::open(plan::vip_http(), T)).expect("connecting to the VIP")
}

fn workspace_file(rel: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn json(r: &http::Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.text()))
}

/// Waits (bounded) until `stats` holds `n` records that started after `t`; returns them.
fn records_after(traffic: &Traffic, t: Instant, n: usize) -> Vec<Record> {
    let start = Instant::now();
    loop {
        let v: Vec<Record> = traffic
            .stats
            .records()
            .into_iter()
            .filter(|r| r.start > t)
            .collect();
        if v.len() >= n {
            return v;
        }
        assert!(
            start.elapsed() < LIMIT,
            "only {} requests after the mark within {LIMIT:?}",
            v.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_ok(traffic: &Traffic, n: u64) {
    let start = Instant::now();
    while traffic.stats.ok() < n {
        assert!(
            start.elapsed() < LIMIT,
            "traffic did not reach {n} successful requests: {:?} {:?}",
            traffic.stats.errors_by_status(),
            traffic.stats.failures()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The failed requests of `all`, each checked to have overlapped `[from, to]` (the
/// window named `what`, opened by a fault at `from`).
fn failures_inside<'a>(
    all: &'a [Record],
    from: Instant,
    to: Instant,
    what: &str,
) -> Vec<&'a Record> {
    let failed: Vec<&Record> = all.iter().filter(|r| r.outcome.is_err()).collect();
    for r in &failed {
        assert!(
            r.end >= from && r.start <= to,
            "a request failed outside {what}: {:?} (started {:?} after the fault)",
            r.outcome,
            r.start.checked_duration_since(from)
        );
    }
    failed
}

fn summary(recs: &[Record]) -> String {
    let bad: Vec<String> = recs
        .iter()
        .filter(|r| !matches!(r.outcome, Ok(s) if s < 400))
        .take(10)
        .map(|r| format!("{} {:?}", r.path, r.outcome))
        .collect();
    format!("{} requests, first bad: {bad:?}", recs.len())
}

/// Every request as milliseconds since `zero` (start..end, path, outcome), with the
/// named marks, in start order: for failure messages about timing.
fn timeline(recs: &[Record], zero: Instant, marks: &[(&str, Instant)]) -> String {
    let ms = |t: Instant| t.saturating_duration_since(zero).as_secs_f64() * 1000.0;
    let mut v: Vec<&Record> = recs.iter().filter(|r| r.end >= zero).collect();
    v.sort_by_key(|r| r.start);
    let mut o: Vec<String> = marks
        .iter()
        .map(|(n, t)| format!("mark {n} at {:.1} ms", ms(*t)))
        .collect();
    o.extend(v.iter().take(120).map(|r| {
        format!(
            "{:8.1}..{:8.1} {} {:?}",
            ms(r.start),
            ms(r.end),
            r.path,
            r.outcome
        )
    }));
    o.join("\n")
}

/// The tails of the app nodes' and web1's logs, for failure messages.
fn logs(infra: &Infra) -> String {
    let mut o = String::new();
    for s in infra.apps.iter().chain(infra.webs.iter()) {
        // The causes first: a burst of identical "marked down" answers would push the
        // error that tripped the breaker out of a plain tail.
        let text = std::fs::read_to_string(&s.log).unwrap_or_default();
        let causes: Vec<&str> = text
            .lines()
            .filter(|l| {
                (l.contains("WARN") || l.contains("ERROR") || l.contains("INFO  app_tier::pool"))
                    && !l.contains("marked down")
            })
            .collect();
        o.push_str(&format!(
            "--- {} ({}), warnings other than \"marked down\" (last 30):\n{}\n--- tail:\n{}\n",
            s.name,
            s.log.display(),
            causes[causes.len().saturating_sub(30)..].join("\n"),
            s.log_tail()
        ));
    }
    o
}

/// Test 1: static files and API answers through the VIP are correct, from both web nodes.
#[test]
fn static_files_and_api_through_the_vip_from_both_web_nodes() {
    let (_g, infra) = stack("e2estatic");
    let css = workspace_file("app-tier/static/styles/4-common.css");
    let logo = workspace_file("app-tier/static/images/logo.png");
    let checked = in_client(&infra, move || {
        let mut seen = BTreeSet::new();
        // New connections until both web nodes have answered (Maglev spreads them by
        // source port); bounded.
        for _ in 0..200 {
            let mut c = Conn::open(plan::vip_http(), T).expect("connect to the VIP");
            let node = c.get("/node").expect("GET /node");
            assert_eq!(node.status, 200);
            let node = node.text();
            if !seen.insert(node.clone()) {
                continue;
            }
            // Everything below on the same keep-alive connection, so from that node.
            let r = c.get("/").expect("GET /");
            assert_eq!(r.status, 200);
            assert!(
                r.text().contains(&format!("Served by {node}")),
                "{}",
                r.text()
            );

            let r = c.get("/static/styles/4-common.css").expect("GET css");
            assert_eq!(r.status, 200, "{node}");
            assert!(
                r.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/css")
            );
            assert!(r.body == css, "{node}: the CSS differs from the file");
            let r = c.get("/static/images/logo.png").expect("GET logo");
            assert_eq!(r.status, 200, "{node}");
            assert!(r.body == logo, "{node}: the logo differs from the file");
            assert!(
                r.header("etag").is_some(),
                "{node}: static files carry an ETag"
            );

            let r = c.get("/api/v1/status").expect("GET status");
            assert_eq!((r.status, json(&r)["status"].as_str()), (200, Some("OK")));
            let r = c.get("/api/v1/states").expect("GET states");
            assert_eq!(r.status, 200, "{node}: {}", r.text());
            let names: BTreeSet<String> = json(&r)
                .as_array()
                .expect("a list")
                .iter()
                .filter_map(|s| s["name"].as_str().map(str::to_owned))
                .collect();
            for s in ["California", "Arizona", "Nevada"] {
                assert!(names.contains(s), "{node}: {names:?}");
            }
            let r = c.get("/api/v1/places").expect("GET places");
            assert_eq!(r.status, 200);
            let places = json(&r);
            let places = places.as_array().expect("a list");
            assert_eq!(places.len(), 4, "{node}: {places:?}");
            let loft = places
                .iter()
                .find(|p| p["name"] == "Loft in SoMa")
                .expect("the loft");
            let r = c
                .get(&format!(
                    "/api/v1/places/{}/reviews",
                    loft["id"].as_str().expect("id")
                ))
                .expect("GET reviews");
            assert_eq!(r.status, 200);
            assert!(r.text().contains("Great light"), "{}", r.text());
            let r = c.get("/api/v1/nope").expect("GET unknown");
            assert_eq!(r.status, 404, "{node}: unknown API path");

            let r = c.get("/hbnb").expect("GET /hbnb");
            assert_eq!(r.status, 200);
            assert!(
                r.header("content-type")
                    .unwrap_or("")
                    .starts_with("text/html")
            );
            let page = r.text();
            for p in PLACES {
                assert!(page.contains(p), "{node}: /hbnb lacks {p}");
            }
            assert!(page.contains("/static/styles/4-common.css"));
            assert_eq!(c.served, 10, "all on one connection");
            if seen.len() == 2 {
                break;
            }
        }
        seen
    });
    assert_eq!(
        checked,
        BTreeSet::from(["web1".to_owned(), "web2".to_owned()]),
        "both web nodes answered and were checked"
    );
}

/// Test 2: the active LB killed under load: traffic continues via lb2, failed
/// requests only overlap the failover window, and a keep-alive connection opened
/// before the kill still works after it.
#[test]
fn active_lb_killed_under_load_traffic_continues_via_lb2() {
    let (_g, mut infra) = stack("e2elb");
    let mut kept = open_vip(&infra);
    let node = kept.get("/node").expect("GET /node").text();
    let local = kept.local_addr();
    let mut traffic = Traffic::start(
        &infra.client,
        TrafficOpts {
            workers: 3,
            per_conn: 1,
            pace: Duration::from_millis(20),
            record: true,
            timeout: T,
            ..TrafficOpts::default()
        },
    )
    .unwrap();
    wait_ok(&traffic, 60);
    let before = infra.backends(1).iter().map(|b| b.packets).sum::<u64>();

    let t_kill = Instant::now();
    infra.kill_lb(0);
    infra.wait_vrrp(1, "Master", LIMIT).unwrap();
    let t_master = Instant::now();
    // The window: from the kill until lb2 is master, plus the time for its gratuitous
    // ARP to reach the client and for a lost segment's TCP retransmission (RTO 1 s).
    let window_end = t_master + Duration::from_secs(3);
    let after = records_after(&traffic, window_end, 150);
    traffic.stop();
    let all = traffic.stats.records();

    let failed = failures_inside(&all, t_kill, window_end, "the failover window");
    assert!(
        after.iter().all(|r| matches!(r.outcome, Ok(200))),
        "after failover: {}",
        summary(&after)
    );
    println!(
        "lb2 master {:?} after the kill; {} of {} requests failed, all inside the window",
        t_master - t_kill,
        failed.len(),
        all.len()
    );
    // The traffic after the window went through lb2's XDP program.
    let through_lb2 = infra.backends(1).iter().map(|b| b.packets).sum::<u64>();
    assert!(
        through_lb2 > before + 150,
        "lb2 forwarded {before} -> {through_lb2} packets"
    );
    // The established connection survived: same socket, same web node (lb2 has the
    // same ring, and DSR means the web node never noticed).
    let again = kept
        .get("/node")
        .expect("the kept-alive connection after failover");
    assert_eq!(again.text(), node, "same web node");
    assert_eq!(kept.local_addr(), local, "same connection");
    let r = kept
        .get("/api/v1/states")
        .expect("API on the kept connection");
    assert_eq!(r.status, 200);
    assert_eq!(kept.served, 3);
}

/// Test 3: web1 killed: the LBs' health checks take it out of the ring; the only
/// failures are requests that reached web1 before the LB marked it down.
#[test]
fn web1_killed_health_checks_remove_it_only_requests_to_it_fail() {
    let (_g, mut infra) = stack("e2eweb");
    let mut traffic = Traffic::start(
        &infra.client,
        TrafficOpts {
            workers: 3,
            per_conn: 1,
            pace: Duration::from_millis(20),
            paths: vec!["/node", "/static/styles/4-common.css", "/api/v1/places"],
            record: true,
            timeout: T,
        },
    )
    .unwrap();
    wait_ok(&traffic, 60);
    let t_kill = Instant::now();
    infra.kill_web(0);
    infra.wait_backend(0, 0, "down", LIMIT).unwrap();
    let t_down = Instant::now();
    let after = records_after(&traffic, t_down, 150);
    traffic.stop();
    let all = traffic.stats.records();
    let failed = failures_inside(&all, t_kill, t_down, "[kill, marked down]");
    for r in &failed {
        // web1's kernel answered (refused a new connection, reset one in flight):
        // they went to web1, nothing was lost on the way or at web2.
        assert!(
            matches!(r.outcome, Err(Failure::Refused | Failure::Reset)),
            "{:?}",
            r.outcome
        );
    }
    assert!(
        after.iter().all(|r| matches!(r.outcome, Ok(200))),
        "after web1 was marked down: {}",
        summary(&after)
    );
    println!(
        "web1 marked down {:?} after the kill; {} of {} requests failed",
        t_down - t_kill,
        failed.len(),
        all.len()
    );
    let b = infra.backends(0);
    let web1 = b.iter().find(|b| b.name == "web1").unwrap();
    assert_eq!(web1.ring_slots, 0, "web1 left the ring: {b:?}");
    let nodes = in_client(&infra, || {
        (0..40)
            .map(|_| http::get(plan::vip_http(), "/node", T).map(|r| r.text()))
            .collect::<Vec<_>>()
    });
    assert!(
        nodes.iter().all(|n| n.as_deref() == Ok("web2")),
        "{nodes:?}"
    );

    // Healing: web1 back, checks pass, new flows reach it again.
    infra.start_web(0).unwrap();
    infra.wait_backend(0, 0, "up", LIMIT).unwrap();
    let back = in_client(&infra, || {
        (0..200).any(|_| http::get(plan::vip_http(), "/node", T).is_ok_and(|r| r.text() == "web1"))
    });
    assert!(back, "web1 serves again after its restart");
}

/// Test 4: app1 killed: the web tier retries idempotent requests on app2; not one
/// request fails.
#[test]
fn app1_killed_web_tier_retries_on_app2_zero_failures() {
    let (_g, mut infra) = stack("e2eapp");
    let mut traffic = Traffic::start(
        &infra.client,
        TrafficOpts {
            workers: 3,
            per_conn: 4,
            pace: Duration::from_millis(10),
            paths: vec!["/api/v1/places", "/api/v1/states", "/hbnb", "/api/v1/stats"],
            record: true,
            timeout: T,
        },
    )
    .unwrap();
    wait_ok(&traffic, 100);
    let t_kill = Instant::now();
    infra.kill_app(0);
    let after = records_after(&traffic, t_kill, 300);
    traffic.stop();
    let all = traffic.stats.records();
    assert!(
        all.iter().all(|r| matches!(r.outcome, Ok(200))),
        "{}",
        summary(&all)
    );
    println!(
        "{} requests ({} after app1 died), none failed",
        all.len(),
        after.len()
    );
    // app1 is really gone: the web nodes are refused there, so the retries happened.
    let reach = netns::probe(
        &infra.web_ns[0],
        None,
        (plan::APP_BACK[0], plan::APP_PORT).into(),
        T,
    )
    .unwrap();
    assert_eq!(reach, Reach::Refused);
}

/// Test 5: the database restarted: 503s (and only 503s) during the outage, full
/// recovery after, and every write acknowledged with a 201 is there afterwards.
#[test]
fn database_restart_503s_then_recovery_no_acknowledged_write_lost() {
    let (_g, mut infra) = stack("e2edb");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        netns::spawn_in(&infra.client, "writer", move || {
            let mut acked: Vec<(String, String)> = Vec::new();
            let mut statuses = BTreeSet::new();
            let mut unanswered = Vec::new();
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                n += 1;
                let name = format!("e2e-state-{n}");
                let r = Conn::open(plan::vip_http(), T).and_then(|mut c| {
                    c.post_json("/api/v1/states", &format!("{{\"name\":\"{name}\"}}"))
                });
                match r {
                    Ok(r) if r.status == 201 => {
                        let id = json(&r)["id"].as_str().expect("id").to_owned();
                        acked.push((id, name));
                    }
                    Ok(r) => {
                        statuses.insert(r.status);
                    }
                    Err(f) => {
                        unanswered.push(format!("write {n}: {f}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            (acked, statuses, unanswered)
        })
        .unwrap()
    };
    let mut traffic = Traffic::start(
        &infra.client,
        TrafficOpts {
            workers: 2,
            per_conn: 4,
            pace: Duration::from_millis(20),
            paths: vec!["/api/v1/states?per_page=5", "/api/v1/places", "/hbnb"],
            record: true,
            timeout: T,
        },
    )
    .unwrap();
    wait_ok(&traffic, 50);

    let t_kill = Instant::now();
    infra.kill_db();
    // The outage is visible: a 503 comes back (bounded wait).
    let start = Instant::now();
    while !traffic
        .stats
        .records()
        .iter()
        .any(|r| r.start > t_kill && r.outcome == Ok(503))
    {
        assert!(start.elapsed() < LIMIT, "no 503 while the database is down");
        std::thread::sleep(Duration::from_millis(20));
    }
    infra.start_db_again().unwrap();
    let t_up = Instant::now();
    // Recovered once 20 requests in a row succeed (bounded), then everything must.
    // "In a row" by start time: records arrive in completion order, and a slow success
    // that started first would otherwise mark recovery before a quick 503 that started
    // after it (each app node's breaker reopens on its own schedule).
    let start = Instant::now();
    let t_recovered = loop {
        let recs = traffic.stats.records();
        let mut tail: Vec<&Record> = recs.iter().filter(|r| r.start > t_up).collect();
        tail.sort_by_key(|r| r.start);
        if let Some(i) = tail
            .windows(20)
            .position(|w| w.iter().all(|r| r.outcome == Ok(200)))
        {
            break tail[i].start;
        }
        assert!(start.elapsed() < LIMIT, "no recovery: {}", summary(&recs));
        std::thread::sleep(Duration::from_millis(50));
    };
    let after = records_after(&traffic, t_recovered, 150);
    traffic.stop();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, writer_statuses, unanswered) =
        writer.join().expect("writer").expect("writer thread");
    assert!(
        unanswered.is_empty(),
        "writes without an HTTP answer: {unanswered:?}\n{}",
        logs(&infra)
    );

    let all = traffic.stats.records();
    for r in &all {
        match r.outcome {
            Ok(200) => {}
            Ok(503) => assert!(r.end >= t_kill, "a 503 before the database went down"),
            other => panic!("{} answered {other:?}: only 200 or 503 expected", r.path),
        }
    }
    assert!(
        after.iter().all(|r| r.outcome == Ok(200)),
        "after recovery: {}\n{}\n{}",
        summary(&after),
        timeline(&all, t_kill, &[("up", t_up), ("recovered", t_recovered)]),
        logs(&infra)
    );
    assert!(
        writer_statuses.iter().all(|s| *s == 503),
        "writes failed with {writer_statuses:?}, only 503 expected"
    );
    assert!(
        acked.len() >= 10,
        "only {} writes acknowledged",
        acked.len()
    );
    // Every acknowledged write survived the crash.
    let missing = in_client(&infra, move || {
        let mut c = Conn::open(plan::vip_http(), T).expect("connect");
        let mut missing = Vec::new();
        for (id, name) in &acked {
            if c.closed {
                c = Conn::open(plan::vip_http(), T).expect("connect");
            }
            let r = c.get(&format!("/api/v1/states/{id}")).expect("GET state");
            if r.status != 200 || json(&r)["name"] != name.as_str() {
                missing.push((id.clone(), r.status));
            }
        }
        (acked.len(), missing)
    });
    println!(
        "{} writes acknowledged, outage answered 503, {} reads after recovery ok",
        missing.0,
        after.len()
    );
    assert!(
        missing.1.is_empty(),
        "acknowledged writes lost: {:?}",
        missing.1
    );
}

/// Test 6: access control per layer: from the client only the VIP; from a web node
/// not the database; the database only from the app nodes.
#[test]
fn access_control_client_reaches_only_the_vip_web_cannot_reach_the_database() {
    let (_g, infra) = stack("e2efw");
    let probe_t = Duration::from_millis(700);
    let probe = |ns: &lb_tests::Ns, src: Option<std::net::Ipv4Addr>, ip, port| {
        netns::probe(ns, src, (ip, port).into(), probe_t).unwrap()
    };
    let db = (plan::DB, lb_demo::db::PORT);
    let app1 = (plan::APP_BACK[0], plan::APP_PORT);
    let client = &infra.client;
    let web1 = &infra.web_ns[0];
    let app1_ns = &infra.app_ns[0];

    // Positive controls: the probe does see an open port when the path is allowed.
    assert_eq!(probe(client, None, plan::VIP, 80), Reach::Open);
    assert_eq!(probe(web1, None, app1.0, app1.1), Reach::Open);
    assert_eq!(probe(app1_ns, None, db.0, db.1), Reach::Open);

    // The client: web nodes' own addresses, the LBs and the inner tiers are closed.
    for (ip, port) in [
        (plan::WEB_FRONT[0], 80),
        (plan::LB_FRONT[0], 9100),
        app1,
        (plan::APP_BACK[1], plan::APP_PORT),
        db,
    ] {
        assert_ne!(
            probe(client, None, ip, port),
            Reach::Open,
            "client -> {ip}:{port}"
        );
    }
    // Even with routes through web1 (an attacker's best guess), nothing forwards.
    for net in ["10.210.1.0/24", "10.210.2.0/24"] {
        client
            .route(&[net, "via", &plan::WEB_FRONT[0].to_string()])
            .unwrap();
    }
    assert_ne!(
        probe(client, None, app1.0, app1.1),
        Reach::Open,
        "client -> app1"
    );
    assert_ne!(probe(client, None, db.0, db.1), Reach::Open, "client -> db");

    // A web node cannot reach the database, not even routed through app1.
    assert_ne!(probe(web1, None, db.0, db.1), Reach::Open, "web1 -> db");
    web1.route(&["10.210.2.0/24", "via", &plan::APP_BACK[0].to_string()])
        .unwrap();
    assert_ne!(
        probe(web1, None, db.0, db.1),
        Reach::Open,
        "web1 -> db via app1"
    );

    // App nodes accept only web nodes: app2 (on the same segment) is refused by app1.
    assert_ne!(
        probe(&infra.app_ns[1], None, app1.0, app1.1),
        Reach::Open,
        "app2 -> app1"
    );
    // The database's own rule: an address on the data segment that is not an app
    // node's is dropped, the app node's own address is let in.
    app1_ns.addr("eth1", "10.210.2.99/24").unwrap();
    let stranger = "10.210.2.99".parse().unwrap();
    assert_eq!(probe(app1_ns, Some(stranger), db.0, db.1), Reach::Silent);
    assert_eq!(
        probe(app1_ns, Some(plan::APP_DATA[0]), db.0, db.1),
        Reach::Open
    );
    // The ruleset is what the design says (policy drop, in every node's table).
    let rules = infra
        .db_ns
        .run(&["nft", "list", "table", "inet", "lbdemo"])
        .unwrap();
    assert!(rules.contains("policy drop"), "{rules}");
}

/// Test 7: headless Chromium in the client namespace loads /hbnb through the VIP,
/// the rendered page lists the places, and a screenshot is saved under target/e2e/.
#[test]
fn chromium_renders_hbnb_through_the_vip_with_a_screenshot() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium is not installed: run `cargo xtask setup` (Debian package chromium)"
    );
    let (_g, infra) = stack("e2eweb7");
    let target = lb_tests::bin_path("lb")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf();
    let out_dir = target.join("e2e");
    std::fs::create_dir_all(&out_dir).unwrap();
    let png = out_dir.join("hbnb.png");
    let _ = std::fs::remove_file(&png);
    let url = format!("http://{}/hbnb", plan::VIP);
    let chromium = |extra: &[String]| -> std::process::Output {
        let profile: PathBuf = infra.dir.join(format!("chromium-{}", lb_tests::next_seq()));
        let mut cmd = infra.client.cmd("timeout");
        cmd.args([
            "120",
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--virtual-time-budget=5000",
            "--window-size=1280,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(&url)
        .stdin(std::process::Stdio::null());
        cmd.output().expect("running chromium")
    };

    let dom = chromium(&["--dump-dom".to_owned()]);
    let html = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.status.success(),
        "chromium --dump-dom failed ({}): {}",
        dom.status,
        String::from_utf8_lossy(&dom.stderr)
    );
    for p in PLACES {
        assert!(
            html.contains(p),
            "the rendered page lacks {p}:\n{html:.2000}"
        );
    }
    assert_eq!(
        html.matches("<article class=\"place\"").count(),
        4,
        "four place cards"
    );

    let shot = chromium(&[format!("--screenshot={}", png.display())]);
    assert!(
        shot.status.success(),
        "chromium --screenshot failed ({}): {}",
        shot.status,
        String::from_utf8_lossy(&shot.stderr)
    );
    let bytes = std::fs::read(&png).expect("the screenshot file");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 10_000,
        "{} is not a real screenshot ({} bytes)",
        png.display(),
        bytes.len()
    );
    println!("screenshot: {} ({} bytes)", png.display(), bytes.len());
}

/// The demo binary itself: comes up, refuses a second demo while it runs, exits by
/// itself with `--duration`, and leaves nothing behind.
#[test]
fn demo_binary_runs_refuses_a_second_instance_and_cleans_up() {
    lb_tests::require_root();
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let bin = lb_tests::bin_path("lb-demo");
    if let Some(pid) = lb_demo::run::running_demo() {
        panic!("a demo is running (PID {pid}); this test needs the machine's demo slot");
    }
    let dir = lb_tests::lbnet::TempDir::new("e2edemo").unwrap();
    let log = dir.0.join("demo.out");
    let mut first = std::process::Command::new(&bin)
        .args(["--duration", "6"])
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let pid = first.id();
    lb_tests::wait_for("the demo to be up", Duration::from_secs(90), || {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the demo exited early:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("all up in")
            .then_some(())
    });
    let second = std::process::Command::new(&bin)
        .args(["--duration", "1"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!second.status.success(), "a second demo started");
    let msg = String::from_utf8_lossy(&second.stderr);
    assert!(
        msg.contains(&format!("already running (PID {pid})")),
        "{msg}"
    );
    let status = lb_tests::wait_for("the demo to exit", Duration::from_secs(90), || {
        first.try_wait().unwrap()
    });
    let out = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}:\n{out}");
    assert!(out.contains("lb1 is now MASTER"), "{out}");
    assert!(out.contains("done: nothing left behind"), "{out}");
    let left: Vec<String> = String::from_utf8_lossy(
        &std::process::Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .lines()
    .filter(|l| l.starts_with(&format!("{}-{pid}-", lb_tests::NS_PREFIX)))
    .map(str::to_owned)
    .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!Path::new(lb_demo::run::STATE).exists(), "state file left");
}

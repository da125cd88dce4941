//! Database outage and recovery, request timeout, graceful shutdown, health checks and
//! the start-up schema check.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use app_tier::config::DbUrl;
use app_tier::migrate::{MIGRATOR, SchemaError};
use app_tier::testing::{APP_PASSWORD, MariaDb};
use app_tier::{AppState, Config, ServeError};
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::common::{
    app_on, config_for, eventually, http, serve_on_socket, shared_app, wait_for_lock_waiter,
};

#[derive(Default)]
struct Load {
    acked: Vec<String>,
    statuses: BTreeMap<u16, u64>,
    bad_bodies: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_outage_under_load_503_then_recovers_without_losing_acknowledged_writes() {
    let server = Arc::new(
        tokio::task::spawn_blocking(MariaDb::start)
            .await
            .unwrap()
            .expect("own MariaDB"),
    );
    let app = app_on(&server, |c, _| {
        c.database.acquire_timeout_ms = 1_000;
        c.database.max_connections = 8;
    })
    .await;
    let (addr, stop_server, server_task) = serve_on_socket(app.state.clone()).await;

    let load = Arc::new(Mutex::new(Load::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (load, stop) = (Arc::clone(&load), Arc::clone(&stop));
        workers.push(tokio::spawn(async move {
            // Bounded: at most 20 000 requests per worker even if the test logic hangs.
            for i in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = json!({"name": format!("w{w}-{i}")}).to_string();
                let (status, text) = http(addr, "POST", "/api/v1/states", Some(&body))
                    .await
                    .expect("server reachable");
                let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                {
                    let mut l = load.lock().unwrap();
                    *l.statuses.entry(status).or_default() += 1;
                    match status {
                        201 => l
                            .acked
                            .push(v["id"].as_str().expect("201 has an id").to_string()),
                        503 if v["error"].is_string() => {}
                        _ => l.bad_bodies.push(format!("{status} {text}")),
                    }
                }
                if status == 503 {
                    // Pace the retries so the outage does not turn into a busy loop.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    let acked = |n: usize| {
        let load = Arc::clone(&load);
        move || {
            let ok = load.lock().unwrap().acked.len() >= n;
            async move { ok.then_some(()) }
        }
    };
    eventually(
        "20 acknowledged writes before the outage",
        Duration::from_secs(60),
        acked(20),
    )
    .await;

    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.kill())
        .await
        .unwrap()
        .expect("kill mariadbd");
    let unavailable = |n: u64| {
        let load = Arc::clone(&load);
        move || {
            let ok = load
                .lock()
                .unwrap()
                .statuses
                .get(&503)
                .copied()
                .unwrap_or(0)
                >= n;
            async move { ok.then_some(()) }
        }
    };
    eventually(
        "503s while the database is down",
        Duration::from_secs(60),
        unavailable(10),
    )
    .await;
    assert_eq!(
        http(addr, "GET", "/healthz", None).await.unwrap().0,
        200,
        "the process is alive"
    );
    let (s, body) = http(addr, "GET", "/readyz", None).await.unwrap();
    assert_eq!(s, 503, "{body}");
    assert!(!body.contains(APP_PASSWORD));
    let acked_during_outage = load.lock().unwrap().acked.len();

    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.start_again())
        .await
        .unwrap()
        .expect("restart mariadbd");
    eventually(
        "writes acknowledged again after the restart",
        Duration::from_secs(60),
        acked(acked_during_outage + 20),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (s, _) = http(addr, "GET", "/readyz", None).await.unwrap();
    assert_eq!(s, 200, "ready again without a restart of the app");

    // Workers are joined: take the results out so no lock is held across an await.
    let load = std::mem::take(&mut *load.lock().unwrap());
    assert!(
        load.bad_bodies.is_empty(),
        "only 201 and JSON 503 are acceptable: {:?}",
        load.bad_bodies
    );
    let present: Vec<String> = sqlx::query_scalar("SELECT id FROM states")
        .fetch_all(app.state.db.primary())
        .await
        .unwrap();
    let missing: Vec<&String> = load
        .acked
        .iter()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost: {missing:?}",
        missing.len()
    );
    for id in load.acked.iter().step_by(10) {
        assert_eq!(
            app.get(&format!("/api/v1/states/{id}")).await.0,
            StatusCode::OK
        );
    }
    stop_server.send(()).unwrap();
    server_task.await.unwrap().unwrap();
}

#[tokio::test]
async fn request_timeout_answers_503_instead_of_hanging() {
    let server = MariaDb::shared();
    let app = app_on(server, |c, _| c.request_timeout_ms = 300).await;
    let mut admin = server.admin().await.unwrap();
    // Another session holds a write lock: the API's read blocks inside MariaDB.
    sqlx::raw_sql(&format!("USE {}; LOCK TABLES states WRITE", app.database))
        .execute(&mut admin)
        .await
        .unwrap();
    let (s, v) = app.get("/api/v1/states").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("request timed out"))
    );
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut admin)
        .await
        .unwrap();
    let (s, _) = app.get("/api/v1/states").await;
    assert_eq!(s, StatusCode::OK);
    let metrics = app.raw("GET", "/metrics", vec![], None).await.text();
    assert!(
        metrics.contains("app_http_request_timeouts_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests() {
    let server = MariaDb::shared();
    let app = app_on(server, |_, _| {}).await;
    app.create("/api/v1/states", json!({"name": "Maine"})).await;
    let (addr, shutdown, task) = serve_on_socket(app.state.clone()).await;
    let mut admin = server.admin().await.unwrap();
    sqlx::raw_sql(&format!("USE {}; LOCK TABLES states WRITE", app.database))
        .execute(&mut admin)
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move { http(addr, "GET", "/api/v1/states", None).await });
    wait_for_lock_waiter(server, &app.database).await;

    shutdown.send(()).unwrap();
    // New connections are refused once the server stops accepting...
    eventually(
        "the listener to close",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    assert!(
        !task.is_finished(),
        "run() must wait for the in-flight request"
    );
    // ...but the request already in flight completes normally.
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut admin)
        .await
        .unwrap();
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Maine"));
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn healthz_and_readyz() {
    let app = shared_app().await;
    assert_eq!(
        app.get("/healthz").await,
        (StatusCode::OK, json!({"status": "alive"}))
    );
    assert_eq!(
        app.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );
}

/// A port nothing listens on (bound, then released).
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn database_down_fails_fast_with_json_503_and_no_password() {
    let mut config = Config::new(DbUrl::new(format!(
        "mysql://app:{APP_PASSWORD}@127.0.0.1:{}/hbnb",
        dead_port()
    )));
    config.database.acquire_timeout_ms = 300;
    let state = AppState::new(&config).unwrap();
    let app = crate::common::TestApp {
        router: app_tier::app(state.clone()),
        state,
        database: "hbnb".into(),
    };
    assert_eq!(app.get("/healthz").await.0, StatusCode::OK);
    for path in ["/readyz", "/api/v1/states", "/api/v1/stats"] {
        let r = app.raw("GET", path, vec![], None).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(r.json()["error"], "database unavailable");
        assert_eq!(r.headers["retry-after"], "1");
        assert!(!r.text().contains(APP_PASSWORD));
    }
    // A write is refused before anything could be half-done.
    let (s, _) = app.post("/api/v1/states", json!({"name": "X"})).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    // And the start-up error of `serve` names the problem without the password.
    let err = app_tier::serve(&config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::Schema(SchemaError::Database(_))),
        "{err:?}"
    );
    assert!(!format!("{err} {err:?}").contains(APP_PASSWORD), "{err:?}");
}

#[tokio::test]
async fn serve_refuses_a_schema_that_is_behind() {
    let server = MariaDb::shared();
    let database = server.create_database().await.unwrap();
    let mut config = config_for(server, &database);
    config.listen = "127.0.0.1:0".parse().unwrap();

    let err = app_tier::serve(&config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServeError::Schema(SchemaError::Behind {
                applied: 0,
                required: 5,
                ..
            })
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("app-tier migrate"), "{err}");

    // Only the first migration applied: still behind, and says which one is missing.
    let state = AppState::new(&config).unwrap();
    let first = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(MIGRATOR.iter().take(1).cloned().collect()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    first.run(state.db.primary()).await.unwrap();
    let err = app_tier::serve(&config, std::future::pending())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServeError::Schema(SchemaError::Behind { applied: 1, required: 5, ref missing }) if missing == "2,3,4,5"),
        "{err:?}"
    );

    app_tier::migrate::run(state.db.primary()).await.unwrap();
    app_tier::migrate::check(state.db.primary()).await.unwrap();
    // Up to date: serves (and stops at once, the shutdown future being ready).
    app_tier::serve(&config, std::future::ready(()))
        .await
        .unwrap();
}

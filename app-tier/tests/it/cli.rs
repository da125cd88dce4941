//! The binary end to end: `migrate`, `seed`, `serve`, SIGTERM draining, logs.

use std::process::Stdio;
use std::time::Duration;

use app_tier::testing::{APP_PASSWORD, APP_USER, MariaDb};

use crate::common::{eventually, http, wait_for_lock_waiter};

const BIN: &str = env!("CARGO_BIN_EXE_app-tier");

fn command(config: &std::path::Path, sub: &str) -> std::process::Command {
    let mut c = std::process::Command::new(BIN);
    c.arg(sub)
        .arg("--config")
        .arg(config)
        // The password comes from the environment, not the file.
        .env("APP_TIER_DATABASE_PASSWORD", APP_PASSWORD)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_migrates_seeds_serves_and_drains_on_sigterm() {
    let server = MariaDb::shared();
    let database = server.create_database().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("app.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[database]\nurl = \"mysql://{APP_USER}@127.0.0.1:{}/{database}\"\n",
            server.port()
        ),
    )
    .unwrap();

    let out = command(&config, "serve").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "serve must refuse an unmigrated database"
    );
    assert!(
        stderr.contains("schema is behind") && stderr.contains("app-tier migrate"),
        "{stderr}"
    );
    assert!(!stderr.contains(APP_PASSWORD));

    for sub in ["migrate", "seed", "seed"] {
        let out = command(&config, sub).output().unwrap();
        assert!(
            out.status.success(),
            "{sub}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let log = dir.path().join("serve.log");
    let mut child = tokio::process::Command::from(command(&config, "serve"))
        .stderr(std::fs::File::create(&log).unwrap())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(
        "the server to answer /healthz",
        Duration::from_secs(30),
        || async move {
            matches!(http(addr, "GET", "/healthz", None).await, Ok((200, _))).then_some(())
        },
    )
    .await;
    let (s, stats) = http(addr, "GET", "/api/v1/stats", None).await.unwrap();
    assert_eq!(s, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(
        stats["places"], 4,
        "seeded once, despite running twice: {stats}"
    );

    let mut admin = server.admin().await.unwrap();
    sqlx::raw_sql(&format!("USE {database}; LOCK TABLES states WRITE"))
        .execute(&mut admin)
        .await
        .unwrap();
    let in_flight = tokio::spawn(async move { http(addr, "GET", "/api/v1/states", None).await });
    wait_for_lock_waiter(server, &database).await;
    let pid = libc::pid_t::try_from(child.id().unwrap()).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    eventually(
        "the listener to close after SIGTERM",
        Duration::from_secs(10),
        || async move {
            tokio::net::TcpStream::connect(addr)
                .await
                .is_err()
                .then_some(())
        },
    )
    .await;
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut admin)
        .await
        .unwrap();
    let (status, body) = in_flight.await.unwrap().unwrap();
    assert_eq!(status, 200, "the in-flight request completes: {body}");
    assert!(body.contains("California"));
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(exit.success(), "{exit}");

    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("app_tier::access") && log.contains("route=\"/api/v1/stats\" status=200"),
        "{log}"
    );
    assert!(!log.contains(APP_PASSWORD), "password leaked into the log");
}

#[test]
fn a_config_error_names_its_key_and_never_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("app.toml");
    const DB: &str = "[database]\nurl = 'mysql://hbnb@127.0.0.1/hbnb'\n";
    for (text, want) in [
        (
            format!("{DB}replica_urls = \"mysql://hbnb:S3cretPW@replica/hbnb\"\n"),
            "database.replica_urls: expected a list",
        ),
        (
            format!("{DB}password = 31415926\n"),
            "database.password: expected a string",
        ),
        (
            "[database]\nurl = 'mysql://hbnb:S3c/retPW@localhost/hbnb'\n".to_owned(),
            "config key database.url: not a valid mysql:// URL (mysql://hbnb:***@localhost/hbnb)",
        ),
        (
            format!("{DB}max_connections = \"ten\"\n"),
            "database.max_connections: expected an integer",
        ),
        (
            format!("listen = \"nothost\"\n{DB}"),
            "listen: expected an IP address and port",
        ),
        (
            format!("max_body_bytes = -5\n{DB}"),
            "max_body_bytes: expected a non-negative integer",
        ),
        (
            format!("{DB}acquire_timeout_ms = 0\n"),
            "config key database.acquire_timeout_ms: must be from 1 to",
        ),
    ] {
        std::fs::write(&config, &text).unwrap();
        let out = std::process::Command::new(BIN)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{text}");
        assert!(stderr.contains(want), "{text}\n{stderr}");
        for secret in ["S3cretPW", "31415926", "S3c/", "retPW"] {
            assert!(!stderr.contains(secret), "{secret} printed:\n{stderr}");
        }
    }
}

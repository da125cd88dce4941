//! Shared helpers: an app on a fresh database, in-process requests, a tiny HTTP/1.1
//! client for tests that need a real socket, and bounded polling.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use app_tier::config::DbUrl;
use app_tier::testing::MariaDb;
use app_tier::{AppState, Config};
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

/// An application instance on its own, migrated database.
#[derive(Clone)]
pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
    pub database: String,
}

/// Config for `database` on `server`, defaults elsewhere, fast fail-over settings.
pub fn config_for(server: &MariaDb, database: &str) -> Config {
    let mut c = Config::new(DbUrl::new(server.url(database)));
    c.database.acquire_timeout_ms = 2_000;
    c.database.retry_interval_ms = 100;
    c
}

/// A fresh migrated database on `server` and an app on it; `tweak` edits the config.
pub async fn app_on(server: &MariaDb, tweak: impl FnOnce(&mut Config, &str)) -> TestApp {
    let database = server.create_database().await.expect("create database");
    let mut config = config_for(server, &database);
    tweak(&mut config, &database);
    config.validate().expect("valid config");
    let state = AppState::new(&config).expect("state");
    app_tier::migrate::run(state.db.primary())
        .await
        .expect("migrate");
    let router = app_tier::app(state.clone());
    TestApp {
        state,
        router,
        database,
    }
}

/// An app on the shared server.
pub async fn shared_app() -> TestApp {
    app_on(MariaDb::shared(), |_, _| {}).await
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl TestApp {
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> Reply {
        let mut req = Request::builder()
            .method(Method::from_bytes(method.as_bytes()).unwrap())
            .uri(path);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let r = self
            .raw(method, path, bytes, Some("application/json"))
            .await;
        let v = if r.body.is_empty() {
            Value::Null
        } else {
            r.json()
        };
        (r.status, v)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call("GET", path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("POST", path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call("PUT", path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call("DELETE", path, None).await
    }

    /// POST that must answer 201; returns the new id.
    pub async fn create(&self, path: &str, body: Value) -> String {
        let (s, v) = self.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "POST {path} {body}: {v}");
        v["id"].as_str().expect("id").to_string()
    }

    /// Row counts of every table, read directly (not through the API).
    pub async fn counts(&self) -> BTreeMap<&'static str, i64> {
        let mut out = BTreeMap::new();
        for t in [
            "states",
            "cities",
            "users",
            "places",
            "reviews",
            "amenities",
            "place_amenity",
        ] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}"))
                .fetch_one(self.state.db.primary())
                .await
                .unwrap();
            out.insert(t, n);
        }
        out
    }
}

/// Serves `state` on a real socket until the returned sender is dropped or fired.
pub async fn serve_on_socket(
    state: AppState,
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app_tier::run(listener, state, async move {
        let _ = rx.await;
    }));
    (addr, tx, task)
}

/// One HTTP/1.1 request over a fresh TCP connection (`Connection: close`).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`; panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "gave up after {limit:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until some session of `database` is blocked on a metadata lock, i.e.
/// a request has reached the database and is stuck behind a test's LOCK TABLES.
pub async fn wait_for_lock_waiter(server: &MariaDb, database: &str) {
    let mut admin = server.admin().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ? AND STATE LIKE 'Waiting for table%'",
        )
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no query ever waited on the table lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

//! The request path's connection pool (`app_tier::pool`): no round trip of its own on a
//! healthy connection, and recovery without errors after the database restarts, after
//! its connections are killed, and after a request is cut off mid-statement.

use std::sync::Arc;
use std::time::Duration;

use app_tier::pool::PING_AFTER_IDLE;
use app_tier::testing::MariaDb;
use axum::http::StatusCode;
use serde_json::json;

use crate::common::{TestApp, app_on, eventually, wait_for_lock_waiter};

/// A global status counter of `server` (the test's own server: nothing else uses it).
async fn global_status(server: &MariaDb, name: &str) -> u64 {
    let mut admin = server.admin().await.unwrap();
    let v: String = sqlx::query_scalar(
        "SELECT VARIABLE_VALUE FROM information_schema.GLOBAL_STATUS WHERE VARIABLE_NAME = ?",
    )
    .bind(name)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    v.parse().unwrap()
}

/// Four requests at once, so the pool holds several connections.
async fn four_at_once(app: &TestApp, path: &str) -> [StatusCode; 4] {
    let (a, b, c, d) = tokio::join!(app.get(path), app.get(path), app.get(path), app.get(path));
    [a.0, b.0, c.0, d.0]
}

/// An app on `server` whose requests time out after 300 ms, with a pool of `max`
/// connections.
async fn app_cutting_off(server: &MariaDb, max: u32) -> TestApp {
    app_on(server, |c, _| {
        c.request_timeout_ms = 300;
        c.database.max_connections = max;
    })
    .await
}

/// Write-locks `table` of `database` from a new admin connection, which holds the lock
/// until [`unlock`].
async fn lock_table(server: &MariaDb, database: &str, table: &str) -> sqlx::MySqlConnection {
    let mut admin = server.admin().await.unwrap();
    sqlx::raw_sql(&format!("USE {database}; LOCK TABLES {table} WRITE"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin
}

async fn unlock(mut admin: sqlx::MySqlConnection) {
    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut admin)
        .await
        .unwrap();
}

fn pool_gauge(metrics: &str, state: &str) -> u32 {
    let key = format!("app_db_pool_connections{{target=\"primary\",state=\"{state}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&key))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_connections_are_reused_without_pings_and_a_quiet_restart_costs_no_error() {
    let server = Arc::new(
        tokio::task::spawn_blocking(MariaDb::start)
            .await
            .unwrap()
            .expect("own MariaDB"),
    );
    let app = app_on(&server, |_, _| {}).await;
    let id = app
        .create("/api/v1/states", json!({"name": "Oregon"}))
        .await;
    let path = format!("/api/v1/states/{id}");
    assert_eq!(four_at_once(&app, &path).await, [StatusCode::OK; 4]);

    // COM_PING counts as an admin command; nothing else sends one to this server.
    let pings = global_status(&server, "Com_admin_commands").await;
    for _ in 0..20 {
        assert_eq!(app.get(&path).await.0, StatusCode::OK);
        assert_eq!(app.get("/api/v1/states").await.0, StatusCode::OK);
    }
    assert_eq!(
        global_status(&server, "Com_admin_commands").await - pings,
        0,
        "a connection back from a finished request is reused without a ping"
    );

    // Restarted while nobody was looking: every pooled connection is dead.
    let s = Arc::clone(&server);
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap()
        .expect("restart mariadbd");
    tokio::time::sleep(PING_AFTER_IDLE).await;
    assert_eq!(four_at_once(&app, &path).await, [StatusCode::OK; 4]);
    for _ in 0..10 {
        assert_eq!(app.get(&path).await.0, StatusCode::OK);
    }
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn connections_killed_between_requests_cost_at_most_one_503() {
    let server = MariaDb::shared();
    let app = app_on(server, |_, _| {}).await;
    let id = app.create("/api/v1/states", json!({"name": "Utah"})).await;
    let path = format!("/api/v1/states/{id}");
    assert_eq!(four_at_once(&app, &path).await, [StatusCode::OK; 4]);

    let mut admin = server.admin().await.unwrap();
    let ids: Vec<i64> = sqlx::query_scalar(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = ? AND USER = 'app'",
    )
    .bind(&app.database)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!ids.is_empty());
    for id in ids {
        sqlx::raw_sql(&format!("KILL CONNECTION {id}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // Straight away, well within PING_AFTER_IDLE: the first request may meet a dead
    // connection; after its 503 the pool tests the others and opens new ones.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(app.get(&path).await.0.as_u16());
    }
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert!(
        failed <= 1 && statuses[1..].iter().all(|s| *s == 200),
        "{statuses:?}"
    );
    assert!(statuses[0] == 200 || statuses[0] == 503, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cut_off_mid_statement_gives_its_connection_back_in_step() {
    let server = MariaDb::shared();
    let app = app_cutting_off(server, 2).await;
    app.create("/api/v1/states", json!({"name": "Idaho"})).await;
    let admin = lock_table(server, &app.database, "states").await;
    // The SELECT is sent, then the handler is dropped while it waits for the answer.
    let (s, _) = app.get("/api/v1/states").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    wait_for_lock_waiter(server, &app.database).await;
    unlock(admin).await;
    // The abandoned result is read and the connection checked, then it is reused: the
    // pool does not grow, and every answer is the right one.
    let app_ref = &app;
    eventually(
        "the cut-off connection back in the pool",
        Duration::from_secs(10),
        || async move {
            let m = app_ref.raw("GET", "/metrics", vec![], None).await.text();
            (pool_gauge(&m, "in_use") == 0 && pool_gauge(&m, "idle") >= 1).then_some(())
        },
    )
    .await;
    for _ in 0..5 {
        let (s, v) = app.get("/api/v1/states").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(v[0]["name"], "Idaho");
        let (s, v) = app.get("/api/v1/stats").await;
        assert_eq!((s, v["states"].as_i64()), (StatusCode::OK, Some(1)));
    }
    let m = app.raw("GET", "/metrics", vec![], None).await.text();
    assert!(
        pool_gauge(&m, "in_use") + pool_gauge(&m, "idle") <= 2,
        "{m}"
    );
}

/// Transactions open on `database`'s connections, as MariaDB sees them.
async fn open_transactions(server: &MariaDb, database: &str) -> i64 {
    let mut admin = server.admin().await.unwrap();
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.INNODB_TRX t \
         JOIN information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id WHERE p.DB = ?",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_cut_off_is_rolled_back_before_its_connection_is_reused() {
    let server = MariaDb::shared();
    let app = app_cutting_off(server, 1).await;
    let st = app
        .create("/api/v1/states", json!({"name": "Nevada"}))
        .await;
    let city = app
        .create(
            &format!("/api/v1/states/{st}/cities"),
            json!({"name": "Reno"}),
        )
        .await;
    let user = app
        .create("/api/v1/users", json!({"email": "n@x.y", "password": "p"}))
        .await;
    let wifi = app
        .create("/api/v1/amenities", json!({"name": "Wifi"}))
        .await;
    let before = app.counts().await;
    let admin = lock_table(server, &app.database, "places").await;
    // With amenity ids a create is a transaction: BEGIN, then the INSERT waits on the
    // lock until the request timeout drops the handler.
    let (s, _) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "Cut off", "amenity_ids": [wifi]}),
        )
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    wait_for_lock_waiter(server, &app.database).await;
    unlock(admin).await;
    // The INSERT then runs inside the abandoned transaction; the pool rolls it back
    // before anyone gets the connection (there is only one).
    let (s, v) = app.get("/api/v1/places").await;
    assert_eq!((s, v.as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    assert_eq!(
        app.counts().await,
        before,
        "the cut-off create left nothing"
    );
    assert_eq!(open_transactions(server, &app.database).await, 0);
    // And the connection works normally afterwards.
    let (s, _) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "After", "amenity_ids": [wifi]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(open_transactions(server, &app.database).await, 0);
}

/// Whether a session of `database` waits for a table lock (behind a test's LOCK TABLES).
async fn table_lock_waiter(server: &MariaDb, database: &str) -> bool {
    let mut admin = server.admin().await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
         WHERE DB = ? AND STATE LIKE 'Waiting for table%'",
    )
    .bind(database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    n > 0
}

/// What MariaDB says `database`'s sessions and transactions are doing, for a failure
/// message.
async fn sessions(server: &MariaDb, database: &str) -> String {
    let mut admin = server.admin().await.unwrap();
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT CONCAT_WS(' | ', p.ID, p.COMMAND, p.STATE, IFNULL(t.trx_state, '-'), \
         IFNULL(p.INFO, '-')) \
         FROM information_schema.PROCESSLIST p \
         LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID \
         WHERE p.DB = ?",
    )
    .bind(database)
    .fetch_all(&mut admin)
    .await
    .unwrap_or_default();
    rows.join("\n")
}

fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_answers_503_but_trips_no_breaker_and_stays_ready() {
    let server = MariaDb::shared();
    let app = app_on(server, |c, _| {
        c.database.max_connections = 1;
        // Room for the PUT's own acquire (a ping, a connect) while the rest of the
        // suite loads the server: a slow one would trip the breaker below.
        c.database.acquire_timeout_ms = 5_000;
        // A tripped breaker would still be open when the test ends.
        c.database.retry_interval_ms = 600_000;
        // The PUT waits on the lock until the test lets it go, however long finding it
        // waiting takes on a loaded machine; and the GET's 503 must be the pool's
        // (after acquire_timeout_ms), not the request's own deadline.
        c.request_timeout_ms = 120_000;
    })
    .await;
    let id = app.create("/api/v1/states", json!({"name": "Ohio"})).await;
    let path = format!("/api/v1/states/{id}");
    // Another session holds the table; the PUT waits for it on the pool's only
    // connection.
    let mut admin = server.admin().await.unwrap();
    sqlx::raw_sql(&format!("USE {}; LOCK TABLES states WRITE", app.database))
        .execute(&mut admin)
        .await
        .unwrap();
    let put_result = Arc::new(std::sync::Mutex::new(None));
    let put = {
        let (app, path, result) = (app.clone(), path.clone(), Arc::clone(&put_result));
        tokio::spawn(async move {
            let answer = app.put(&path, json!({"name": "Ohio!"})).await;
            *result.lock().unwrap() = Some(answer);
        })
    };
    let (early, db) = (&put_result, &app.database);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if table_lock_waiter(server, db).await {
            break;
        }
        let answer = early.lock().unwrap().clone();
        if answer.is_some() || std::time::Instant::now() > deadline {
            panic!(
                "the PUT did not wait on the table lock ({answer:?}); sessions:\n{}",
                sessions(server, db).await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // No connection comes free within acquire_timeout_ms: 503, "busy".
    let r = app.raw("GET", &path, vec![], None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json(), json!({"error": "database busy"}));
    assert_eq!(r.headers["retry-after"], "1");
    // The primary answers, on a connection of its own: ready.
    assert_eq!(
        app.get("/readyz").await,
        (StatusCode::OK, json!({"status": "ready"}))
    );

    sqlx::raw_sql("UNLOCK TABLES")
        .execute(&mut admin)
        .await
        .unwrap();
    put.await.unwrap();
    let (s, v) = put_result.lock().unwrap().take().expect("the PUT answered");
    assert_eq!(s, StatusCode::OK, "{v}");
    // Nothing tripped: served at once, not refused for retry_interval_ms.
    let (s, v) = app.get(&path).await;
    assert_eq!((s, &v["name"]), (StatusCode::OK, &json!("Ohio!")));
    assert_eq!(app.get("/readyz").await.0, StatusCode::OK);
    let m = app.raw("GET", "/metrics", vec![], None).await.text();
    assert_eq!(counter(&m, "app_db_busy_total"), 1, "{m}");
    assert_eq!(counter(&m, "app_db_unavailable_total"), 0, "{m}");
}

//! Primary-replica: a second MariaDB replicating with GTID serves the reads.

use std::sync::Arc;
use std::time::Duration;

use app_tier::config::DbUrl;
use app_tier::testing::MariaDb;
use axum::http::StatusCode;
use serde_json::json;

use crate::common::{app_on, eventually};

async fn server_id(conn: &mut sqlx::MySqlConnection) -> u32 {
    sqlx::query_scalar("SELECT @@server_id")
        .fetch_one(conn)
        .await
        .unwrap()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_serves_reads_writes_go_to_primary_and_reads_fall_back_when_it_is_down() {
    let primary = Arc::new(blocking(MariaDb::start).await.expect("primary"));
    let p = Arc::clone(&primary);
    let replica = Arc::new(
        blocking(move || MariaDb::start_replica_of(&p))
            .await
            .expect("replica"),
    );
    let replica_url = {
        let r = Arc::clone(&replica);
        move |db: &str| r.url(db)
    };
    let app = app_on(&primary, |c, db| {
        c.database.replica_urls = vec![DbUrl::new(replica_url(db))]
    })
    .await;
    let (p, r) = (Arc::clone(&primary), Arc::clone(&replica));
    blocking(move || r.sync_with(&p))
        .await
        .expect("schema replicated");

    // A row that exists only on the replica (not binlogged there, never on the primary):
    // if the API can see it, the read was served by the replica.
    let mut radmin = replica.admin().await.unwrap();
    sqlx::raw_sql(&format!(
        "SET SESSION sql_log_bin = 0; INSERT INTO {}.states (id, name) VALUES ('replica-only', 'Only on the replica')",
        app.database
    ))
    .execute(&mut radmin)
    .await
    .unwrap();
    let (s, v) = app.get("/api/v1/states/replica-only").await;
    assert_eq!(
        (s, v["name"].as_str()),
        (StatusCode::OK, Some("Only on the replica"))
    );
    assert!(app.state.metrics.acquires("replica0") > 0);
    let on_primary: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM states WHERE id = 'replica-only'")
            .fetch_one(app.state.db.primary())
            .await
            .unwrap();
    assert_eq!(on_primary, 0);

    // Writes go to the primary (the replica could not have replicated it back).
    let primary_before = app.state.metrics.acquires("primary");
    let (s, created) = app.post("/api/v1/states", json!({"name": "Written"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = created["id"].as_str().unwrap().to_string();
    assert!(app.state.metrics.acquires("primary") > primary_before);
    let on_primary: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM states WHERE id = ?")
        .bind(&id)
        .fetch_one(app.state.db.primary())
        .await
        .unwrap();
    assert_eq!(on_primary, 1);
    let (p, r) = (Arc::clone(&primary), Arc::clone(&replica));
    blocking(move || r.sync_with(&p))
        .await
        .expect("write replicated");
    let (_, list) = app.get("/api/v1/states").await;
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        2,
        "replica list holds the replicated write and the replica-only row: {names:?}"
    );

    // Within one request, reads after a write go to the primary.
    let mut session = app.state.db.session();
    let mut c = session.read().await.unwrap();
    assert_eq!(server_id(&mut c).await, replica.server_id());
    drop(c);
    let mut tx = session.begin().await.unwrap();
    assert_eq!(server_id(&mut tx).await, primary.server_id());
    tx.rollback().await.unwrap();
    let mut c = session.read().await.unwrap();
    assert_eq!(
        server_id(&mut c).await,
        primary.server_id(),
        "read after write must see the primary"
    );
    drop(c);

    // Replica down: reads fall back to the primary (which lacks the replica-only row).
    let r = Arc::clone(&replica);
    blocking(move || r.stop()).await.expect("stop replica");
    let fallbacks = app.state.metrics.replica_fallbacks();
    assert_eq!(
        app.get("/api/v1/states/replica-only").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/states/{id}")).await.0,
        StatusCode::OK
    );
    assert!(app.state.metrics.replica_fallbacks() > fallbacks);
    assert_eq!(
        app.post("/api/v1/states", json!({"name": "While replica down"}))
            .await
            .0,
        StatusCode::CREATED
    );

    // Replica back: reads return to it by themselves.
    let r = Arc::clone(&replica);
    blocking(move || r.start_again())
        .await
        .expect("restart replica");
    let app_ref = &app;
    eventually(
        "reads served by the replica again",
        Duration::from_secs(30),
        || async move {
            (app_ref.get("/api/v1/states/replica-only").await.0 == StatusCode::OK).then_some(())
        },
    )
    .await;
    // And it caught up on what was written while it was down.
    let (p, r) = (Arc::clone(&primary), Arc::clone(&replica));
    blocking(move || r.sync_with(&p))
        .await
        .expect("replica catches up");
}

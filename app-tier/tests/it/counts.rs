//! The trigger-kept row counts (migrations 0003 and 0004) that lists' totals and `/stats` read:
//! after creates, direct deletes, cascading deletes, concurrent writers and a migration
//! over existing rows, they equal COUNT(*) of every table.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{TestApp, config_for, shared_app};
use app_tier::AppState;
use app_tier::migrate::MIGRATOR;
use app_tier::model;
use app_tier::testing::MariaDb;

/// `/stats` and every unfiltered list's `X-Total-Count` equal the tables' COUNT(*).
async fn assert_exact(app: &TestApp, step: &str) {
    let truth = app.counts().await;
    let (s, stats) = app.get("/api/v1/stats").await;
    assert_eq!(s, StatusCode::OK, "{step}: {stats}");
    for kind in model::ALL {
        let n = truth[kind.table];
        assert_eq!(stats[kind.table], n, "{step}: /stats {}", kind.table);
        let r = app
            .raw(
                "GET",
                &format!("/api/v1/{}?per_page=1", kind.table),
                vec![],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{step}: {}", r.text());
        assert_eq!(
            r.headers["x-total-count"],
            n.to_string().as_str(),
            "{step}: list of {}",
            kind.table
        );
    }
}

/// A state with `cities` cities, and a user: (state, user, cities).
async fn state_user_cities(app: &TestApp, cities: usize) -> (String, String, Vec<String>) {
    let s = app.create("/api/v1/states", json!({"name": "S"})).await;
    let u = app
        .create("/api/v1/users", json!({"email": "a@b.c", "password": "p"}))
        .await;
    let mut ids = Vec::new();
    for c in 0..cities {
        ids.push(
            app.create(
                &format!("/api/v1/states/{s}/cities"),
                json!({ "name": format!("C{c}") }),
            )
            .await,
        );
    }
    (s, u, ids)
}

/// Creates a place in `city` owned by `user`; returns its id.
async fn add_place(app: &TestApp, city: &str, user: &str, name: &str) -> String {
    app.create(
        &format!("/api/v1/cities/{city}/places"),
        json!({ "user_id": user, "name": name }),
    )
    .await
}

#[tokio::test]
async fn totals_follow_creates_and_cascading_deletes() {
    let app = shared_app().await;
    assert_exact(&app, "empty").await;
    let st = |n: &'static str| json!({ "name": n });
    let (s1, s2) = (
        app.create("/api/v1/states", st("S1")).await,
        app.create("/api/v1/states", st("S2")).await,
    );
    let c1 = app
        .create(&format!("/api/v1/states/{s1}/cities"), st("C1"))
        .await;
    let c2 = app
        .create(&format!("/api/v1/states/{s1}/cities"), st("C2"))
        .await;
    let c3 = app
        .create(&format!("/api/v1/states/{s2}/cities"), st("C3"))
        .await;
    let user = |e: &str| json!({ "email": e, "password": "p" });
    let u1 = app.create("/api/v1/users", user("u1@x.y")).await;
    let u2 = app.create("/api/v1/users", user("u2@x.y")).await;
    let wifi = app.create("/api/v1/amenities", st("Wifi")).await;
    let place = |city: &str, owner: &str, name: &str| {
        (
            format!("/api/v1/cities/{city}/places"),
            json!({ "user_id": owner, "name": name, "amenity_ids": [wifi] }),
        )
    };
    let mut places = Vec::new();
    for (city, owner, name) in [
        (&c1, &u1, "P1"),
        (&c2, &u2, "P2"),
        (&c3, &u1, "P3"),
        (&c3, &u2, "P4"),
    ] {
        let (path, body) = place(city, owner, name);
        places.push(app.create(&path, body).await);
    }
    let review = |place: &str, by: &str| {
        (
            format!("/api/v1/places/{place}/reviews"),
            json!({ "user_id": by, "text": "ok" }),
        )
    };
    // u1 reviews their own P1 too: deleting u1 must count that review once.
    let mut own = String::new();
    for (i, by) in [(0, &u2), (1, &u1), (2, &u1), (3, &u1), (0, &u1)] {
        let (path, body) = review(&places[i], by);
        own = app.create(&path, body).await;
    }
    assert_exact(&app, "created").await;

    let steps = [
        // A leaf.
        format!("/api/v1/reviews/{own}"),
        // A place and its review.
        format!("/api/v1/places/{}", places[1]),
        // A user: their places P1 and P3 with every review of those, and the review of
        // P4 they wrote.
        format!("/api/v1/users/{u1}"),
        // A city and its place P4.
        format!("/api/v1/cities/{c3}"),
        // A state and its two cities (their places are gone already).
        format!("/api/v1/states/{s1}"),
        format!("/api/v1/amenities/{wifi}"),
        format!("/api/v1/states/{s2}"),
        format!("/api/v1/users/{u2}"),
    ];
    for path in steps {
        assert_eq!(app.delete(&path).await.0, StatusCode::OK, "DELETE {path}");
        assert_exact(&app, &format!("after DELETE {path}")).await;
    }
    let left = app.counts().await;
    assert!(left.values().all(|n| *n == 0), "{left:?}");
}

#[tokio::test]
async fn a_state_takes_its_cities_places_and_reviews_in_one_delete() {
    let app = shared_app().await;
    let (s, u, cities) = state_user_cities(&app, 3).await;
    for city in &cities {
        for p in 0..2 {
            let place = add_place(&app, city, &u, &format!("P{p}")).await;
            app.create(
                &format!("/api/v1/places/{place}/reviews"),
                json!({ "user_id": u, "text": "t" }),
            )
            .await;
        }
    }
    assert_exact(&app, "created").await;
    assert_eq!(
        app.delete(&format!("/api/v1/states/{s}")).await.0,
        StatusCode::OK
    );
    assert_exact(&app, "state deleted").await;
    assert_eq!(app.counts().await["places"], 0);
}

#[tokio::test]
async fn concurrent_creates_and_deletes_keep_exact_totals() {
    let app = shared_app().await;
    let (_, u, cities) = state_user_cities(&app, 1).await;
    let city = &cities[0];
    // 8 writers at once over the pool's connections (so over several shards): each
    // creates 25 places and deletes every fifth one it created.
    let mut writers = tokio::task::JoinSet::new();
    for w in 0..8 {
        let (app, city, u) = (app.clone(), city.clone(), u.clone());
        writers.spawn(async move {
            for i in 0..25 {
                let id = add_place(&app, &city, &u, &format!("w{w}-{i}")).await;
                if i % 5 == 0 {
                    let (s, v) = app.delete(&format!("/api/v1/places/{id}")).await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                }
            }
        });
    }
    writers.join_all().await;
    assert_eq!(app.counts().await["places"], 8 * 20);
    assert_exact(&app, "after the writers").await;
    let shards: i64 =
        sqlx::query_scalar("SELECT COUNT(DISTINCT shard) FROM places_count WHERE n <> 0")
            .fetch_one(app.state.db.primary())
            .await
            .unwrap();
    assert!(
        shards > 1,
        "writers on several connections use several shards"
    );
}

/// For each `(version, writes)` stage: applies the migrations before `version` and runs
/// `writes` in SQL. Then applies the rest as `app-tier migrate` does, and checks the
/// totals and that the triggers count from there on. The first stage writes
/// [`OLD_ROWS`].
async fn migrate_over(stages: &[(i64, &[&str])]) {
    let server = MariaDb::shared();
    let database = server.create_database().await.unwrap();
    let config = config_for(server, &database);
    let state = AppState::new(&config).unwrap();
    for (version, writes) in stages {
        let before = sqlx::migrate::Migrator {
            migrations: std::borrow::Cow::Owned(
                MIGRATOR
                    .iter()
                    .filter(|m| m.version < *version)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run(state.db.primary()).await.unwrap();
        for sql in *writes {
            sqlx::query(sql).execute(state.db.primary()).await.unwrap();
        }
    }
    app_tier::migrate::run(state.db.primary()).await.unwrap();
    let app = TestApp {
        router: app_tier::app(state.clone()),
        state,
        database,
    };
    assert_eq!(app.counts().await["amenities"], 3, "OLD_ROWS' amenities");
    assert_exact(&app, "migrated over existing rows").await;
    // And the triggers run from there on.
    app.create("/api/v1/amenities", json!({"name": "Sauna"}))
        .await;
    assert_eq!(
        app.delete("/api/v1/states/s1").await.0,
        StatusCode::OK,
        "a state with a city that was there before the migration"
    );
    assert_exact(&app, "written after the migration").await;
}

/// Rows written before any count existed.
const OLD_ROWS: &[&str] = &[
    "INSERT INTO states (id, name) VALUES ('s1', 'A'), ('s2', 'B')",
    "INSERT INTO cities (id, state_id, name) VALUES ('c1', 's1', 'C'), ('c2', 's2', 'D')",
    "INSERT INTO amenities (id, name) VALUES ('a1', 'Wifi'), ('a2', 'Pool'), ('a3', 'Gym')",
];

#[tokio::test]
async fn the_migration_counts_rows_that_were_there_before_it() {
    migrate_over(&[(3, OLD_ROWS)]).await;
}

#[tokio::test]
async fn the_per_table_counts_carry_over_what_the_first_counts_kept() {
    // Counted by 0003: rows its initial count found (shard 0), then rows its triggers
    // counted, including a cascade's subtraction (s2 takes c2). 0004 must carry both.
    migrate_over(&[
        (3, OLD_ROWS),
        (
            4,
            &[
                "DELETE FROM states WHERE id = 's2'",
                "INSERT INTO states (id, name) VALUES ('s3', 'E'), ('s4', 'G')",
                "INSERT INTO cities (id, state_id, name) VALUES ('c3', 's3', 'F')",
            ],
        ),
    ])
    .await;
}

#[tokio::test]
async fn creates_racing_the_delete_of_their_parent_keep_exact_totals() {
    let app = shared_app().await;
    let (_, u, cities) = state_user_cities(&app, 4).await;
    // Writers keep creating places (each with a review) in every city while the cities
    // are deleted under them: a create lands before the delete (and goes with the
    // city), finds its city gone, or loses a lock race and is told to retry.
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..4 {
        let (app, cities, u) = (app.clone(), cities.clone(), u.clone());
        tasks.spawn(async move {
            let mut statuses = Vec::new();
            for i in 0..24 {
                let city = &cities[(w + i) % cities.len()];
                let (s, v) = app
                    .post(
                        &format!("/api/v1/cities/{city}/places"),
                        json!({ "user_id": u, "name": format!("w{w}-{i}") }),
                    )
                    .await;
                statuses.push(s);
                if s == StatusCode::CREATED {
                    let place = v["id"].as_str().expect("id").to_string();
                    let (s, _) = app
                        .post(
                            &format!("/api/v1/places/{place}/reviews"),
                            json!({ "user_id": u, "text": "t" }),
                        )
                        .await;
                    statuses.push(s);
                }
            }
            statuses
        });
    }
    let deleter = {
        let (app, cities) = (app.clone(), cities.clone());
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for city in &cities {
                // Each city first gets a place of its own to take with it.
                crate::common::eventually(
                    "a place in the city",
                    std::time::Duration::from_secs(10),
                    || async {
                        let (_, v) = app.get(&format!("/api/v1/cities/{city}/places")).await;
                        v.as_array().is_some_and(|a| !a.is_empty()).then_some(())
                    },
                )
                .await;
                statuses.push(app.delete(&format!("/api/v1/cities/{city}")).await.0);
            }
            statuses
        })
    };
    let mut statuses: Vec<StatusCode> = tasks.join_all().await.concat();
    let deletes = deleter.await.expect("deleter");
    statuses.extend(&deletes);
    for s in &statuses {
        assert!(
            [
                StatusCode::OK,
                StatusCode::CREATED,
                StatusCode::NOT_FOUND,
                StatusCode::UNPROCESSABLE_ENTITY,
                StatusCode::SERVICE_UNAVAILABLE,
            ]
            .contains(s),
            "{statuses:?}"
        );
    }
    assert!(
        deletes.iter().all(|s| *s == StatusCode::OK),
        "every city is deleted once: {deletes:?}"
    );
    assert_exact(&app, "after the race").await;
    assert_eq!(
        app.counts().await["places"],
        0,
        "the cities took every place"
    );
}

#[tokio::test]
async fn child_lists_and_pages_past_the_end_carry_their_totals() {
    let app = shared_app().await;
    let (s, _, _) = state_user_cities(&app, 3).await;
    let other = app.create("/api/v1/states", json!({"name": "Empty"})).await;
    // (path, items expected on that page, total expected)
    let cases = [
        // The total rides in the page statement (bound once for the count, once for
        // the rows).
        (format!("/api/v1/states/{s}/cities?per_page=2"), 2, "3"),
        // Past the end: no row carries it, so it is asked for on its own.
        (
            format!("/api/v1/states/{s}/cities?per_page=2&page=3"),
            0,
            "3",
        ),
        (format!("/api/v1/states/{other}/cities"), 0, "0"),
        (format!("/api/v1/states/{other}/cities?page=2"), 0, "0"),
        ("/api/v1/cities?per_page=2&page=2".to_owned(), 1, "3"),
        ("/api/v1/cities?per_page=2&page=9".to_owned(), 0, "3"),
    ];
    for (path, items, total) in cases {
        let r = app.raw("GET", &path, vec![], None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text());
        assert_eq!(r.headers["x-total-count"], total, "{path}");
        assert_eq!(r.json().as_array().map(Vec::len), Some(items), "{path}");
    }
}

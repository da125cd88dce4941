//! Every endpoint's success and error paths.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::{app_on, shared_app};
use app_tier::config::DbUrl;
use app_tier::testing::MariaDb;

#[tokio::test]
async fn status_and_stats_count_each_kind() {
    let app = shared_app().await;
    assert_eq!(
        app.get("/api/v1/status").await,
        (StatusCode::OK, json!({"status": "OK"}))
    );
    let (s, v) = app.get("/api/v1/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v,
        json!({"amenities": 0, "cities": 0, "places": 0, "reviews": 0, "states": 0, "users": 0})
    );
    let st = app
        .create("/api/v1/states", json!({"name": "Oregon"}))
        .await;
    app.create(
        &format!("/api/v1/states/{st}/cities"),
        json!({"name": "Portland"}),
    )
    .await;
    app.create("/api/v1/amenities", json!({"name": "Wifi"}))
        .await;
    let (_, v) = app.get("/api/v1/stats").await;
    assert_eq!(v["states"], 1);
    assert_eq!(v["cities"], 1);
    assert_eq!(v["amenities"], 1);
    assert_eq!(v["places"], 0);
}

#[tokio::test]
async fn states_crud_roundtrip() {
    let app = shared_app().await;
    let (s, created) = app
        .post(
            "/api/v1/states",
            json!({"name": "  California ", "id": "ignored"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_ne!(id, "ignored", "client-supplied ids are ignored");
    assert_eq!(created["name"], "California", "names are trimmed");
    assert_eq!(created["__class__"], "State");
    // Timestamps are printed by the app tier from the DATETIME MariaDB sends: exactly
    // what MariaDB's own DATE_FORMAT prints for the stored value.
    let stored: (String, String) = sqlx::query_as(
        "SELECT DATE_FORMAT(created_at, '%Y-%m-%dT%H:%i:%s.%f'), \
         DATE_FORMAT(updated_at, '%Y-%m-%dT%H:%i:%s.%f') FROM states WHERE id = ?",
    )
    .bind(&id)
    .fetch_one(app.state.db.primary())
    .await
    .unwrap();
    assert_eq!(
        (&created["created_at"], &created["updated_at"]),
        (&json!(stored.0), &json!(stored.1))
    );

    let (s, got) = app.get(&format!("/api/v1/states/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got, created);

    let (s, list) = app.get("/api/v1/states").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list, json!([created.clone()]));

    let (s, updated) = app
        .put(
            &format!("/api/v1/states/{id}"),
            json!({"name": "Cali", "created_at": "x"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{updated}");
    assert_eq!(updated["name"], "Cali");
    assert_eq!(
        updated["created_at"], created["created_at"],
        "created_at is not client-settable"
    );

    // An empty update changes nothing but still answers the row.
    let (s, same) = app.put(&format!("/api/v1/states/{id}"), json!({})).await;
    assert_eq!((s, &same["name"]), (StatusCode::OK, &json!("Cali")));

    assert_eq!(
        app.delete(&format!("/api/v1/states/{id}")).await,
        (StatusCode::OK, json!({}))
    );
    assert_eq!(
        app.get(&format!("/api/v1/states/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.delete(&format!("/api/v1/states/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put(&format!("/api/v1/states/{id}"), json!({"name": "x"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn duplicates_are_409() {
    let app = shared_app().await;
    let a = app.create("/api/v1/states", json!({"name": "Texas"})).await;
    let (s, v) = app.post("/api/v1/states", json!({"name": "Texas"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert!(v["error"].is_string());
    // Case-insensitive collation: "texas" is the same state.
    assert_eq!(
        app.post("/api/v1/states", json!({"name": "texas"})).await.0,
        StatusCode::CONFLICT
    );
    // Renaming onto a taken name is a conflict too.
    let b = app.create("/api/v1/states", json!({"name": "Utah"})).await;
    assert_eq!(
        app.put(&format!("/api/v1/states/{b}"), json!({"name": "Texas"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    // Same city name in two states is fine; twice in one state is not.
    app.create(
        &format!("/api/v1/states/{a}/cities"),
        json!({"name": "Springfield"}),
    )
    .await;
    app.create(
        &format!("/api/v1/states/{b}/cities"),
        json!({"name": "Springfield"}),
    )
    .await;
    assert_eq!(
        app.post(
            &format!("/api/v1/states/{a}/cities"),
            json!({"name": "Springfield"})
        )
        .await
        .0,
        StatusCode::CONFLICT
    );
    app.create("/api/v1/amenities", json!({"name": "Sauna"}))
        .await;
    assert_eq!(
        app.post("/api/v1/amenities", json!({"name": "Sauna"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
}

/// Migration 0005: names that differ only in characters outside the BMP (which
/// utf8mb4_unicode_ci weighs all alike) are different names; case and accents still
/// are not a difference.
#[tokio::test]
async fn names_differing_in_supplementary_characters_are_not_duplicates() {
    let app = shared_app().await;
    let st = app
        .create("/api/v1/states", json!({"name": "😀emoji"}))
        .await;
    app.create("/api/v1/states", json!({"name": "😁emoji"}))
        .await;
    app.create(
        &format!("/api/v1/states/{st}/cities"),
        json!({"name": "🏊"}),
    )
    .await;
    app.create(
        &format!("/api/v1/states/{st}/cities"),
        json!({"name": "🅿️"}),
    )
    .await;
    app.create("/api/v1/amenities", json!({"name": "🏊 pool"}))
        .await;
    app.create("/api/v1/amenities", json!({"name": "🅿️ pool"}))
        .await;
    app.create("/api/v1/users", json!({"email": "😀@x.y", "password": "p"}))
        .await;
    app.create("/api/v1/users", json!({"email": "😁@x.y", "password": "p"}))
        .await;
    for (path, body) in [
        ("/api/v1/states".to_owned(), json!({"name": "😀EMOJI"})),
        (format!("/api/v1/states/{st}/cities"), json!({"name": "🅿️"})),
        ("/api/v1/amenities".to_owned(), json!({"name": "🏊 POOL"})),
        (
            "/api/v1/users".to_owned(),
            json!({"email": "😀@X.Y", "password": "p"}),
        ),
    ] {
        let (s, v) = app.post(&path, body.clone()).await;
        assert_eq!(s, StatusCode::CONFLICT, "{path} {body}: {v}");
    }
    app.create("/api/v1/amenities", json!({"name": "Café"}))
        .await;
    assert_eq!(
        app.post("/api/v1/amenities", json!({"name": "cafe"}))
            .await
            .0,
        StatusCode::CONFLICT,
        "accent-insensitive as before"
    );
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(
        (
            &stats["states"],
            &stats["cities"],
            &stats["amenities"],
            &stats["users"]
        ),
        (&json!(2), &json!(2), &json!(3), &json!(2)),
        "the count triggers survived the ALTERs: {stats}"
    );
    let pool = app.state.db.primary();
    let triggers: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ?",
    )
    .bind(&app.database)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(triggers, 12, "an insert and a delete trigger per table");
    let unique: Vec<(String, String)> = sqlx::query_as(
        "SELECT TABLE_NAME, COLLATION_NAME FROM information_schema.COLUMNS c \
         WHERE TABLE_SCHEMA = ? AND EXISTS (SELECT 1 FROM information_schema.STATISTICS s \
           WHERE s.TABLE_SCHEMA = c.TABLE_SCHEMA AND s.TABLE_NAME = c.TABLE_NAME \
           AND s.COLUMN_NAME = c.COLUMN_NAME AND s.NON_UNIQUE = 0 AND s.INDEX_NAME LIKE 'uq_%') \
         ORDER BY TABLE_NAME, COLUMN_NAME",
    )
    .bind(&app.database)
    .fetch_all(pool)
    .await
    .unwrap();
    let uca = "utf8mb4_uca1400_ai_ci".to_owned();
    let unicode = "utf8mb4_unicode_ci".to_owned();
    assert_eq!(
        unique,
        [
            ("amenities".to_owned(), uca.clone()),
            ("cities".to_owned(), uca.clone()),
            ("cities".to_owned(), unicode),
            ("states".to_owned(), uca.clone()),
            ("users".to_owned(), uca),
        ],
        "the unique keys are still there, over names in the new collation (and state_id)"
    );
}

#[tokio::test]
async fn cities_live_under_states_and_cascade() {
    let app = shared_app().await;
    let st = app
        .create("/api/v1/states", json!({"name": "Nevada"}))
        .await;
    let (s, city) = app
        .post(
            &format!("/api/v1/states/{st}/cities"),
            json!({"name": "Reno", "state_id": "bogus"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        city["state_id"], st,
        "the parent comes from the path, not the body"
    );
    let cid = city["id"].as_str().unwrap();

    let (s, list) = app.get(&format!("/api/v1/states/{st}/cities")).await;
    assert_eq!((s, list.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(
        app.get("/api/v1/cities").await.1.as_array().unwrap().len(),
        1
    );
    assert_eq!(
        app.get(&format!("/api/v1/cities/{cid}")).await.1["name"],
        "Reno"
    );
    assert_eq!(
        app.put(
            &format!("/api/v1/cities/{cid}"),
            json!({"name": "Las Vegas"})
        )
        .await
        .1["name"],
        "Las Vegas"
    );

    assert_eq!(
        app.get("/api/v1/states/nope/cities").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post("/api/v1/states/nope/cities", json!({"name": "X"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Cities are created under a state only.
    assert_eq!(
        app.post("/api/v1/cities", json!({"name": "X"})).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );

    assert_eq!(
        app.delete(&format!("/api/v1/states/{st}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/cities/{cid}")).await.0,
        StatusCode::NOT_FOUND,
        "cascade"
    );
}

#[tokio::test]
async fn users_never_expose_passwords_and_store_them_hashed() {
    let app = shared_app().await;
    let (s, u) = app
        .post(
            "/api/v1/users",
            json!({"email": "a@b.c", "password": "hunter2", "first_name": "Ann"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert!(u.get("password").is_none(), "{u}");
    assert_eq!(u["last_name"], json!(null));
    let id = u["id"].as_str().unwrap();
    let stored: String = sqlx::query_scalar("SELECT password FROM users WHERE id = ?")
        .bind(id)
        .fetch_one(app.state.db.primary())
        .await
        .unwrap();
    assert!(!stored.contains("hunter2"));
    assert!(app_tier::model::verify_password("hunter2", &stored));

    assert_eq!(
        app.post("/api/v1/users", json!({"email": "a@b.c", "password": "x"}))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (s, v) = app
        .put(
            &format!("/api/v1/users/{id}"),
            json!({"email": "new@b.c", "last_name": "Lee", "password": "new"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (v["email"].as_str(), v["last_name"].as_str()),
        (Some("a@b.c"), Some("Lee"))
    );
    assert!(v.get("password").is_none());
    let stored: String = sqlx::query_scalar("SELECT password FROM users WHERE id = ?")
        .bind(id)
        .fetch_one(app.state.db.primary())
        .await
        .unwrap();
    assert!(app_tier::model::verify_password("new", &stored));
    let (_, list) = app.get("/api/v1/users").await;
    assert!(list[0].get("password").is_none());
    assert_eq!(
        app.delete(&format!("/api/v1/users/{id}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn places_and_reviews() {
    let app = shared_app().await;
    let st = app
        .create("/api/v1/states", json!({"name": "Oregon"}))
        .await;
    let city = app
        .create(
            &format!("/api/v1/states/{st}/cities"),
            json!({"name": "Bend"}),
        )
        .await;
    let user = app
        .create("/api/v1/users", json!({"email": "o@x.y", "password": "p"}))
        .await;
    let wifi = app
        .create("/api/v1/amenities", json!({"name": "Wifi"}))
        .await;

    let (s, p) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "Cabin", "number_rooms": 2, "latitude": 44.05,
                   "longitude": -121.3, "price_by_night": 90, "amenity_ids": [wifi]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    assert_eq!(
        (p["city_id"].as_str(), p["number_rooms"].as_i64()),
        (Some(city.as_str()), Some(2))
    );
    assert_eq!(p["max_guest"], 0, "defaults apply");
    assert_eq!(p["description"], json!(null));
    let place = p["id"].as_str().unwrap().to_string();
    let (_, links) = app.get(&format!("/api/v1/places/{place}/amenities")).await;
    assert_eq!(
        links[0]["id"], wifi,
        "amenity_ids linked in the same transaction"
    );

    // Broken references in the body are 422 and name the field; unknown parents are 404.
    let (s, v) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": "ghost", "name": "X"}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("user_id"))
    );
    let before = app.counts().await;
    let (s, v) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "Y", "amenity_ids": [wifi, "ghost"]}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("amenity_ids"))
    );
    assert_eq!(
        app.counts().await,
        before,
        "the place was rolled back with its links"
    );
    assert_eq!(
        app.post(
            "/api/v1/cities/ghost/places",
            json!({"user_id": user, "name": "X"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    // The insert relies on the foreign keys and explains a refusal afterwards, in the
    // order checks would have run: the parent in the path first, then the body's ids.
    assert_eq!(
        app.post(
            "/api/v1/cities/ghost/places",
            json!({"user_id": "ghost", "name": "X", "amenity_ids": [wifi]})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = app
        .post(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": "ghost", "name": "X", "amenity_ids": [wifi]}),
        )
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("user_id"))
    );
    assert_eq!(
        app.post("/api/v1/states/ghost/cities", json!({"name": "X"}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.counts().await,
        before,
        "nothing was written by refusals"
    );

    let (s, v) = app
        .put(
            &format!("/api/v1/places/{place}"),
            json!({"description": "By the river", "user_id": "ignored", "max_guest": 4}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["description"].as_str(), v["max_guest"].as_i64()),
        (Some("By the river"), Some(4))
    );
    assert_eq!(v["user_id"], user.as_str());
    assert_eq!(
        app.get(&format!("/api/v1/cities/{city}/places"))
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        app.get("/api/v1/cities/ghost/places").await.0,
        StatusCode::NOT_FOUND
    );

    let rv = app
        .create(
            &format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": user, "text": "Cozy"}),
        )
        .await;
    assert_eq!(
        app.post(
            &format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": "ghost", "text": "x"})
        )
        .await
        .0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        app.post(
            "/api/v1/places/ghost/reviews",
            json!({"user_id": user, "text": "x"})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    let (s, list) = app.get(&format!("/api/v1/places/{place}/reviews")).await;
    assert_eq!(
        (s, list[0]["text"].as_str()),
        (StatusCode::OK, Some("Cozy"))
    );
    assert_eq!(
        app.get("/api/v1/places/ghost/reviews").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.put(
            &format!("/api/v1/reviews/{rv}"),
            json!({"text": "Very cozy"})
        )
        .await
        .1["text"],
        "Very cozy"
    );
    assert_eq!(
        app.get("/api/v1/reviews").await.1.as_array().unwrap().len(),
        1
    );
    assert_eq!(
        app.get("/api/v1/places").await.1.as_array().unwrap().len(),
        1
    );

    // Deleting the owner deletes their places, and with them the reviews and links.
    assert_eq!(
        app.delete(&format!("/api/v1/users/{user}")).await.0,
        StatusCode::OK
    );
    let after = app.counts().await;
    assert_eq!(
        (after["places"], after["reviews"], after["place_amenity"]),
        (0, 0, 0)
    );
    assert_eq!(
        app.delete(&format!("/api/v1/reviews/{rv}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn amenity_links() {
    let app = shared_app().await;
    let st = app.create("/api/v1/states", json!({"name": "Idaho"})).await;
    let city = app
        .create(
            &format!("/api/v1/states/{st}/cities"),
            json!({"name": "Boise"}),
        )
        .await;
    let user = app
        .create("/api/v1/users", json!({"email": "i@x.y", "password": "p"}))
        .await;
    let place = app
        .create(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "Barn"}),
        )
        .await;
    let pool = app
        .create("/api/v1/amenities", json!({"name": "Pool"}))
        .await;
    let link = format!("/api/v1/places/{place}/amenities/{pool}");

    let (s, v) = app.post(&link, json!({})).await;
    assert_eq!(
        (s, v["id"].as_str()),
        (StatusCode::CREATED, Some(pool.as_str()))
    );
    assert_eq!(
        app.post(&link, json!({})).await.0,
        StatusCode::OK,
        "already linked"
    );
    let (s, list) = app.get(&format!("/api/v1/places/{place}/amenities")).await;
    assert_eq!((s, list.as_array().unwrap().len()), (StatusCode::OK, 1));
    assert_eq!(
        app.post(
            &format!("/api/v1/places/{place}/amenities/ghost"),
            json!({})
        )
        .await
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.post(&format!("/api/v1/places/ghost/amenities/{pool}"), json!({}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/places/ghost/amenities").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.delete(&link).await, (StatusCode::OK, json!({})));
    assert_eq!(
        app.delete(&link).await.0,
        StatusCode::NOT_FOUND,
        "no longer linked"
    );
    assert_eq!(
        app.get(&format!("/api/v1/amenities/{pool}")).await.1["name"],
        "Pool"
    );
    assert_eq!(
        app.put(
            &format!("/api/v1/amenities/{pool}"),
            json!({"name": "Hot tub"})
        )
        .await
        .1["name"],
        "Hot tub"
    );
    assert_eq!(
        app.delete(&format!("/api/v1/amenities/{pool}")).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn places_search_filters_by_states_cities_and_amenities() {
    let app = shared_app().await;
    let user = app
        .create("/api/v1/users", json!({"email": "s@x.y", "password": "p"}))
        .await;
    let ca = app.create("/api/v1/states", json!({"name": "CA"})).await;
    let az = app.create("/api/v1/states", json!({"name": "AZ"})).await;
    let sf = app
        .create(
            &format!("/api/v1/states/{ca}/cities"),
            json!({"name": "SF"}),
        )
        .await;
    let la = app
        .create(
            &format!("/api/v1/states/{ca}/cities"),
            json!({"name": "LA"}),
        )
        .await;
    let phx = app
        .create(
            &format!("/api/v1/states/{az}/cities"),
            json!({"name": "PHX"}),
        )
        .await;
    let wifi = app
        .create("/api/v1/amenities", json!({"name": "Wifi"}))
        .await;
    let pool = app
        .create("/api/v1/amenities", json!({"name": "Pool"}))
        .await;
    let mk = |city: String, name: &'static str, amenities: Vec<String>| {
        let app = &app;
        let user = user.clone();
        async move {
            app.create(
                &format!("/api/v1/cities/{city}/places"),
                json!({"user_id": user, "name": name, "amenity_ids": amenities}),
            )
            .await
        }
    };
    mk(sf.clone(), "sf-wifi", vec![wifi.clone()]).await;
    mk(la.clone(), "la-both", vec![wifi.clone(), pool.clone()]).await;
    mk(phx.clone(), "phx-pool", vec![pool.clone()]).await;

    let names = |v: serde_json::Value| {
        let mut n: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let search = |body: serde_json::Value| {
        let app = &app;
        async move {
            let (s, v) = app.post("/api/v1/places_search", body.clone()).await;
            assert_eq!(s, StatusCode::OK, "{body}: {v}");
            v
        }
    };
    assert_eq!(
        names(search(json!({})).await),
        ["la-both", "phx-pool", "sf-wifi"]
    );
    assert_eq!(
        names(search(json!({"states": [ca]})).await),
        ["la-both", "sf-wifi"]
    );
    assert_eq!(
        names(search(json!({"states": [az], "cities": [sf]})).await),
        ["phx-pool", "sf-wifi"]
    );
    assert_eq!(
        names(search(json!({"amenities": [wifi]})).await),
        ["la-both", "sf-wifi"]
    );
    assert_eq!(
        names(search(json!({"amenities": [wifi, pool]})).await),
        ["la-both"]
    );
    assert_eq!(
        names(search(json!({"states": [ca], "amenities": [pool]})).await),
        ["la-both"]
    );
    assert_eq!(
        names(search(json!({"cities": ["ghost"]})).await),
        Vec::<String>::new()
    );
    assert_eq!(
        names(search(json!({"amenities": ["ghost"]})).await),
        Vec::<String>::new()
    );
    let (s, v) = app
        .post("/api/v1/places_search", json!({"states": "CA"}))
        .await;
    assert_eq!(
        (s, v["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("states"))
    );
    let (s, v) = app
        .post("/api/v1/places_search?per_page=1&page=2", json!({}))
        .await;
    assert_eq!((s, v.as_array().unwrap().len()), (StatusCode::OK, 1));
}

#[tokio::test]
async fn pagination_walks_every_row_once() {
    let app = shared_app().await;
    for i in 0..7 {
        app.create("/api/v1/amenities", json!({"name": format!("a{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = app
            .raw(
                "GET",
                &format!("/api/v1/amenities?per_page=3&page={page}"),
                vec![],
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers["x-total-count"], "7");
        assert_eq!(r.headers["x-per-page"], "3");
        let items = r.json();
        assert_eq!(
            items.as_array().unwrap().len(),
            if page < 3 { 3 } else { 1 }
        );
        seen.extend(
            items
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_string()),
        );
    }
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 7, "{seen:?}");
    assert_eq!(
        app.get("/api/v1/amenities?page=9").await,
        (StatusCode::OK, json!([]))
    );
}

#[tokio::test]
async fn unknown_routes_are_json_404() {
    let app = shared_app().await;
    let (s, v) = app.get("/api/v1/nope").await;
    assert_eq!(
        (s, v["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not found"))
    );
    assert_eq!(app.get("/").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_method_the_route_does_not_take_is_a_json_405_with_allow() {
    let app = shared_app().await;
    for (method, path, allow) in [
        ("PATCH", "/api/v1/states", "GET,HEAD,POST"),
        ("DELETE", "/api/v1/states", "GET,HEAD,POST"),
        ("POST", "/api/v1/states/x", "GET,HEAD,PUT,DELETE"),
        ("GET", "/api/v1/places_search", "POST"),
        ("PUT", "/healthz", "GET,HEAD"),
        ("FOO", "/api/v1/status", "GET,HEAD"),
    ] {
        let r = app.raw(method, path, vec![], None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_eq!(
            r.headers["content-type"], "application/json",
            "{method} {path}"
        );
        assert_eq!(r.headers["allow"], allow, "{method} {path}");
        assert_eq!(
            r.json(),
            json!({"error": "Method not allowed"}),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn a_row_that_cannot_be_printed_fails_its_page_alone() {
    let app = shared_app().await;
    let a = app.create("/api/v1/states", json!({"name": "A"})).await;
    let b = app.create("/api/v1/states", json!({"name": "B"})).await;
    // A zero date, written by hand: no date the driver can decode.
    sqlx::query("UPDATE states SET updated_at = '0000-00-00 00:00:00' WHERE id = ?")
        .bind(&b)
        .execute(app.state.db.primary())
        .await
        .unwrap();
    for path in ["/api/v1/states".to_owned(), format!("/api/v1/states/{b}")] {
        let r = app.raw("GET", &path, vec![], None).await;
        assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{path}");
        // The whole answer is the error: no part of the page went out before it.
        assert_eq!(r.json(), json!({"error": "internal error"}), "{path}");
    }
    // Everyone else is still served: the other row, and a page without the bad one.
    let (s, got) = app.get(&format!("/api/v1/states/{a}")).await;
    assert_eq!((s, &got["name"]), (StatusCode::OK, &json!("A")));
    let (s, page) = app.get("/api/v1/states?per_page=1").await;
    assert_eq!((s, &page[0]["id"]), (StatusCode::OK, &json!(a)));
}

#[tokio::test]
async fn a_socket_url_reaches_the_database_over_its_unix_socket() {
    let server = MariaDb::shared();
    let app = app_on(server, |c, db| {
        c.database.url = DbUrl::new(server.socket_url(db));
    })
    .await;
    let id = app.create("/api/v1/states", json!({"name": "S"})).await;
    let (s, got) = app.get(&format!("/api/v1/states/{id}")).await;
    assert_eq!((s, &got["name"]), (StatusCode::OK, &json!("S")));
    // The server saw this connection arrive on its socket: no client address.
    let hosts: Vec<String> = sqlx::query_scalar(
        "SELECT host FROM information_schema.processlist WHERE db = ? AND user = ?",
    )
    .bind(&app.database)
    .bind(app_tier::testing::APP_USER)
    .fetch_all(app.state.db.primary())
    .await
    .unwrap();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h == "localhost"),
        "{hosts:?}"
    );
}

//! The `/hbnb` page, the demo seed and `/metrics`.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::shared_app;

const ARIZONA: &str = "00000000-0000-4000-8000-000000000002";
const WIFI: &str = "00000000-0000-4000-8000-000000000301";
const KITCHEN: &str = "00000000-0000-4000-8000-000000000303";

#[tokio::test]
async fn seed_is_idempotent() {
    let app = shared_app().await;
    let first = app_tier::seed::seed(app.state.db.primary()).await.unwrap();
    assert!(first.inserted > 0);
    let counts = app.counts().await;
    let second = app_tier::seed::seed(app.state.db.primary()).await.unwrap();
    assert_eq!(second.inserted, 0);
    assert_eq!(app.counts().await, counts);
    let (_, stats) = app.get("/api/v1/stats").await;
    assert_eq!(
        stats,
        json!({"amenities": 4, "cities": 5, "places": 4, "reviews": 4, "states": 3, "users": 3})
    );
}

#[tokio::test]
async fn hbnb_page_lists_places_with_filters_and_links_static_files() {
    let app = shared_app().await;
    app_tier::seed::seed(app.state.db.primary()).await.unwrap();
    let r = app.raw("GET", "/hbnb", vec![], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "text/html; charset=utf-8");
    let html = r.text();
    for name in [
        "Loft in SoMa",
        "Garden cottage",
        "Desert house",
        "Strip view suite",
        "Places (4)",
    ] {
        assert!(html.contains(name), "{name} missing");
    }
    // Every /static/ link points at a file this crate ships for the web tier to serve.
    let statics: Vec<&str> = html
        .split("\"/static/")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
        .collect();
    assert!(statics.len() >= 5, "{statics:?}");
    for s in statics {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("static")
            .join(s);
        assert!(
            path.is_file(),
            "page links /static/{s} but {} does not exist",
            path.display()
        );
    }

    let html = app
        .raw("GET", &format!("/hbnb?states={ARIZONA}"), vec![], None)
        .await
        .text();
    assert!(
        html.contains("Desert house") && !html.contains("Loft in SoMa"),
        "state filter"
    );
    assert!(
        html.contains(&format!("value=\"{ARIZONA}\" checked")),
        "the form remembers the filter"
    );
    let html = app
        .raw(
            "GET",
            &format!("/hbnb?amenities={WIFI}&amenities={KITCHEN}"),
            vec![],
            None,
        )
        .await
        .text();
    assert!(
        html.contains("Loft in SoMa") && !html.contains("Garden cottage"),
        "all amenities must match"
    );

    // Stored markup is escaped, not rendered.
    let city = "00000000-0000-4000-8000-000000000101";
    let user = "00000000-0000-4000-8000-000000000201";
    app.create(
        &format!("/api/v1/cities/{city}/places"),
        json!({"user_id": user, "name": "<script>alert(1)</script>"}),
    )
    .await;
    let html = app.raw("GET", "/hbnb", vec![], None).await.text();
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.contains("<script>alert")
    );
}

#[tokio::test]
async fn metrics_expose_requests_latency_and_pools() {
    let app = shared_app().await;
    app.get("/api/v1/states").await;
    app.get("/api/v1/states/ghost").await;
    app.get("/api/v1/states/other-ghost").await;
    let r = app.raw("GET", "/metrics", vec![], None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = r.text();
    for line in [
        "app_http_requests_total{method=\"GET\",route=\"/api/v1/states\",status=\"200\"} 1",
        // Route templates, not raw paths: two unknown ids make one series.
        "app_http_requests_total{method=\"GET\",route=\"/api/v1/states/{id}\",status=\"404\"} 2",
        "app_http_request_duration_seconds_count{route=\"/api/v1/states/{id}\"} 2",
        "app_http_request_duration_seconds_bucket{route=\"/api/v1/states\",le=\"+Inf\"} 1",
        "app_db_pool_max_connections{target=\"primary\"} 10",
        "app_db_pool_connections{target=\"primary\",state=\"idle\"}",
        "app_db_acquires_total{target=\"primary\"} 3",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    assert!(!text.contains("ghost"));
}

#[tokio::test]
async fn invented_methods_are_one_series_in_metrics() {
    let app = shared_app().await;
    for method in ["FOO", "BAR", "BAZ", "PROPFIND"] {
        let r = app.raw(method, "/api/v1/states", vec![], None).await;
        assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
    }
    app.raw("PATCH", "/api/v1/states", vec![], None).await;
    let text = app.raw("GET", "/metrics", vec![], None).await.text();
    for line in [
        "app_http_requests_total{method=\"OTHER\",route=\"/api/v1/states\",status=\"405\"} 4",
        "app_http_requests_total{method=\"PATCH\",route=\"/api/v1/states\",status=\"405\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    for method in ["FOO", "BAR", "BAZ", "PROPFIND"] {
        assert!(!text.contains(method), "{method} has a series:\n{text}");
    }
}

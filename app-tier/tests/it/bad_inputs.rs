//! A table of bad requests: each must get the expected 4xx (naming the field where
//! there is one) and leave the database exactly as it was.

use std::time::Duration;

use app_tier::testing::MariaDb;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{app_on, http, serve_on_socket, shared_app};

struct Case {
    what: &'static str,
    method: &'static str,
    path: String,
    body: Vec<u8>,
    status: StatusCode,
    field: Option<&'static str>,
}

fn case(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: impl Into<Vec<u8>>,
    status: u16,
) -> Case {
    Case {
        what,
        method,
        path: path.into(),
        body: body.into(),
        status: StatusCode::from_u16(status).unwrap(),
        field: None,
    }
}

fn json_case(
    what: &'static str,
    method: &'static str,
    path: impl Into<String>,
    body: Value,
    status: u16,
) -> Case {
    case(
        what,
        method,
        path,
        serde_json::to_vec(&body).unwrap(),
        status,
    )
}

trait Field {
    fn field(self, f: &'static str) -> Case;
}
impl Field for Case {
    fn field(mut self, f: &'static str) -> Case {
        self.field = Some(f);
        self
    }
}

#[tokio::test]
async fn bad_inputs_are_4xx_and_change_nothing() {
    let app = shared_app().await;
    let st = app
        .create("/api/v1/states", json!({"name": "Kansas"}))
        .await;
    let city = app
        .create(
            &format!("/api/v1/states/{st}/cities"),
            json!({"name": "Wichita"}),
        )
        .await;
    let user = app
        .create("/api/v1/users", json!({"email": "k@x.y", "password": "p"}))
        .await;
    let place = app
        .create(
            &format!("/api/v1/cities/{city}/places"),
            json!({"user_id": user, "name": "Farm"}),
        )
        .await;
    let amenity = app
        .create("/api/v1/amenities", json!({"name": "Tractor"}))
        .await;
    let review = app
        .create(
            &format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": user, "text": "Ok"}),
        )
        .await;

    let places = format!("/api/v1/cities/{city}/places");
    let place_body = |extra: Value| {
        let mut b = json!({"user_id": user, "name": "P"});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let nested = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let cases = vec![
        case("not JSON", "POST", "/api/v1/states", "name=Ohio", 400),
        case("empty body", "POST", "/api/v1/states", "", 400),
        case("JSON array", "POST", "/api/v1/states", "[1,2]", 400),
        case("JSON string", "POST", "/api/v1/states", "\"Ohio\"", 400),
        case(
            "truncated JSON",
            "POST",
            "/api/v1/states",
            "{\"name\": \"Ohio\"",
            400,
        ),
        case(
            "invalid UTF-8",
            "POST",
            "/api/v1/states",
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            400,
        ),
        case(
            "lone surrogate escape",
            "POST",
            "/api/v1/states",
            r#"{"name": "\ud800"}"#,
            400,
        ),
        case("nesting bomb", "POST", "/api/v1/states", nested, 400),
        case(
            "huge body",
            "POST",
            "/api/v1/states",
            format!("{{\"name\": \"{}\"}}", "x".repeat(200_000)),
            413,
        ),
        json_case("missing name", "POST", "/api/v1/states", json!({}), 400).field("name"),
        json_case(
            "name is a number",
            "POST",
            "/api/v1/states",
            json!({"name": 42}),
            400,
        )
        .field("name"),
        json_case(
            "name is null",
            "POST",
            "/api/v1/states",
            json!({"name": null}),
            400,
        )
        .field("name"),
        json_case(
            "name is blank",
            "POST",
            "/api/v1/states",
            json!({"name": "   "}),
            400,
        )
        .field("name"),
        json_case(
            "name is a list",
            "POST",
            "/api/v1/states",
            json!({"name": ["a"]}),
            400,
        )
        .field("name"),
        json_case(
            "name too long",
            "POST",
            "/api/v1/states",
            json!({"name": "x".repeat(129)}),
            400,
        )
        .field("name"),
        json_case(
            "duplicate state",
            "POST",
            "/api/v1/states",
            json!({"name": "Kansas"}),
            409,
        ),
        json_case(
            "bad e-mail",
            "POST",
            "/api/v1/users",
            json!({"email": "no-at", "password": "p"}),
            400,
        )
        .field("email"),
        json_case(
            "missing password",
            "POST",
            "/api/v1/users",
            json!({"email": "a@b"}),
            400,
        )
        .field("password"),
        json_case(
            "password not a string",
            "POST",
            "/api/v1/users",
            json!({"email": "a@b", "password": 123}),
            400,
        )
        .field("password"),
        json_case(
            "duplicate e-mail",
            "POST",
            "/api/v1/users",
            json!({"email": "k@x.y", "password": "p"}),
            409,
        ),
        json_case(
            "rooms as string",
            "POST",
            &places,
            place_body(json!({"number_rooms": "3"})),
            400,
        )
        .field("number_rooms"),
        json_case(
            "rooms as float",
            "POST",
            &places,
            place_body(json!({"number_rooms": 1.5})),
            400,
        )
        .field("number_rooms"),
        json_case(
            "negative rooms",
            "POST",
            &places,
            place_body(json!({"number_rooms": -1})),
            400,
        )
        .field("number_rooms"),
        json_case(
            "price overflow",
            "POST",
            &places,
            place_body(json!({"price_by_night": 1e12})),
            400,
        )
        .field("price_by_night"),
        json_case(
            "latitude out of range",
            "POST",
            &places,
            place_body(json!({"latitude": 1000})),
            400,
        )
        .field("latitude"),
        json_case(
            "latitude as string",
            "POST",
            &places,
            place_body(json!({"latitude": "north"})),
            400,
        )
        .field("latitude"),
        json_case(
            "guests as bool",
            "POST",
            &places,
            place_body(json!({"max_guest": true})),
            400,
        )
        .field("max_guest"),
        json_case(
            "missing user_id",
            "POST",
            &places,
            json!({"name": "P"}),
            400,
        )
        .field("user_id"),
        json_case(
            "user_id not a string",
            "POST",
            &places,
            json!({"name": "P", "user_id": 12}),
            400,
        )
        .field("user_id"),
        json_case(
            "unknown user_id",
            "POST",
            &places,
            json!({"name": "P", "user_id": "ghost"}),
            422,
        )
        .field("user_id"),
        json_case(
            "amenity_ids not a list",
            "POST",
            &places,
            place_body(json!({"amenity_ids": "x"})),
            400,
        )
        .field("amenity_ids"),
        json_case(
            "unknown amenity in amenity_ids",
            "POST",
            &places,
            place_body(json!({"amenity_ids": [amenity, "ghost"]})),
            422,
        )
        .field("amenity_ids"),
        json_case(
            "unknown city",
            "POST",
            "/api/v1/cities/ghost/places",
            place_body(json!({})),
            404,
        ),
        // Ids longer than an id column (36 characters) name no parent: 404 as a GET
        // says, never MariaDB's "Data too long for column" blamed on the body.
        json_case(
            "state id too long for a city's parent",
            "POST",
            format!("/api/v1/states/{}/cities", "s".repeat(40)),
            json!({"name": "N"}),
            404,
        ),
        json_case(
            "city id too long for a place's parent",
            "POST",
            format!("/api/v1/cities/{}/places", "c".repeat(40)),
            place_body(json!({})),
            404,
        ),
        json_case(
            "place id too long for a review's parent",
            "POST",
            format!("/api/v1/places/{}/reviews", "p".repeat(40)),
            json!({"user_id": user, "text": "t"}),
            404,
        ),
        json_case(
            "parent id of 37 two-byte characters",
            "POST",
            format!("/api/v1/states/{}/cities", "%C3%A9".repeat(37)),
            json!({"name": "N"}),
            404,
        ),
        json_case(
            "parent id of 36 two-byte characters (fits, names nothing)",
            "POST",
            format!("/api/v1/states/{}/cities", "%C3%A9".repeat(36)),
            json!({"name": "N"}),
            404,
        ),
        json_case(
            "parent id too long, and a bad body",
            "POST",
            format!("/api/v1/states/{}/cities", "s".repeat(40)),
            json!({"name": 5}),
            404,
        ),
        json_case(
            "NUL in a name",
            "POST",
            "/api/v1/states",
            json!({"name": "Kan\u{0}sas"}),
            400,
        )
        .field("name"),
        json_case(
            "escape sequence in a city name",
            "POST",
            format!("/api/v1/states/{st}/cities"),
            json!({"name": "\u{1b}[2JWichita"}),
            400,
        )
        .field("name"),
        json_case(
            "line break in an amenity name",
            "POST",
            "/api/v1/amenities",
            json!({"name": "Hot\ntub"}),
            400,
        )
        .field("name"),
        json_case(
            "NUL in a last name",
            "PUT",
            format!("/api/v1/users/{user}"),
            json!({"last_name": "Doe\u{0}"}),
            400,
        )
        .field("last_name"),
        json_case(
            "NUL in a description",
            "POST",
            &places,
            place_body(json!({"description": "Quiet\u{0}"})),
            400,
        )
        .field("description"),
        json_case(
            "bell in a review",
            "PUT",
            format!("/api/v1/reviews/{review}"),
            json!({"text": "Ok\u{7}"}),
            400,
        )
        .field("text"),
        json_case(
            "review without text",
            "POST",
            format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": user}),
            400,
        )
        .field("text"),
        json_case(
            "review text too long",
            "POST",
            format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": user, "text": "x".repeat(4097)}),
            400,
        )
        .field("text"),
        json_case(
            "review by unknown user",
            "POST",
            format!("/api/v1/places/{place}/reviews"),
            json!({"user_id": "ghost", "text": "t"}),
            422,
        )
        .field("user_id"),
        json_case(
            "city name too long",
            "POST",
            format!("/api/v1/states/{st}/cities"),
            json!({"name": "é".repeat(129)}),
            400,
        )
        .field("name"),
        json_case(
            "update with wrong type",
            "PUT",
            format!("/api/v1/states/{st}"),
            json!({"name": 5}),
            400,
        )
        .field("name"),
        case(
            "update with non-JSON",
            "PUT",
            format!("/api/v1/states/{st}"),
            "garbage",
            400,
        ),
        json_case(
            "update place with bool",
            "PUT",
            format!("/api/v1/places/{place}"),
            json!({"number_rooms": false}),
            400,
        )
        .field("number_rooms"),
        json_case(
            "update review to null text",
            "PUT",
            format!("/api/v1/reviews/{review}"),
            json!({"text": null}),
            400,
        )
        .field("text"),
        json_case(
            "search with non-string ids",
            "POST",
            "/api/v1/places_search",
            json!({"amenities": [1, 2]}),
            400,
        )
        .field("amenities"),
        case(
            "search with non-JSON",
            "POST",
            "/api/v1/places_search",
            "states=all",
            400,
        ),
        json_case(
            "SQL in id (get)",
            "GET",
            "/api/v1/states/'%20OR%20'1'='1",
            json!(null),
            404,
        ),
        json_case(
            "SQL in id (delete)",
            "DELETE",
            "/api/v1/states/x'%20OR%201=1%20--%20",
            json!(null),
            404,
        ),
        json_case(
            "SQL in id (put)",
            "PUT",
            "/api/v1/users/1%20OR%201=1",
            json!({"first_name": "pwned"}),
            404,
        ),
        json_case(
            "LIKE wildcard as id",
            "DELETE",
            "/api/v1/amenities/%25",
            json!(null),
            404,
        ),
        json_case(
            "SQL in search ids",
            "POST",
            "/api/v1/places_search",
            json!({"states": ["' OR 1=1 --"]}),
            200,
        ),
        json_case(
            "invalid UTF-8 in path",
            "GET",
            "/api/v1/states/%FF%FE",
            json!(null),
            400,
        ),
        json_case(
            "per_page zero",
            "GET",
            "/api/v1/states?per_page=0",
            json!(null),
            400,
        )
        .field("per_page"),
        json_case(
            "per_page not a number",
            "GET",
            "/api/v1/states?per_page=abc",
            json!(null),
            400,
        )
        .field("per_page"),
        json_case(
            "per_page too large",
            "GET",
            "/api/v1/states?per_page=100000",
            json!(null),
            400,
        )
        .field("per_page"),
        json_case(
            "negative page",
            "GET",
            "/api/v1/states?page=-1",
            json!(null),
            400,
        )
        .field("page"),
        json_case(
            "unknown state",
            "GET",
            "/api/v1/states/ghost",
            json!(null),
            404,
        ),
        json_case(
            "unknown review (put)",
            "PUT",
            "/api/v1/reviews/ghost",
            json!({"text": "t"}),
            404,
        ),
        json_case(
            "link unknown amenity",
            "POST",
            format!("/api/v1/places/{place}/amenities/ghost"),
            json!({}),
            404,
        ),
        json_case(
            "unlink not-linked amenity",
            "DELETE",
            format!("/api/v1/places/{place}/amenities/{amenity}"),
            json!(null),
            404,
        ),
    ];
    assert!(cases.len() >= 30);

    let snapshot = || async {
        let mut rows = Vec::new();
        for path in [
            format!("/api/v1/states/{st}"),
            format!("/api/v1/cities/{city}"),
            format!("/api/v1/users/{user}"),
            format!("/api/v1/places/{place}"),
            format!("/api/v1/amenities/{amenity}"),
            format!("/api/v1/reviews/{review}"),
        ] {
            rows.push(app.get(&path).await);
        }
        (app.counts().await, rows)
    };
    let before = snapshot().await;
    let mut failures = Vec::new();
    for c in &cases {
        let r = app
            .raw(c.method, &c.path, c.body.clone(), Some("application/json"))
            .await;
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        if r.status != c.status {
            failures.push(format!(
                "{}: {} {} -> {} {body} (want {})",
                c.what, c.method, c.path, r.status, c.status
            ));
            continue;
        }
        if c.status.is_client_error() && !body["error"].is_string() {
            failures.push(format!(
                "{}: error body is not JSON with an \"error\": {:?}",
                c.what,
                r.text()
            ));
        }
        // The documented shape: `error`, and `field` when one field is to blame.
        if let Some(extra) = body
            .as_object()
            .and_then(|o| o.keys().find(|k| !["error", "field"].contains(&k.as_str())))
        {
            failures.push(format!("{}: undocumented key {extra:?} in {body}", c.what));
        }
        if body["error"].as_str().is_some_and(|e| e.contains("column")) {
            failures.push(format!("{}: a database message in {body}", c.what));
        }
        if let Some(f) = c.field
            && body["field"] != f
        {
            failures.push(format!("{}: field {} (want {f})", c.what, body["field"]));
        }
        if snapshot().await != before {
            failures.push(format!("{}: changed the database", c.what));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_body_declared_over_the_limit_is_refused_before_it_arrives() {
    let app = app_on(MariaDb::shared(), |c, _| c.max_body_bytes = 1024).await;
    let (addr, stop, task) = serve_on_socket(app.state.clone()).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The head alone: a server that reads the body before refusing it waits for bytes
    // that never come (until the request timeout, 30 s, answers 503).
    conn.write_all(
        b"POST /api/v1/states HTTP/1.1\r\nHost: app\r\nContent-Type: application/json\r\n\
          Content-Length: 1025\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    let refused = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains("too large") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed without an answer");
            answer.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(refused.is_ok(), "no answer before the body: {answer:?}");
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
    assert!(
        answer.ends_with("{\"error\":\"request body too large\"}"),
        "{answer}"
    );
    drop(conn);
    // At the limit a body is read and judged as usual: this one's name is too long.
    let body = format!("{{\"name\": \"{}\"}}", "x".repeat(1024 - 12));
    assert_eq!(body.len(), 1024);
    let (status, text) = http(addr, "POST", "/api/v1/states", Some(&body))
        .await
        .unwrap();
    assert_eq!(status, 400, "{text}");
    let (status, _) = http(addr, "POST", "/api/v1/states", Some(&format!("{body} ")))
        .await
        .unwrap();
    assert_eq!(status, 413);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

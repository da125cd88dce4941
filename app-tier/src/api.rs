//! The `/api/v1` routes: CRUD for every [`Kind`], the place-amenity links, status,
//! stats and places search.
//!
//! The CRUD handlers are generic over the kind; the router instantiates them per kind.
//! Writes go to the primary, in one transaction when they take more than one
//! statement; a create is a single `INSERT ... RETURNING` (autocommit) unless it also
//! links amenities. References the body makes are enforced by the foreign keys and
//! explained after a refusal (a parent in the path that does not exist is 404; an id in
//! the body that does not exist is 422). A 201 is only sent once the row is committed.

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::input::{Ids, JsonObject, Paging};
use crate::model::{self, AMENITIES, CITIES, Kind, Mode, PLACES, REVIEWS, STATES};
use crate::record::Record;
use crate::server::AppState;
use crate::store::{self, Page, Search};

/// The `/api/v1` router (nest it, or use [`crate::server::app`]).
pub fn router() -> Router<AppState> {
    let mut r = Router::new()
        .route("/status", get(status))
        .route("/stats", get(stats))
        .route("/places_search", post(places_search))
        .route("/places/{id}/amenities", get(place_amenities))
        .route(
            "/places/{id}/amenities/{amenity_id}",
            post(link_amenity).delete(unlink_amenity),
        );
    for kind in model::ALL {
        r = r.route(
            &format!("/{}/{{id}}", kind.table),
            get(move |s: State<AppState>, id: Ids<String>| get_one(kind, s, id))
                .put(move |s: State<AppState>, id: Ids<String>, b: JsonObject| {
                    update(kind, s, id, b)
                })
                .delete(move |s: State<AppState>, id: Ids<String>| delete(kind, s, id)),
        );
        let all = format!("/{}", kind.table);
        r = if kind.parent.is_none() {
            r.route(
                &all,
                get(move |s: State<AppState>, p: Paging| list(kind, s, None, p))
                    .post(move |s: State<AppState>, b: JsonObject| create(kind, s, None, b)),
            )
        } else {
            // Children are created under their parent only; the flat list is for browsing.
            r.route(
                &all,
                get(move |s: State<AppState>, p: Paging| list(kind, s, None, p)),
            )
        };
    }
    for (parent, child) in [
        (&STATES, &CITIES),
        (&model::CITIES, &PLACES),
        (&PLACES, &REVIEWS),
    ] {
        r = r.route(
            &format!("/{}/{{id}}/{}", parent.table, child.table),
            get(move |s: State<AppState>, Ids(id): Ids<String>, p: Paging| {
                list(child, s, Some(id), p)
            })
            .post(
                move |s: State<AppState>, Ids(id): Ids<String>, b: JsonObject| {
                    create(child, s, Some(id), b)
                },
            ),
        );
    }
    r
}

/// A JSON array plus the pagination headers. Records decode their values as they are
/// printed here (once): a value that does not decode is a 500 with a JSON body, and
/// nothing of the page is sent.
fn page_response(items: Vec<Record>, total: u64, page: Page) -> Result<Response, ApiError> {
    // Sized for the page up front (a place prints as about 430 bytes): growing from
    // empty would copy the body over again several times.
    let mut body = Vec::with_capacity(64 + items.len() * 512);
    Record::write_json_array(&items, &mut body).map_err(|e| ApiError::Internal {
        detail: format!("printing a page of rows: {e}"),
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert("x-total-count", HeaderValue::from(total));
    headers.insert("x-page", HeaderValue::from(page.page));
    headers.insert("x-per-page", HeaderValue::from(page.per_page));
    Ok((headers, body).into_response())
}

/// One record as a JSON response with `status`.
fn record_response(status: StatusCode, record: &Record) -> Result<Response, ApiError> {
    let mut body = Vec::with_capacity(512);
    record
        .write_json(&mut body)
        .map_err(|e| ApiError::Internal {
            detail: format!("printing a row: {e}"),
        })?;
    Ok((
        status,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response())
}

async fn status() -> Json<Value> {
    Json(json!({ "status": "OK" }))
}

async fn stats(State(s): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    Ok(Json(Value::Object(store::stats(&mut conn).await?)))
}

async fn list(
    kind: &'static Kind,
    State(s): State<AppState>,
    parent_id: Option<String>,
    Paging(page): Paging,
) -> Result<Response, ApiError> {
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    if let (Some(p), Some(id)) = (&kind.parent, &parent_id)
        && !store::exists(&mut conn, p.table, id).await?
    {
        return Err(ApiError::NotFound);
    }
    let (items, total) = store::list(&mut conn, kind, parent_id.as_deref(), page).await?;
    page_response(items, total, page)
}

async fn get_one(
    kind: &'static Kind,
    State(s): State<AppState>,
    Ids(id): Ids<String>,
) -> Result<Response, ApiError> {
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    let record = store::get(&mut conn, kind, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    record_response(StatusCode::OK, &record)
}

async fn create(
    kind: &'static Kind,
    State(s): State<AppState>,
    parent_id: Option<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    // Validate everything before touching the database: a 400 costs no connection.
    // A parent id that cannot be one is no parent, as a GET of it says: 404 (the
    // INSERT would have been refused for its length, not for the missing parent).
    if parent_id
        .as_deref()
        .is_some_and(|id| !model::could_be_id(id))
    {
        return Err(ApiError::NotFound);
    }
    let values = model::parse_body(kind, &body, Mode::Create)?;
    let amenity_ids = if std::ptr::eq(kind, &PLACES) {
        model::id_list(&body, "amenity_ids", 100)?
    } else {
        Vec::new()
    };
    let mut session = s.db.session();
    if amenity_ids.is_empty() {
        // One row, one statement: committed on its own (autocommit), and it is the whole
        // unit, so no transaction and no round trips for BEGIN and COMMIT.
        let mut conn = session.write().await?;
        let created = insert_checked(&mut conn, kind, parent_id.as_deref(), &values).await?;
        return record_response(StatusCode::CREATED, &created);
    }
    // A place and its amenity links are one unit: all of them or none.
    let mut tx = session.begin().await?;
    let created = insert_checked(&mut tx, kind, parent_id.as_deref(), &values).await?;
    for amenity_id in &amenity_ids {
        if !store::exists(&mut tx, AMENITIES.table, amenity_id).await? {
            return Err(ApiError::BrokenReference {
                field: "amenity_ids".into(),
                message: format!("amenity_ids: no such amenity {amenity_id:?}"),
            });
        }
        store::link(&mut tx, created.id(), amenity_id).await?;
    }
    tx.commit().await?;
    record_response(StatusCode::CREATED, &created)
}

/// Inserts a row, relying on the foreign keys to refuse a parent or reference that does
/// not exist; only then does it look the ids up, to answer what checking first would
/// have: 404 for the parent in the path, else 422 naming the first dangling field.
/// The happy path costs one statement instead of one per reference plus the insert.
async fn insert_checked(
    conn: &mut sqlx::MySqlConnection,
    kind: &'static Kind,
    parent_id: Option<&str>,
    values: &[(&'static model::Field, model::Val)],
) -> Result<Record, ApiError> {
    let err = match store::insert(conn, kind, parent_id, values).await {
        Ok(created) => return Ok(created),
        Err(e) if store::is_broken_reference(&e) => e,
        Err(e) => return Err(e.into()),
    };
    if let (Some(p), Some(id)) = (&kind.parent, parent_id)
        && !store::exists(conn, p.table, id).await?
    {
        return Err(ApiError::NotFound);
    }
    for (f, v) in values {
        if let (Some(table), model::Val::Str(id)) = (f.references, v)
            && !store::exists(conn, table, id).await?
        {
            return Err(ApiError::BrokenReference {
                field: f.name.into(),
                message: format!("{}: no such {}", f.name, table.trim_end_matches('s')),
            });
        }
    }
    // Everything exists now: it was deleted and re-created in between. The generic 422.
    Err(err.into())
}

async fn update(
    kind: &'static Kind,
    State(s): State<AppState>,
    Ids(id): Ids<String>,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let values = model::parse_body(kind, &body, Mode::Update)?;
    let mut session = s.db.session();
    let mut tx = session.begin().await?;
    if !store::update(&mut tx, kind, &id, &values).await? {
        return Err(ApiError::NotFound);
    }
    let row = store::get(&mut tx, kind, &id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tx.commit().await?;
    record_response(StatusCode::OK, &row)
}

async fn delete(
    kind: &'static Kind,
    State(s): State<AppState>,
    Ids(id): Ids<String>,
) -> Result<Json<Value>, ApiError> {
    let mut session = s.db.session();
    let mut tx = session.begin().await?;
    if !store::delete(&mut tx, kind, &id).await? {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(Json(json!({})))
}

async fn place_amenities(
    State(s): State<AppState>,
    Ids(place_id): Ids<String>,
    Paging(page): Paging,
) -> Result<Response, ApiError> {
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    if !store::exists(&mut conn, PLACES.table, &place_id).await? {
        return Err(ApiError::NotFound);
    }
    let (items, total) = store::place_amenities(&mut conn, &place_id, page).await?;
    page_response(items, total, page)
}

/// 201 with the amenity when newly linked, 200 when it already was (HBNB semantics).
async fn link_amenity(
    State(s): State<AppState>,
    Ids((place_id, amenity_id)): Ids<(String, String)>,
) -> Result<Response, ApiError> {
    let mut session = s.db.session();
    let mut tx = session.begin().await?;
    if !store::exists(&mut tx, PLACES.table, &place_id).await? {
        return Err(ApiError::NotFound);
    }
    let amenity = store::get(&mut tx, &AMENITIES, &amenity_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let status = if store::link_exists(&mut tx, &place_id, &amenity_id).await? {
        StatusCode::OK
    } else {
        store::link(&mut tx, &place_id, &amenity_id).await?;
        StatusCode::CREATED
    };
    tx.commit().await?;
    record_response(status, &amenity)
}

async fn unlink_amenity(
    State(s): State<AppState>,
    Ids((place_id, amenity_id)): Ids<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let mut session = s.db.session();
    let mut tx = session.begin().await?;
    if !store::exists(&mut tx, PLACES.table, &place_id).await?
        || !store::exists(&mut tx, AMENITIES.table, &amenity_id).await?
        || !store::unlink(&mut tx, &place_id, &amenity_id).await?
    {
        return Err(ApiError::NotFound);
    }
    tx.commit().await?;
    Ok(Json(json!({})))
}

/// The filter lists of places_search: bounded so one request cannot build a
/// megabyte-long IN list.
const MAX_FILTER_IDS: usize = 1000;

async fn places_search(
    State(s): State<AppState>,
    Paging(page): Paging,
    JsonObject(body): JsonObject,
) -> Result<Response, ApiError> {
    let search = Search {
        states: model::id_list(&body, "states", MAX_FILTER_IDS)?,
        cities: model::id_list(&body, "cities", MAX_FILTER_IDS)?,
        amenities: model::id_list(&body, "amenities", MAX_FILTER_IDS)?,
    };
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    let (items, total) = store::search_places(&mut conn, &search, page).await?;
    page_response(items, total, page)
}

#[cfg(test)]
mod tests {
    #[test]
    fn router_builds_without_route_conflicts() {
        // axum panics on conflicting routes at build time; this catches it without a DB.
        let _ = super::router();
    }
}

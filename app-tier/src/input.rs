//! Request extractors whose rejections are [`ApiError`]s, so every malformed request,
//! whatever part of it is wrong, gets the same JSON error shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::store::Page;

/// Path parameters; a segment that is not valid percent-encoded UTF-8 is a 400.
pub struct Ids<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Ids<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Ids(v)),
            Err(e) => Err(ApiError::BadPath {
                detail: e.body_text(),
            }),
        }
    }
}

/// A request body that must be a JSON object. Not JSON, not UTF-8, or not an object
/// is a 400 ("Not a JSON", as HBNB said); over `max_body_bytes` is a 413.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // The Content-Type is not checked: HBNB clients (curl -d) often omit it, and the
        // body is parsed strictly anyway.
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::TooLarge
            } else {
                ApiError::NotJson {
                    detail: e.body_text(),
                }
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => Ok(JsonObject(m)),
            Ok(_) => Err(ApiError::NotJson {
                detail: "expected a JSON object".into(),
            }),
            Err(e) => Err(ApiError::NotJson {
                detail: e.to_string(),
            }),
        }
    }
}

/// `?page=N&per_page=M` (defaults 1 and [`Page::DEFAULT_PER_PAGE`]).
pub struct Paging(pub Page);

impl<S: Send + Sync> FromRequestParts<S> for Paging {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::invalid("query", e.body_text()))?;
        let mut page = Page::default();
        for (k, v) in pairs {
            let (max, slot) = match k.as_str() {
                "page" => (u64::MAX / Page::MAX_PER_PAGE, &mut page.page),
                "per_page" => (Page::MAX_PER_PAGE, &mut page.per_page),
                _ => continue,
            };
            *slot = v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid(
                        k.clone(),
                        format!("{k}: must be an integer from 1 to {max}"),
                    )
                })?;
        }
        Ok(Paging(page))
    }
}

//! The one HTTP error type: every failure a handler can meet becomes an [`ApiError`],
//! which picks the status code, logs the internals and answers a short JSON body
//! (`{"error": "...", "field": "..."}`).
//!
//! The rule the issue sets: a client's mistake is a 4xx and never a 500. Database
//! errors are classified here, in one place, so that a duplicate key is a 409, a broken
//! reference a 422, and an unreachable server a 503 whichever handler ran into it.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything a request can fail with, and the status code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: a field is missing, has the wrong type or is out of range.
    #[error("{message}")]
    Invalid {
        /// The offending field (JSON key or query parameter).
        field: String,
        /// What is wrong with it, for the client.
        message: String,
    },
    /// 400: the body is not a JSON object (or not UTF-8, or not JSON at all). The body
    /// says only "Not a JSON", as HBNB's did; the parser's complaint is logged at debug.
    #[error("Not a JSON")]
    NotJson {
        /// The parser's complaint.
        detail: String,
    },
    /// 400: a path segment could not be decoded (invalid percent-encoding or UTF-8).
    #[error("bad path: {detail}")]
    BadPath {
        /// The decoder's complaint.
        detail: String,
    },
    /// 404: no such resource (an unknown id in the path, or an unknown route).
    #[error("Not found")]
    NotFound,
    /// 405: the route exists but not with this method (the router adds `Allow`).
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 409: the request would create a duplicate (a unique key already taken).
    #[error("{message}")]
    Conflict {
        /// Which constraint, in words.
        message: String,
    },
    /// 422: the body refers to something that does not exist (a `user_id`, an amenity).
    #[error("{message}")]
    BrokenReference {
        /// The field holding the dangling id.
        field: String,
        /// What it should refer to.
        message: String,
    },
    /// 413: the body is larger than `max_body_bytes`.
    #[error("request body too large")]
    TooLarge,
    /// 503: the database cannot be reached right now; the client may retry.
    #[error("database unavailable")]
    DatabaseUnavailable {
        /// The driver's error, logged but never sent to the client.
        detail: String,
    },
    /// 503: every connection of the pool stayed in use for `acquire_timeout_ms`. The
    /// database answers; this server has more requests than connections for it.
    #[error("database busy")]
    DatabaseBusy {
        /// Which pool, for the log.
        detail: String,
    },
    /// 503: the request ran past `request_timeout_ms` (Gunicorn's worker timeout).
    #[error("request timed out")]
    Timeout,
    /// 500: a bug or an unclassified database error; details go to the error log only.
    #[error("internal error")]
    Internal {
        /// What went wrong, for the log.
        detail: String,
    },
}

impl ApiError {
    /// A 400 naming `field`.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Invalid { .. } | ApiError::NotJson { .. } | ApiError::BadPath { .. } => {
                StatusCode::BAD_REQUEST
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::BrokenReference { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::DatabaseUnavailable { .. }
            | ApiError::DatabaseBusy { .. }
            | ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the database could not be reached (as opposed to refusing the statement).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ApiError::DatabaseUnavailable { .. })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // Internals go to the error log; the client gets the short Display text only.
        match &self {
            ApiError::Internal { detail } => {
                log::error!(target: "app_tier::error", "status=500 detail={detail:?}");
            }
            ApiError::DatabaseUnavailable { detail } => {
                log::warn!(target: "app_tier::error", "status=503 database_unavailable detail={detail:?}");
            }
            ApiError::DatabaseBusy { detail } => {
                log::warn!(target: "app_tier::error", "status=503 database_busy detail={detail:?}");
            }
            ApiError::NotJson { detail } => {
                log::debug!(target: "app_tier::error", "status=400 not_json detail={detail:?}");
            }
            _ => {}
        }
        let body = match &self {
            ApiError::Invalid { field, message } | ApiError::BrokenReference { field, message } => {
                json!({ "error": message, "field": field })
            }
            other => json!({ "error": other.to_string() }),
        };
        let mut response = (status, Json(body)).into_response();
        if matches!(
            self,
            ApiError::DatabaseUnavailable { .. } | ApiError::Timeout
        ) {
            // The database may have gone away under this request (see `server::observe`);
            // a full pool says nothing about that.
            response.extensions_mut().insert(DatabaseTrouble);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Tells the load balancer and clients this is transient.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                "1".parse().expect("static header"),
            );
        }
        response
    }
}

/// Marks a response whose error may mean the database went away (unreachable, or a
/// request cut off by the timeout), so the pools test their idle connections.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseTrouble;

/// MariaDB error numbers that mean "the server went away or is refusing work for now",
/// as opposed to "your statement is wrong". Sources: MariaDB error code reference.
const UNAVAILABLE_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN: shutdown in progress
    1077, // ER_NORMAL_SHUTDOWN
    1078, // ER_GOT_SIGNAL
    1079, // ER_SHUTDOWN_COMPLETE
    1152, // ER_ABORTING_CONNECTION
    1205, // ER_LOCK_WAIT_TIMEOUT: retryable
    1213, // ER_LOCK_DEADLOCK: retryable
    1290, // ER_OPTION_PREVENTS_STATEMENT: e.g. --read-only during a switchover
    1927, // ER_CONNECTION_KILLED
    2006, // CR_SERVER_GONE_ERROR
    2013, // CR_SERVER_LOST
    4031, // ER_CLIENT_INTERACTION_TIMEOUT
];

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &err {
            E::Io(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Tls(_) => {
                ApiError::DatabaseUnavailable {
                    detail: err.to_string(),
                }
            }
            E::Database(db) => {
                let code = db
                    .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number());
                match code {
                    // ER_DUP_ENTRY: a unique key is taken.
                    Some(1062) => ApiError::Conflict {
                        message: "already exists (duplicate key)".into(),
                    },
                    // ER_NO_REFERENCED_ROW(_2): a foreign key points nowhere. Handlers check
                    // references first and name the field; this is the race-window fallback.
                    Some(1216 | 1452) => ApiError::BrokenReference {
                        field: "reference".into(),
                        message: "refers to a row that does not exist".into(),
                    },
                    // ER_ROW_IS_REFERENCED(_2): only reachable if a cascade is missing.
                    Some(1217 | 1451) => ApiError::Conflict {
                        message: "still referenced by other rows".into(),
                    },
                    // ER_DATA_TOO_LONG / ER_WARN_DATA_OUT_OF_RANGE: validation should
                    // have caught it, so the value came from the client; still a 400.
                    // MariaDB's message names a column, which may not be the client's
                    // field (a parent id from the path): it goes to the log only.
                    Some(1406 | 1264) => {
                        log::warn!(target: "app_tier::error", "status=400 value refused by the database, validation missed it: {}", db.message());
                        ApiError::invalid("body", "a value does not fit its column")
                    }
                    Some(n) if UNAVAILABLE_CODES.contains(&n) => ApiError::DatabaseUnavailable {
                        detail: err.to_string(),
                    },
                    _ => ApiError::Internal {
                        detail: err.to_string(),
                    },
                }
            }
            // Protocol desyncs happen when a connection dies mid-packet.
            E::Protocol(_) => ApiError::DatabaseUnavailable {
                detail: err.to_string(),
            },
            _ => ApiError::Internal {
                detail: err.to_string(),
            },
        }
    }
}

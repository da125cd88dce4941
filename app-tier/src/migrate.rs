//! Versioned schema migrations (`app-tier/migrations/NNNN_name.sql`, embedded at build
//! time) and the start-up check that refuses to serve an out-of-date schema.
//!
//! `app-tier migrate` applies them (sqlx records each in `_sqlx_migrations` with a
//! checksum). `serve` only *checks*: migrating from every app server at once on boot
//! would race, and a schema change is a deliberate step of a deploy.

use sqlx::MySqlPool;
use sqlx::migrate::Migrator;

/// Every migration this build knows, in version order.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Why the schema is not usable by this build.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// Some migrations of this build have not been applied.
    #[error(
        "database schema is behind: it is at version {applied} but this build needs version \
         {required}; run `app-tier migrate --config FILE` first (missing: {missing})"
    )]
    Behind {
        /// Highest applied version (0 if none).
        applied: i64,
        /// Highest version this build knows.
        required: i64,
        /// The versions not yet applied, comma-separated.
        missing: String,
    },
    /// A migration started and failed half-way (MariaDB DDL is not transactional).
    #[error(
        "migration {version} is recorded as failed (dirty); fix the schema by hand, delete its \
         row from _sqlx_migrations and rerun `app-tier migrate`"
    )]
    Dirty {
        /// The failed version.
        version: i64,
    },
    /// An applied migration's file was edited after it ran.
    #[error(
        "migration {version} was applied with a different checksum: its file was edited after it ran"
    )]
    Modified {
        /// The version whose checksum differs.
        version: i64,
    },
    /// The check itself failed (database unreachable, permissions...).
    #[error("cannot read the migration table: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// The version the newest migration of this build brings the schema to.
pub fn required_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Applies every pending migration.
pub async fn run(pool: &MySqlPool) -> Result<(), SchemaError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Succeeds when every migration of this build is applied, unmodified and clean.
/// Versions newer than this build are tolerated: during a rolling deploy old app
/// servers keep serving after the schema moved on (migrations are additive).
pub async fn check(pool: &MySqlPool) -> Result<(), SchemaError> {
    let rows: Vec<(i64, Vec<u8>, bool)> =
        match sqlx::query_as("SELECT version, checksum, success FROM _sqlx_migrations")
            .fetch_all(pool)
            .await
        {
            Ok(rows) => rows,
            // ER_NO_SUCH_TABLE: nothing was ever migrated.
            Err(sqlx::Error::Database(e))
                if e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .is_some_and(|e| e.number() == 1146) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e.into()),
        };
    if let Some((version, _, _)) = rows.iter().find(|(_, _, ok)| !ok) {
        return Err(SchemaError::Dirty { version: *version });
    }
    let mut missing = Vec::new();
    for m in MIGRATOR.iter() {
        match rows.iter().find(|(v, _, _)| *v == m.version) {
            Some((_, checksum, _)) if checksum.as_slice() != &*m.checksum => {
                return Err(SchemaError::Modified { version: m.version });
            }
            Some(_) => {}
            None => missing.push(m.version),
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(SchemaError::Behind {
        applied: rows.iter().map(|r| r.0).max().unwrap_or(0),
        required: required_version(),
        missing: missing
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(","),
    })
}

//! SQL for the kinds of [`crate::model`]: every statement is a prepared statement with
//! bound values; table and column names are spliced in only from the static kind
//! descriptions. Functions take a `&mut MySqlConnection`, so the caller decides whether
//! that is a replica connection or a transaction on the primary.

use serde_json::{Map, Value, json};
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, MySqlConnection, Row};

use crate::error::ApiError;
use crate::model::{Field, Kind, PLACES, Ty, Val};

/// One page of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// 1-based page number.
    pub page: u64,
    /// Rows per page.
    pub per_page: u64,
}

impl Page {
    /// The default page size.
    pub const DEFAULT_PER_PAGE: u64 = 50;
    /// The largest page size a client may ask for.
    pub const MAX_PER_PAGE: u64 = 500;

    fn offset(&self) -> u64 {
        (self.page - 1).saturating_mul(self.per_page)
    }
}

impl Default for Page {
    fn default() -> Self {
        Page {
            page: 1,
            per_page: Self::DEFAULT_PER_PAGE,
        }
    }
}

/// MariaDB spelling of HBNB's timestamp format (`2017-03-25T02:17:06.000000`).
fn ts(alias: &str, column: &str) -> String {
    format!("DATE_FORMAT({alias}.{column}, '%Y-%m-%dT%H:%i:%s.%f') AS {column}")
}

/// The SELECT list of `kind`, columns prefixed with `alias`.
fn columns(kind: &Kind, alias: &str) -> String {
    let mut cols = vec![
        format!("{alias}.id"),
        ts(alias, "created_at"),
        ts(alias, "updated_at"),
    ];
    if let Some(p) = &kind.parent {
        cols.push(format!("{alias}.{}", p.column));
    }
    for f in kind.fields {
        if !matches!(f.ty, Ty::Password) {
            cols.push(format!("{alias}.{}", f.name));
        }
    }
    cols.join(", ")
}

/// Decodes a row selected with `columns` (this module's SELECT list) into the API's JSON shape.
pub fn to_json(kind: &Kind, row: &MySqlRow) -> Result<Value, sqlx::Error> {
    let mut m = Map::new();
    for key in ["id", "created_at", "updated_at"] {
        m.insert(key.into(), json!(row.try_get::<String, _>(key)?));
    }
    if let Some(p) = &kind.parent {
        m.insert(p.column.into(), json!(row.try_get::<String, _>(p.column)?));
    }
    for f in kind.fields {
        let v = match f.ty {
            Ty::Password => continue,
            Ty::Str { .. } | Ty::Email | Ty::Id => json!(row.try_get::<Option<String>, _>(f.name)?),
            Ty::Int { .. } => json!(row.try_get::<Option<i32>, _>(f.name)?),
            Ty::Float { .. } => json!(row.try_get::<Option<f64>, _>(f.name)?),
        };
        m.insert(f.name.into(), v);
    }
    m.insert("__class__".into(), json!(class_name(kind)));
    Ok(Value::Object(m))
}

/// HBNB's `__class__` key (`State`, `City`...), kept so HBNB front-ends work unchanged.
fn class_name(kind: &Kind) -> String {
    let mut c = kind.singular.chars();
    c.next()
        .map(|first| first.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

fn bind_val<'q>(q: Query<'q, MySql, MySqlArguments>, v: &Val) -> Query<'q, MySql, MySqlArguments> {
    match v {
        Val::Str(s) => q.bind(s.clone()),
        Val::Int(n) => q.bind(*n),
        Val::Float(x) => q.bind(*x),
        Val::Null => q.bind(None::<String>),
    }
}

/// Whether `table` has a row with `id`.
pub async fn exists(conn: &mut MySqlConnection, table: &str, id: &str) -> Result<bool, ApiError> {
    let sql = format!("SELECT 1 FROM {table} WHERE id = ?");
    Ok(sqlx::query(&sql)
        .bind(id)
        .fetch_optional(conn)
        .await?
        .is_some())
}

/// One row by id.
pub async fn get(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    id: &str,
) -> Result<Option<Value>, ApiError> {
    let sql = format!(
        "SELECT {} FROM {} t WHERE t.id = ?",
        columns(kind, "t"),
        kind.table
    );
    let row = sqlx::query(&sql).bind(id).fetch_optional(conn).await?;
    Ok(row.map(|r| to_json(kind, &r)).transpose()?)
}

/// A page of rows, optionally only the children of `parent_id`, oldest first; and the
/// total count matching.
pub async fn list(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    parent_id: Option<&str>,
    page: Page,
) -> Result<(Vec<Value>, u64), ApiError> {
    let filter = match (&kind.parent, parent_id) {
        (Some(p), Some(_)) => format!("WHERE t.{} = ?", p.column),
        _ => String::new(),
    };
    let sql = format!(
        "SELECT {} FROM {} t {filter} ORDER BY t.created_at, t.id LIMIT ? OFFSET ?",
        columns(kind, "t"),
        kind.table
    );
    let mut q = sqlx::query(&sql);
    if let Some(id) = parent_id {
        q = q.bind(id);
    }
    let rows = q
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let count_sql = format!("SELECT COUNT(*) FROM {} t {filter}", kind.table);
    let mut cq = sqlx::query_scalar::<_, i64>(&count_sql);
    if let Some(id) = parent_id {
        cq = cq.bind(id);
    }
    let total = cq.fetch_one(&mut *conn).await?;
    let items = rows
        .iter()
        .map(|r| to_json(kind, r))
        .collect::<Result<_, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Inserts a row with a fresh UUID and returns the id.
pub async fn insert(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    parent_id: Option<&str>,
    values: &[(&'static Field, Val)],
) -> Result<String, ApiError> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut cols = vec!["id"];
    if let (Some(p), Some(_)) = (&kind.parent, parent_id) {
        cols.push(p.column);
    }
    cols.extend(values.iter().map(|(f, _)| f.name));
    let marks = vec!["?"; cols.len()].join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({marks})",
        kind.table,
        cols.join(", ")
    );
    let mut q = sqlx::query(&sql).bind(id.clone());
    if let Some(pid) = parent_id {
        q = q.bind(pid.to_string());
    }
    for (_, v) in values {
        q = bind_val(q, v);
    }
    q.execute(conn).await?;
    Ok(id)
}

/// Updates the given fields (and `updated_at`) of row `id`; false if there is no such row.
pub async fn update(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    id: &str,
    values: &[(&'static Field, Val)],
) -> Result<bool, ApiError> {
    // Lock the row first: tells "no such row" apart from "nothing changed", whatever
    // the server's found-rows flag says.
    let lock = format!("SELECT 1 FROM {} WHERE id = ? FOR UPDATE", kind.table);
    if sqlx::query(&lock)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .is_none()
    {
        return Ok(false);
    }
    let mut sets: Vec<String> = values
        .iter()
        .map(|(f, _)| format!("{} = ?", f.name))
        .collect();
    sets.push("updated_at = CURRENT_TIMESTAMP(6)".into());
    let sql = format!("UPDATE {} SET {} WHERE id = ?", kind.table, sets.join(", "));
    let mut q = sqlx::query(&sql);
    for (_, v) in values {
        q = bind_val(q, v);
    }
    q.bind(id).execute(conn).await?;
    Ok(true)
}

/// Deletes row `id` (children go with it: ON DELETE CASCADE); false if there was none.
pub async fn delete(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    id: &str,
) -> Result<bool, ApiError> {
    let sql = format!("DELETE FROM {} WHERE id = ?", kind.table);
    Ok(sqlx::query(&sql)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// Row counts per kind, keyed by table name.
pub async fn stats(conn: &mut MySqlConnection) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for kind in crate::model::ALL {
        let sql = format!("SELECT COUNT(*) FROM {}", kind.table);
        let n: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *conn).await?;
        out.insert(kind.table.into(), json!(n));
    }
    Ok(out)
}

/// The amenities linked to a place.
pub async fn place_amenities(
    conn: &mut MySqlConnection,
    place_id: &str,
    page: Page,
) -> Result<(Vec<Value>, u64), ApiError> {
    let kind = &crate::model::AMENITIES;
    let sql = format!(
        "SELECT {} FROM amenities t JOIN place_amenity pa ON pa.amenity_id = t.id \
         WHERE pa.place_id = ? ORDER BY t.created_at, t.id LIMIT ? OFFSET ?",
        columns(kind, "t")
    );
    let rows = sqlx::query(&sql)
        .bind(place_id)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM place_amenity WHERE place_id = ?")
        .bind(place_id)
        .fetch_one(&mut *conn)
        .await?;
    let items = rows
        .iter()
        .map(|r| to_json(kind, r))
        .collect::<Result<_, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Whether a place-amenity link exists (locking it for the transaction).
pub async fn link_exists(
    conn: &mut MySqlConnection,
    place_id: &str,
    amenity_id: &str,
) -> Result<bool, ApiError> {
    Ok(
        sqlx::query("SELECT 1 FROM place_amenity WHERE place_id = ? AND amenity_id = ? FOR UPDATE")
            .bind(place_id)
            .bind(amenity_id)
            .fetch_optional(conn)
            .await?
            .is_some(),
    )
}

/// Links an amenity to a place.
pub async fn link(
    conn: &mut MySqlConnection,
    place_id: &str,
    amenity_id: &str,
) -> Result<(), ApiError> {
    sqlx::query("INSERT INTO place_amenity (place_id, amenity_id) VALUES (?, ?)")
        .bind(place_id)
        .bind(amenity_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Unlinks; false if they were not linked.
pub async fn unlink(
    conn: &mut MySqlConnection,
    place_id: &str,
    amenity_id: &str,
) -> Result<bool, ApiError> {
    Ok(
        sqlx::query("DELETE FROM place_amenity WHERE place_id = ? AND amenity_id = ?")
            .bind(place_id)
            .bind(amenity_id)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// The filters of `POST /places_search` and of the `/hbnb` page.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Places in any city of these states...
    pub states: Vec<String>,
    /// ...or in these cities (if both are empty: every place).
    pub cities: Vec<String>,
    /// Places that have *all* of these amenities.
    pub amenities: Vec<String>,
}

/// Places matching `search`, HBNB semantics (see [`Search`]); unknown ids match nothing.
pub async fn search_places(
    conn: &mut MySqlConnection,
    search: &Search,
    page: Page,
) -> Result<(Vec<Value>, u64), ApiError> {
    let mut conds: Vec<String> = Vec::new();
    let marks = |n: usize| vec!["?"; n].join(", ");
    if !search.states.is_empty() || !search.cities.is_empty() {
        let mut any = Vec::new();
        if !search.cities.is_empty() {
            any.push(format!("t.city_id IN ({})", marks(search.cities.len())));
        }
        if !search.states.is_empty() {
            any.push(format!(
                "t.city_id IN (SELECT c.id FROM cities c WHERE c.state_id IN ({}))",
                marks(search.states.len())
            ));
        }
        conds.push(format!("({})", any.join(" OR ")));
    }
    if !search.amenities.is_empty() {
        conds.push(format!(
            "(SELECT COUNT(*) FROM place_amenity pa WHERE pa.place_id = t.id AND pa.amenity_id IN ({})) = ?",
            marks(search.amenities.len())
        ));
    }
    let filter = if conds.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conds.join(" AND "))
    };
    // Binds in the order the placeholders appear: cities, states, amenities, count.
    fn bind_all<'q>(
        mut q: Query<'q, MySql, MySqlArguments>,
        s: &'q Search,
    ) -> Query<'q, MySql, MySqlArguments> {
        for id in s.cities.iter().chain(&s.states).chain(&s.amenities) {
            q = q.bind(id.as_str());
        }
        if !s.amenities.is_empty() {
            q = q.bind(i64::try_from(s.amenities.len()).unwrap_or(i64::MAX));
        }
        q
    }
    let sql = format!(
        "SELECT {} FROM places t {filter} ORDER BY t.created_at, t.id LIMIT ? OFFSET ?",
        columns(&PLACES, "t")
    );
    let rows = bind_all(sqlx::query(&sql), search)
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let count_sql = format!("SELECT COUNT(*) FROM places t {filter}");
    let total: i64 = bind_all(sqlx::query(&count_sql), search)
        .fetch_one(&mut *conn)
        .await?
        .try_get(0)?;
    let items = rows
        .iter()
        .map(|r| to_json(&PLACES, r))
        .collect::<Result<_, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CITIES, USERS};

    #[test]
    fn columns_never_select_passwords() {
        let c = columns(&USERS, "t");
        assert!(!c.contains("password"), "{c}");
        assert!(c.contains("t.email"));
    }

    #[test]
    fn child_kinds_select_their_parent_column() {
        assert!(columns(&CITIES, "t").contains("t.state_id"));
        assert_eq!(class_name(&CITIES), "City");
    }
}

//! SQL for the kinds of [`crate::model`]: every statement is a prepared statement with
//! bound values; table and column names are spliced in only from the static kind
//! descriptions. Functions take a `&mut MySqlConnection`, so the caller decides whether
//! that is a replica connection or a transaction on the primary. Rows come back as
//! [`Record`]s.

use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sqlx::mysql::{MySqlArguments, MySqlRow};
use sqlx::query::Query;
use sqlx::{MySql, MySqlConnection, Row};

use crate::error::ApiError;
use crate::model::{Field, Kind, PLACES, Val};
use crate::record::{self, Record};

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

/// The SELECT list of `kind`, in [`record::column_names`] order, columns qualified with
/// `alias` (unqualified if empty, as `INSERT ... RETURNING` wants them). Timestamps
/// come as DATETIME values; [`Record`] prints them in HBNB's format.
fn columns(kind: &Kind, alias: &str) -> String {
    let prefix = if alias.is_empty() {
        String::new()
    } else {
        format!("{alias}.")
    };
    record::column_names(kind)
        .map(|c| format!("{prefix}{c}"))
        .collect::<Vec<_>>()
        .join(", ")
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
) -> Result<Option<Record>, ApiError> {
    let sql = &statements(kind).get;
    let row = sqlx::query(sql).bind(id).fetch_optional(conn).await?;
    Ok(row.map(|r| Record::from_row(kind, r)).transpose()?)
}

/// The SELECT of one page of `kind` (rows matching `filter`, which names the table `t`),
/// oldest first, each row followed by the total matching (`total`, a scalar subquery
/// run once per statement): one round trip and one snapshot for a page and its count.
/// Binds: the total's, the filter's, then LIMIT and OFFSET.
///
/// Without a filter the statement names the `(created_at, id)` index of migration 0002
/// (`ix_<table>_created`): MariaDB 10.11 otherwise prices that index walk above
/// scanning the whole table and sorting it (a full scan and a sort per request, about
/// 4x the CPU at 1000 rows and growing with the table), and even picks that plan for
/// a derived-table rewrite once it runs as a re-executed prepared statement. With a
/// filter the optimizer's choice stands: the foreign-key index finds the few children
/// and sorting them is cheap, where walking the creation index could read every row.
fn page_sql(kind: &Kind, filter: &str, total: &str) -> String {
    let rows = if filter.is_empty() {
        format!("FORCE INDEX (ix_{}_created)", kind.table)
    } else {
        filter.to_owned()
    };
    format!(
        "SELECT {}, ({total}) FROM {} t {rows} ORDER BY t.created_at, t.id LIMIT ? OFFSET ?",
        columns(kind, "t"),
        kind.table
    )
}

/// The statements of a kind that do not depend on the request, built once rather than
/// formatted anew for every request.
struct Statements {
    table: &'static str,
    get: String,
    /// A page of all rows, and of the children of one parent.
    page: (String, Option<String>),
    /// The count of all rows, and of the children of one parent: alone, for a page
    /// past the end, which has no row to carry it.
    count: (String, Option<String>),
}

impl Statements {
    fn of(kind: &Kind) -> Statements {
        // The count of all rows is the sum of the table's shards in `<table>_count`
        // (migrations 0003 and 0004), kept by triggers: O(1) where COUNT(*) reads every
        // row. Children are counted on their parent's foreign-key index.
        let all = total_sql(kind);
        let children = kind.parent.as_ref().map(|p| {
            (
                format!("WHERE t.{} = ?", p.column),
                format!(
                    "SELECT COUNT(*) FROM {} c WHERE c.{} = ?",
                    kind.table, p.column
                ),
            )
        });
        Statements {
            table: kind.table,
            get: format!(
                "SELECT {} FROM {} t WHERE t.id = ?",
                columns(kind, "t"),
                kind.table
            ),
            page: (
                page_sql(kind, "", &all),
                children
                    .as_ref()
                    .map(|(filter, count)| page_sql(kind, filter, count)),
            ),
            count: (all, children.map(|(_, count)| count)),
        }
    }
}

fn statements(kind: &Kind) -> &'static Statements {
    static ALL: OnceLock<Vec<Statements>> = OnceLock::new();
    ALL.get_or_init(|| {
        crate::model::ALL
            .iter()
            .map(|k| Statements::of(k))
            .collect()
    })
    .iter()
    .find(|s| s.table == kind.table)
    .expect("every kind is in model::ALL")
}

/// A page of rows, optionally only the children of `parent_id`, oldest first; and the
/// total count matching.
pub async fn list(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    parent_id: Option<&str>,
    page: Page,
) -> Result<(Vec<Record>, u64), ApiError> {
    let st = statements(kind);
    let (sql, count_sql, parent_id) = match (&st.page.1, &st.count.1, parent_id) {
        (Some(page), Some(count), Some(id)) => (page, count, Some(id)),
        _ => (&st.page.0, &st.count.0, None),
    };
    let mut q = sqlx::query(sql);
    if let Some(id) = parent_id {
        q = q.bind(id).bind(id);
    }
    let rows = q
        .bind(page.per_page)
        .bind(page.offset())
        .fetch_all(&mut *conn)
        .await?;
    let total = match rows.first() {
        Some(row) => row.try_get(row.len() - 1)?,
        None if page.offset() == 0 => 0,
        None => {
            let mut cq = sqlx::query_scalar::<_, i64>(count_sql);
            if let Some(id) = parent_id {
                cq = cq.bind(id);
            }
            cq.fetch_one(&mut *conn).await?
        }
    };
    page_of(kind, rows, 1, total)
}

/// A page as the list functions return it: the rows as records (each row followed by
/// `trailing` columns the record ignores), and the total.
fn page_of(
    kind: &'static Kind,
    rows: Vec<MySqlRow>,
    trailing: usize,
    total: i64,
) -> Result<(Vec<Record>, u64), ApiError> {
    let items = rows
        .into_iter()
        .map(|r| Record::from_row_and(kind, r, trailing))
        .collect::<Result<_, _>>()?;
    Ok((items, u64::try_from(total).unwrap_or(0)))
}

/// Inserts a row with a fresh UUID and returns it as the API shows it (defaults and
/// timestamps filled in by MariaDB), in one statement: `INSERT ... RETURNING`.
///
/// Returns the driver's error untouched so the caller can tell a foreign key pointing
/// nowhere (see [`is_broken_reference`]) from other failures. The whole result is
/// read, not just the row: with autocommit, the end of the result comes after the
/// commit, so an `Ok` means the row is committed.
pub async fn insert(
    conn: &mut MySqlConnection,
    kind: &'static Kind,
    parent_id: Option<&str>,
    values: &[(&'static Field, Val)],
) -> Result<Record, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut cols = vec!["id"];
    if let (Some(p), Some(_)) = (&kind.parent, parent_id) {
        cols.push(p.column);
    }
    cols.extend(values.iter().map(|(f, _)| f.name));
    let marks = vec!["?"; cols.len()].join(", ");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({marks}) RETURNING {}",
        kind.table,
        cols.join(", "),
        columns(kind, "")
    );
    let mut q = sqlx::query(&sql).bind(id.clone());
    if let Some(pid) = parent_id {
        q = q.bind(pid.to_string());
    }
    for (_, v) in values {
        q = bind_val(q, v);
    }
    let mut rows = q.fetch_all(conn).await?;
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) => Record::from_row(kind, row),
        // Cannot happen for a one-row INSERT; a 500 if it ever does.
        _ => Err(sqlx::Error::RowNotFound),
    }
}

/// Whether `err` is MariaDB refusing a row whose foreign key points nowhere
/// (ER_NO_REFERENCED_ROW, ER_NO_REFERENCED_ROW_2).
pub fn is_broken_reference(err: &sqlx::Error) -> bool {
    err.as_database_error()
        .and_then(|db| db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>())
        .is_some_and(|e| matches!(e.number(), 1216 | 1452))
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

/// The total of all rows of `kind`: the sum of its shards in `<table>_count`.
fn total_sql(kind: &Kind) -> String {
    format!(
        "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM {}_count",
        kind.table
    )
}

/// Row counts per kind, keyed by table name: each table's shards summed, all in one
/// statement whatever the size of the tables.
pub async fn stats(conn: &mut MySqlConnection) -> Result<Map<String, Value>, ApiError> {
    static SQL: OnceLock<String> = OnceLock::new();
    let sql = SQL.get_or_init(|| {
        crate::model::ALL
            .iter()
            .map(|k| format!("SELECT '{}', ({})", k.table, total_sql(k)))
            .collect::<Vec<_>>()
            .join(" UNION ALL ")
    });
    let counts: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&mut *conn).await?;
    let mut out = Map::new();
    for kind in crate::model::ALL {
        let n = counts
            .iter()
            .find(|(t, _)| t == kind.table)
            .map_or(0, |(_, n)| *n);
        out.insert(kind.table.into(), json!(n));
    }
    Ok(out)
}

/// The amenities linked to a place.
pub async fn place_amenities(
    conn: &mut MySqlConnection,
    place_id: &str,
    page: Page,
) -> Result<(Vec<Record>, u64), ApiError> {
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
    page_of(kind, rows, 0, total)
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
) -> Result<(Vec<Record>, u64), ApiError> {
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
    page_of(&PLACES, rows, 0, total)
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
    }

    #[test]
    fn unqualified_columns_for_returning() {
        let c = columns(&CITIES, "");
        assert!(
            c.starts_with("id, created_at, updated_at, state_id, "),
            "{c}"
        );
        assert!(!c.contains("t."), "{c}");
    }

    #[test]
    fn only_unfiltered_pages_name_the_creation_index() {
        let all = page_sql(&PLACES, "", "SELECT 1");
        assert!(all.contains("FROM places t FORCE INDEX (ix_places_created) ORDER BY t.created_at, t.id LIMIT ? OFFSET ?"), "{all}");
        let some = page_sql(&PLACES, "WHERE t.city_id = ?", "SELECT 1");
        assert!(!some.contains("FORCE"), "{some}");
    }

    #[test]
    fn pages_carry_their_total_as_the_last_column() {
        let st = Statements::of(&PLACES);
        assert!(
            st.page.0.contains(
                ", (SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED) FROM places_count) FROM places t"
            ),
            "{}",
            st.page.0
        );
        let children = st.page.1.expect("places have a parent");
        assert!(
            children.contains(", (SELECT COUNT(*) FROM places c WHERE c.city_id = ?) FROM places t WHERE t.city_id = ?"),
            "{children}"
        );
    }
}

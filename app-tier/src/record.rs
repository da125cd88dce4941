//! [`Record`]: one row as the API shows it, decoded straight from the driver's row and
//! serialized straight to JSON.
//!
//! The JSON shape is HBNB's: every column of the kind except passwords, plus
//! `__class__`, keys in sorted order (what a `serde_json::Value` object, a `BTreeMap`,
//! prints). A list of 20 places used to become 280 map entries with an allocated key
//! each before being printed; a `Record` keeps the driver's row, decodes each value in
//! place while printing it, and writes the keys from a per-kind table computed once. [`Record::into_value`] gives the
//! `Value` form for code that inspects rows (the `/hbnb` page); both print the same
//! bytes (tested below).

use std::sync::OnceLock;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use crate::model::{self, Kind, Ty};

/// One column value, borrowed from the row it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell<'r> {
    Str(Option<&'r str>),
    Int(Option<i32>),
    Float(Option<f64>),
}

impl Serialize for Cell<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Cell::Str(v) => v.serialize(s),
            Cell::Int(v) => v.serialize(s),
            Cell::Float(v) => v.serialize(s),
        }
    }
}

impl Cell<'_> {
    fn to_value(self) -> Value {
        match self {
            Cell::Str(v) => v.map_or(Value::Null, |v| Value::String(v.to_owned())),
            Cell::Int(v) => v.map_or(Value::Null, Value::from),
            Cell::Float(v) => v.map_or(Value::Null, Value::from),
        }
    }
}

/// Where the cells of a record come from: a driver row, or (in tests) a list.
trait Cells {
    fn cell(&self, layout: &Layout, i: usize) -> Result<Cell<'_>, sqlx::Error>;
}

impl Cells for MySqlRow {
    fn cell(&self, layout: &Layout, i: usize) -> Result<Cell<'_>, sqlx::Error> {
        Ok(match layout.columns[i].1 {
            None => Cell::Str(Some(self.try_get::<&str, _>(i)?)),
            Some(Ty::Int { .. }) => Cell::Int(self.try_get(i)?),
            Some(Ty::Float { .. }) => Cell::Float(self.try_get(i)?),
            Some(_) => Cell::Str(self.try_get(i)?),
        })
    }
}

/// Writes the JSON object of `cells`: keys sorted, `__class__` included.
fn serialize_cells<C: Cells, S: Serializer>(
    layout: &Layout,
    cells: &C,
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(layout.keys.len()))?;
    for (key, slot) in &layout.keys {
        match slot {
            Slot::Column(i) => {
                let cell = cells
                    .cell(layout, *i)
                    .map_err(<S::Error as serde::ser::Error>::custom)?;
                map.serialize_entry(key, &cell)?;
            }
            Slot::Class => map.serialize_entry(key, &layout.class)?,
        }
    }
    map.end()
}

/// The `Value` form of `cells`.
fn cells_to_value<C: Cells>(layout: &Layout, cells: &C) -> Result<Value, sqlx::Error> {
    let mut m = Map::new();
    for (i, (name, _)) in layout.columns.iter().enumerate() {
        m.insert((*name).into(), cells.cell(layout, i)?.to_value());
    }
    m.insert("__class__".into(), Value::String(layout.class.clone()));
    Ok(Value::Object(m))
}

/// Where a JSON key's value comes from.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// The `i`th column of the SELECT list.
    Column(usize),
    /// `__class__`.
    Class,
}

/// A kind's columns in SELECT order and its JSON keys in sorted order.
#[derive(Debug)]
struct Layout {
    table: &'static str,
    /// `(key, type)` per column, in the order `store` selects them.
    columns: Vec<(&'static str, Option<Ty>)>,
    /// JSON keys, sorted, with where each value comes from.
    keys: Vec<(&'static str, Slot)>,
    /// `State`, `City`...
    class: String,
}

impl Layout {
    fn of(kind: &'static Kind) -> Layout {
        // `None`: a NOT NULL string the API always has (id, timestamps, parent id).
        let mut columns: Vec<(&'static str, Option<Ty>)> =
            vec![("id", None), ("created_at", None), ("updated_at", None)];
        if let Some(p) = &kind.parent {
            columns.push((p.column, None));
        }
        columns.extend(
            kind.fields
                .iter()
                .filter(|f| !matches!(f.ty, Ty::Password))
                .map(|f| (f.name, Some(f.ty))),
        );
        let mut keys: Vec<(&'static str, Slot)> = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, Slot::Column(i)))
            .collect();
        keys.push(("__class__", Slot::Class));
        keys.sort_by_key(|(k, _)| *k);
        let mut c = kind.singular.chars();
        let class = c
            .next()
            .map(|first| first.to_uppercase().chain(c).collect())
            .unwrap_or_default();
        Layout {
            table: kind.table,
            columns,
            keys,
            class,
        }
    }

    fn get(kind: &Kind) -> &'static Layout {
        static LAYOUTS: OnceLock<Vec<Layout>> = OnceLock::new();
        LAYOUTS
            .get_or_init(|| model::ALL.iter().map(|k| Layout::of(k)).collect())
            .iter()
            .find(|l| l.table == kind.table)
            .expect("every kind is in model::ALL")
    }
}

/// The names of `kind`'s columns in the order [`Record::from_row`] reads them (the
/// order the SELECT lists of `store` must use).
pub fn column_names(kind: &Kind) -> impl Iterator<Item = &'static str> {
    Layout::get(kind).columns.iter().map(|(name, _)| *name)
}

/// One row of a kind, as the API returns it. It keeps the driver's row and decodes
/// each value where it lies when serialized: no `String` per column.
#[derive(Debug)]
pub struct Record {
    layout: &'static Layout,
    row: MySqlRow,
}

impl Record {
    /// Takes a row whose columns are [`column_names`] in that order, checking every
    /// value decodes. By position, not by name: cheaper, and `INSERT ... RETURNING` run
    /// as a prepared statement comes back without column names (MariaDB sends none
    /// when preparing it).
    pub fn from_row(kind: &Kind, row: MySqlRow) -> Result<Record, sqlx::Error> {
        Record::from_row_and(kind, row, 0)
    }

    /// [`Record::from_row`] for a row that carries `trailing` more columns after the
    /// record's (a list's total), which the record ignores.
    pub fn from_row_and(
        kind: &Kind,
        row: MySqlRow,
        trailing: usize,
    ) -> Result<Record, sqlx::Error> {
        let layout = Layout::get(kind);
        if row.len() != layout.columns.len() + trailing {
            return Err(sqlx::Error::ColumnIndexOutOfBounds {
                index: layout.columns.len() + trailing,
                len: row.len(),
            });
        }
        for i in 0..layout.columns.len() {
            row.cell(layout, i)?;
        }
        Ok(Record { layout, row })
    }

    /// The row's `id`.
    pub fn id(&self) -> &str {
        match self.row.cell(self.layout, 0) {
            Ok(Cell::Str(Some(id))) => id,
            _ => "",
        }
    }

    /// The same row as a JSON object.
    pub fn into_value(self) -> Value {
        // `from_row` decoded every cell once already.
        cells_to_value(self.layout, &self.row).unwrap_or(Value::Null)
    }
}

impl Serialize for Record {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_cells(self.layout, &self.row, s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CITIES, PLACES, USERS};

    /// Cells given as a list, standing in for a driver row.
    struct Listed(Vec<Cell<'static>>);

    impl Cells for Listed {
        fn cell(&self, _: &Layout, i: usize) -> Result<Cell<'_>, sqlx::Error> {
            Ok(self.0[i])
        }
    }

    struct Json<'a>(&'a Listed);

    impl Serialize for Json<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            serialize_cells(Layout::get(&PLACES), self.0, s)
        }
    }

    fn place(description: Option<&'static str>, latitude: Option<f64>) -> Listed {
        let s = |v: &'static str| Cell::Str(Some(v));
        Listed(vec![
            s("p-1"),
            s("2017-03-25T02:17:06.000000"),
            s("2017-03-25T02:17:07.000000"),
            s("c-1"),
            s("u-1"),
            s("Loft \"SoMa\" \u{e9}\n"),
            Cell::Str(description),
            Cell::Int(Some(2)),
            Cell::Int(Some(0)),
            Cell::Int(Some(-3)),
            Cell::Int(Some(120)),
            Cell::Float(latitude),
            Cell::Float(Some(-122.4)),
        ])
    }

    #[test]
    fn serializes_exactly_as_the_value_object_would() {
        for r in [
            place(Some("x"), Some(37.778)),
            place(None, None),
            place(None, Some(1e-7)),
            place(None, Some(f64::NAN)),
        ] {
            let direct = serde_json::to_string(&Json(&r)).unwrap();
            let value = cells_to_value(Layout::get(&PLACES), &r).unwrap();
            assert_eq!(direct, serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn keys_are_sorted_with_class_first() {
        let v = serde_json::to_string(&Json(&place(None, None))).unwrap();
        assert!(
            v.starts_with(r#"{"__class__":"Place","city_id":"c-1","created_at":"#),
            "{v}"
        );
    }

    #[test]
    fn layouts_skip_passwords_and_include_the_parent() {
        let users: Vec<_> = column_names(&USERS).collect();
        assert!(!users.contains(&"password"), "{users:?}");
        assert!(column_names(&CITIES).any(|c| c == "state_id"));
        assert_eq!(Layout::get(&CITIES).class, "City");
    }
}

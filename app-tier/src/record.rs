//! [`Record`]: one row as the API shows it, decoded straight from the driver's row and
//! printed straight to JSON.
//!
//! The JSON shape is HBNB's: every column of the kind except passwords, plus
//! `__class__`, keys in sorted order (what a `serde_json::Value` object, a `BTreeMap`,
//! prints). A list of 20 places used to become 280 map entries with an allocated key
//! each before being printed; a `Record` keeps the driver's row and decodes each value
//! in place while printing it. What does not depend on the row (the keys, their
//! punctuation and `__class__`) is a per-kind template printed once, when the kind's
//! layout is built; a record only adds its values (escaped by serde_json).
//! [`Record::into_value`] gives the `Value` form for code that inspects rows (the
//! `/hbnb` page); both print the same bytes (tested below).

use std::sync::OnceLock;

use serde_json::{Map, Value};
use sqlx::Row;
use sqlx::mysql::MySqlRow;
use sqlx::types::time::PrimitiveDateTime;

use crate::model::{self, Kind, Ty};

/// One column value, borrowed from the row it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cell<'r> {
    Str(Option<&'r str>),
    Int(Option<i32>),
    Float(Option<f64>),
    Time(PrimitiveDateTime),
}

impl Cell<'_> {
    /// Appends the JSON of the value to `out`: strings escaped by serde_json, numbers
    /// printed by it (a non-finite float is `null`, as serde_json prints it).
    fn write(self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        match self {
            Cell::Str(Some(v)) => serde_json::to_writer(out, v),
            Cell::Int(Some(v)) => serde_json::to_writer(out, &v),
            Cell::Float(Some(v)) => serde_json::to_writer(out, &v),
            Cell::Str(None) | Cell::Int(None) | Cell::Float(None) => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Cell::Time(t) => {
                // Digits and separators only: nothing to escape.
                out.push(b'"');
                out.extend_from_slice(&Timestamp::of(&t).0);
                out.push(b'"');
                Ok(())
            }
        }
    }

    fn to_value(self) -> Value {
        match self {
            Cell::Str(v) => v.map_or(Value::Null, |v| Value::String(v.to_owned())),
            Cell::Int(v) => v.map_or(Value::Null, Value::from),
            Cell::Float(v) => v.map_or(Value::Null, Value::from),
            Cell::Time(t) => Value::String(Timestamp::of(&t).as_str().to_owned()),
        }
    }
}

/// A timestamp in HBNB's format, `2017-03-25T02:17:06.000000` (what MariaDB's
/// `DATE_FORMAT(t, '%Y-%m-%dT%H:%i:%s.%f')` prints), written into a fixed buffer.
/// MariaDB sends a DATETIME in a prepared statement's result as 11 binary bytes;
/// formatting it here costs the app tier less than `DATE_FORMAT` costs the server.
struct Timestamp([u8; 26]);

impl Timestamp {
    fn of(t: &PrimitiveDateTime) -> Timestamp {
        let mut b = *b"0000-00-00T00:00:00.000000";
        // DATETIME years are 1000..=9999 (0 for a zero date): four digits.
        let year = u32::try_from(t.year()).unwrap_or(0).min(9999);
        let fields: [(usize, u32, u32); 7] = [
            (0, year, 4),
            (5, u32::from(u8::from(t.month())), 2),
            (8, u32::from(t.day()), 2),
            (11, u32::from(t.hour()), 2),
            (14, u32::from(t.minute()), 2),
            (17, u32::from(t.second()), 2),
            (20, t.microsecond(), 6),
        ];
        for (at, mut v, width) in fields {
            for i in (at..at + width as usize).rev() {
                b[i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        }
        Timestamp(b)
    }

    fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Where the cells of a record come from: a driver row, or (in tests) a list.
trait Cells {
    fn cell(&self, layout: &Layout, i: usize) -> Result<Cell<'_>, sqlx::Error>;
}

impl Cells for MySqlRow {
    fn cell(&self, layout: &Layout, i: usize) -> Result<Cell<'_>, sqlx::Error> {
        Ok(match layout.columns[i].1 {
            Source::Key => Cell::Str(Some(self.try_get::<&str, _>(i)?)),
            Source::Time => Cell::Time(self.try_get(i)?),
            Source::Field(Ty::Int { .. }) => Cell::Int(self.try_get(i)?),
            Source::Field(Ty::Float { .. }) => Cell::Float(self.try_get(i)?),
            Source::Field(_) => Cell::Str(self.try_get(i)?),
        })
    }
}

/// Appends the JSON object of `cells` to `out`: keys sorted, `__class__` included.
fn write_cells<C: Cells>(layout: &Layout, cells: &C, out: &mut Vec<u8>) -> Result<(), PrintError> {
    for (text, column) in &layout.template {
        out.extend_from_slice(text);
        if let Some(i) = column {
            cells.cell(layout, *i)?.write(out)?;
        }
    }
    Ok(())
}

/// Why a record could not be printed.
#[derive(Debug, thiserror::Error)]
pub enum PrintError {
    /// A value the driver could not decode.
    #[error("decoding a value: {0}")]
    Decode(#[from] sqlx::Error),
    /// serde_json refused a value.
    #[error("printing a value: {0}")]
    Json(#[from] serde_json::Error),
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

/// What a column holds, and so how it is decoded.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// A NOT NULL string the API always has: the id, a parent's id.
    Key,
    /// A NOT NULL `DATETIME(6)`: `created_at`, `updated_at`.
    Time,
    /// A field of the kind.
    Field(Ty),
}

/// A kind's columns in SELECT order and the template of its JSON object (keys sorted).
#[derive(Debug)]
struct Layout {
    table: &'static str,
    /// `(key, source)` per column, in the order `store` selects them.
    columns: Vec<(&'static str, Source)>,
    /// The JSON object as pieces of fixed text, each followed by the value of a
    /// column (or by nothing, for the last): `{"__class__":"Place","city_id":`, 3,
    /// `,"created_at":`, 1, ... `}`.
    template: Vec<(Vec<u8>, Option<usize>)>,
    /// `State`, `City`...
    class: String,
}

impl Layout {
    fn of(kind: &'static Kind) -> Layout {
        let mut columns = vec![
            ("id", Source::Key),
            ("created_at", Source::Time),
            ("updated_at", Source::Time),
        ];
        if let Some(p) = &kind.parent {
            columns.push((p.column, Source::Key));
        }
        columns.extend(
            kind.fields
                .iter()
                .filter(|f| !matches!(f.ty, Ty::Password))
                .map(|f| (f.name, Source::Field(f.ty))),
        );
        let mut c = kind.singular.chars();
        let class: String = c
            .next()
            .map(|first| first.to_uppercase().chain(c).collect())
            .unwrap_or_default();
        // Sorted keys, each with the column its value comes from; `__class__` (first,
        // '_' sorts before the letters) has its value in the text.
        let mut keys: Vec<(&'static str, Option<usize>)> = columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| (*name, Some(i)))
            .collect();
        keys.push(("__class__", None));
        keys.sort_by_key(|(k, _)| *k);
        let json = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let mut template = Vec::new();
        let mut text = String::from("{");
        for (n, (key, column)) in keys.into_iter().enumerate() {
            if n > 0 {
                text.push(',');
            }
            text.push_str(&json(key));
            text.push(':');
            match column {
                Some(i) => template.push((std::mem::take(&mut text).into_bytes(), Some(i))),
                None => text.push_str(&json(&class)),
            }
        }
        text.push('}');
        template.push((text.into_bytes(), None));
        Layout {
            table: kind.table,
            columns,
            template,
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
/// each value where it lies when printed: no `String` per column.
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
        let record = Record::from_row_and(kind, row, 0)?;
        for i in 0..record.layout.columns.len() {
            record.row.cell(record.layout, i)?;
        }
        Ok(record)
    }

    /// A row of a page, which carries `trailing` more columns after the record's (the
    /// list's total) that the record ignores. Only the column count is checked: the
    /// values are decoded once, when the record is printed, and one that does not
    /// decode is an error there ([`Record::write_json`], [`Record::into_value`]).
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
    pub fn into_value(self) -> Result<Value, sqlx::Error> {
        cells_to_value(self.layout, &self.row)
    }

    /// Appends the record's JSON object to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), PrintError> {
        write_cells(self.layout, &self.row, out)
    }

    /// Appends a JSON array of `records` to `out`.
    pub fn write_json_array(records: &[Record], out: &mut Vec<u8>) -> Result<(), PrintError> {
        out.push(b'[');
        for (n, r) in records.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            r.write_json(out)?;
        }
        out.push(b']');
        Ok(())
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

    /// What a place's record prints for `cells`.
    fn printed(cells: &Listed) -> String {
        let mut out = Vec::new();
        write_cells(Layout::get(&PLACES), cells, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn at(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> PrimitiveDateTime {
        use time::{Date, Month, Time};
        let month = Month::try_from(mo).unwrap();
        PrimitiveDateTime::new(
            Date::from_calendar_date(y, month, d).unwrap(),
            Time::from_hms_micro(h, mi, s, us).unwrap(),
        )
    }

    fn place(description: Option<&'static str>, latitude: Option<f64>) -> Listed {
        let s = |v: &'static str| Cell::Str(Some(v));
        Listed(vec![
            s("p-1"),
            Cell::Time(at(2017, 3, 25, 2, 17, 6, 0)),
            Cell::Time(at(2017, 3, 25, 2, 17, 7, 120)),
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
    fn prints_exactly_as_the_value_object_would() {
        for r in [
            place(Some("x"), Some(37.778)),
            place(None, None),
            place(None, Some(1e-7)),
            place(None, Some(f64::NAN)),
            place(Some("\u{1}\t\\ \u{2028} </script>"), Some(f64::INFINITY)),
        ] {
            let value = cells_to_value(Layout::get(&PLACES), &r).unwrap();
            assert_eq!(printed(&r), serde_json::to_string(&value).unwrap());
        }
    }

    #[test]
    fn arrays_of_records_are_json_arrays() {
        let mut out = Vec::new();
        Record::write_json_array(&[], &mut out).unwrap();
        assert_eq!(out, b"[]");
    }

    #[test]
    fn timestamps_print_as_date_format_would() {
        for (t, want) in [
            (at(2017, 3, 25, 2, 17, 6, 0), "2017-03-25T02:17:06.000000"),
            (
                at(2026, 11, 26, 23, 59, 59, 999_999),
                "2026-11-26T23:59:59.999999",
            ),
            (at(1000, 1, 1, 0, 0, 0, 1), "1000-01-01T00:00:00.000001"),
            (
                at(9999, 12, 31, 10, 5, 9, 40_500),
                "9999-12-31T10:05:09.040500",
            ),
        ] {
            assert_eq!(Timestamp::of(&t).as_str(), want);
            assert_eq!(Cell::Time(t).to_value(), Value::String(want.into()));
            let mut out = Vec::new();
            Cell::Time(t).write(&mut out).unwrap();
            assert_eq!(out, format!("\"{want}\"").into_bytes());
        }
    }

    #[test]
    fn keys_are_sorted_with_class_first() {
        let v = printed(&place(None, None));
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

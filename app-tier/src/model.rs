//! The kinds of resource the API serves, described once as data.
//!
//! Each [`Kind`] names its table, its parent (the resource it lives under in URLs and
//! whose deletion cascades to it) and its fields with their types, limits and whether a
//! client may set them on create / update. The SQL in [`crate::store`], the validation
//! here and the JSON shape all derive from these tables, so a field cannot be validated
//! one way and stored another. Column names in SQL come only from these constants,
//! never from the request; values are always bound as parameters.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The type and limits of one field.
#[derive(Debug, Clone, Copy)]
pub enum Ty {
    /// A string of 1..=`max` characters after trimming (`max` matches the VARCHAR),
    /// without control characters (a NUL or an escape sequence in a name is stored and
    /// printed into every page and terminal that shows it).
    Str {
        /// Longest allowed, in characters (MariaDB counts characters, not bytes).
        max: usize,
        /// Free text: tabs and line breaks are allowed (other control characters not).
        lines: bool,
    },
    /// A plausible e-mail address (`x@y`), at most 128 characters.
    Email,
    /// Write-only: stored salted and hashed, never returned.
    Password,
    /// The id of a row of another table (existence is checked by the handler: 422).
    Id,
    /// A JSON integer (not a float, not a string) in `min..=max`.
    Int {
        /// Smallest allowed.
        min: i64,
        /// Largest allowed.
        max: i64,
    },
    /// A JSON number in `min..=max`.
    Float {
        /// Smallest allowed.
        min: f64,
        /// Largest allowed.
        max: f64,
    },
}

/// One client-settable column.
#[derive(Debug)]
pub struct Field {
    /// JSON key and column name.
    pub name: &'static str,
    /// Type and limits.
    pub ty: Ty,
    /// Must be present on create.
    pub required: bool,
    /// May be changed by PUT (otherwise silently ignored there, as HBNB did).
    pub updatable: bool,
    /// May be JSON `null` (stored as NULL).
    pub nullable: bool,
    /// For [`Ty::Id`]: the table the id must exist in.
    pub references: Option<&'static str>,
}

/// Where a kind hangs in the URL tree, e.g. cities under `/states/{id}/cities`.
#[derive(Debug)]
pub struct Parent {
    /// The foreign-key column (`state_id`), filled from the URL, never from the body.
    pub column: &'static str,
    /// The parent's table (`states`).
    pub table: &'static str,
}

/// One kind of resource.
#[derive(Debug)]
pub struct Kind {
    /// Table name, URL segment and key in `/stats`.
    pub table: &'static str,
    /// Singular, for messages.
    pub singular: &'static str,
    /// The resource it is created under, if any.
    pub parent: Option<Parent>,
    /// Client-settable fields.
    pub fields: &'static [Field],
}

const fn field(name: &'static str, ty: Ty) -> Field {
    Field {
        name,
        ty,
        required: false,
        updatable: true,
        nullable: false,
        references: None,
    }
}

const fn required(mut f: Field) -> Field {
    f.required = true;
    f
}

const fn nullable(mut f: Field) -> Field {
    f.nullable = true;
    f
}

const fn fixed(mut f: Field) -> Field {
    f.updatable = false;
    f
}

const fn reference(name: &'static str, table: &'static str) -> Field {
    let mut f = fixed(required(field(name, Ty::Id)));
    f.references = Some(table);
    f
}

/// The longest id, in characters: the `VARCHAR(36)` of every id column (a UUID).
pub const ID_MAX_CHARS: usize = 36;

/// Whether `id` fits an id column, so that looking it up or storing it as a reference
/// is meaningful (a longer one names no row, and an INSERT would refuse it as too
/// long, error 1406, before any foreign key is checked).
pub fn could_be_id(id: &str) -> bool {
    id.chars().count() <= ID_MAX_CHARS
}

const NAME: Ty = Ty::Str {
    max: 128,
    lines: false,
};
const LONG_TEXT: Ty = Ty::Str {
    max: 4096,
    lines: true,
};
/// Generous but bounded: keeps `INT` columns far from overflow.
const COUNT: Ty = Ty::Int {
    min: 0,
    max: 1_000_000,
};

/// `/states`
pub static STATES: Kind = Kind {
    table: "states",
    singular: "state",
    parent: None,
    fields: &[required(field("name", NAME))],
};

/// `/states/{id}/cities`, `/cities/{id}`
pub static CITIES: Kind = Kind {
    table: "cities",
    singular: "city",
    parent: Some(Parent {
        column: "state_id",
        table: "states",
    }),
    fields: &[required(field("name", NAME))],
};

/// `/users`
pub static USERS: Kind = Kind {
    table: "users",
    singular: "user",
    parent: None,
    fields: &[
        // The e-mail is the login: fixed after sign-up, as in HBNB.
        fixed(required(field("email", Ty::Email))),
        required(field("password", Ty::Password)),
        nullable(field("first_name", NAME)),
        nullable(field("last_name", NAME)),
    ],
};

/// `/amenities`
pub static AMENITIES: Kind = Kind {
    table: "amenities",
    singular: "amenity",
    parent: None,
    fields: &[required(field("name", NAME))],
};

/// `/cities/{id}/places`, `/places/{id}`
pub static PLACES: Kind = Kind {
    table: "places",
    singular: "place",
    parent: Some(Parent {
        column: "city_id",
        table: "cities",
    }),
    fields: &[
        reference("user_id", "users"),
        required(field("name", NAME)),
        nullable(field("description", LONG_TEXT)),
        field("number_rooms", COUNT),
        field("number_bathrooms", COUNT),
        field("max_guest", COUNT),
        field("price_by_night", COUNT),
        nullable(field(
            "latitude",
            Ty::Float {
                min: -90.0,
                max: 90.0,
            },
        )),
        nullable(field(
            "longitude",
            Ty::Float {
                min: -180.0,
                max: 180.0,
            },
        )),
    ],
};

/// `/places/{id}/reviews`, `/reviews/{id}`
pub static REVIEWS: Kind = Kind {
    table: "reviews",
    singular: "review",
    parent: Some(Parent {
        column: "place_id",
        table: "places",
    }),
    fields: &[
        reference("user_id", "users"),
        required(field("text", LONG_TEXT)),
    ],
};

/// Every kind, in the order `/stats` lists them.
pub static ALL: [&Kind; 6] = [&AMENITIES, &CITIES, &PLACES, &REVIEWS, &STATES, &USERS];

/// A validated value, ready to bind.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// VARCHAR.
    Str(String),
    /// INT.
    Int(i64),
    /// DOUBLE.
    Float(f64),
    /// NULL.
    Null,
}

/// Whether a body is for a create (required fields enforced) or an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// POST.
    Create,
    /// PUT.
    Update,
}

/// Validates a JSON object against `kind`. Unknown keys (and `id`, `created_at`,
/// `updated_at`, which HBNB clients echo back) are ignored; in [`Mode::Update`] so are
/// non-updatable fields.
pub fn parse_body(
    kind: &'static Kind,
    body: &Map<String, Value>,
    mode: Mode,
) -> Result<Vec<(&'static Field, Val)>, ApiError> {
    let mut out = Vec::new();
    for f in kind.fields {
        if mode == Mode::Update && !f.updatable {
            continue;
        }
        let Some(v) = body.get(f.name) else {
            if mode == Mode::Create && f.required {
                return Err(ApiError::invalid(f.name, format!("Missing {}", f.name)));
            }
            continue;
        };
        out.push((f, parse_value(f, v)?));
    }
    Ok(out)
}

fn parse_value(f: &Field, v: &Value) -> Result<Val, ApiError> {
    let bad = |msg: String| ApiError::invalid(f.name, format!("{}: {msg}", f.name));
    if v.is_null() {
        return if f.nullable {
            Ok(Val::Null)
        } else {
            Err(bad("must not be null".into()))
        };
    }
    match f.ty {
        Ty::Str { max, lines } => Ok(Val::Str(text(v, max, lines).map_err(bad)?)),
        Ty::Id => Ok(Val::Str(text(v, ID_MAX_CHARS, false).map_err(bad)?)),
        Ty::Email => {
            let s = text(v, 128, false).map_err(bad)?;
            let ok = s.split_once('@').is_some_and(|(user, host)| {
                !user.is_empty() && !host.is_empty() && !host.contains('@')
            }) && !s.chars().any(char::is_whitespace);
            if !ok {
                return Err(bad("must be an e-mail address".into()));
            }
            Ok(Val::Str(s))
        }
        Ty::Password => {
            let s = v.as_str().ok_or_else(|| bad("must be a string".into()))?;
            if s.is_empty() || s.chars().count() > 128 {
                return Err(bad("must be 1 to 128 characters".into()));
            }
            Ok(Val::Str(hash_password(s)))
        }
        Ty::Int { min, max } => {
            // `as_i64` is None for 1.5 and for strings, so "3" and 3.0 are refused:
            // a client sending the wrong type has a bug we should tell it about.
            let n = v.as_i64().ok_or_else(|| bad("must be an integer".into()))?;
            if n < min || n > max {
                return Err(bad(format!("must be between {min} and {max}")));
            }
            Ok(Val::Int(n))
        }
        Ty::Float { min, max } => {
            let n = v.as_f64().ok_or_else(|| bad("must be a number".into()))?;
            if !(min..=max).contains(&n) {
                return Err(bad(format!("must be between {min} and {max}")));
            }
            Ok(Val::Float(n))
        }
    }
}

/// A trimmed, non-empty string of at most `max` characters, without control
/// characters (but for tabs and line breaks when `lines`).
fn text(v: &Value, max: usize, lines: bool) -> Result<String, String> {
    let s = v
        .as_str()
        .ok_or_else(|| "must be a string".to_string())?
        .trim();
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().count() > max {
        return Err(format!("must be at most {max} characters"));
    }
    let allowed = |c: char| lines && matches!(c, '\t' | '\n' | '\r');
    if let Some(c) = s.chars().find(|c| c.is_control() && !allowed(*c)) {
        let but = if lines {
            " other than tabs and line breaks"
        } else {
            ""
        };
        return Err(format!(
            "must not contain control characters{but} (found U+{:04X})",
            u32::from(c)
        ));
    }
    Ok(s.to_string())
}

/// An optional list of ids (`states`, `cities`, `amenities`, `amenity_ids`), at most
/// `max` long, deduplicated.
pub fn id_list(
    body: &Map<String, Value>,
    key: &'static str,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    let Some(v) = body.get(key) else {
        return Ok(Vec::new());
    };
    if v.is_null() {
        return Ok(Vec::new());
    }
    let items = v
        .as_array()
        .ok_or_else(|| ApiError::invalid(key, format!("{key}: must be a list of ids")))?;
    if items.len() > max {
        return Err(ApiError::invalid(key, format!("{key}: at most {max} ids")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let id = item
            .as_str()
            .ok_or_else(|| ApiError::invalid(key, format!("{key}: must be a list of strings")))?;
        if !out.iter().any(|x| x == id) {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// Salted SHA-256, as `sha256$<salt>$<digest>`. HBNB stored an unsalted MD5; this is
/// better but still not a password KDF (see README limits: use argon2 in production).
pub fn hash_password(password: &str) -> String {
    let salt = uuid::Uuid::new_v4().simple().to_string();
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(password.as_bytes())
        .finalize();
    format!("sha256${salt}${}", hex(&digest))
}

/// Whether `password` matches a hash made by [`hash_password`].
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.splitn(3, '$');
    let (Some("sha256"), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let got = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update(password.as_bytes())
        .finalize();
    hex(&got) == digest
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn create_requires_required_fields_and_names_them() {
        let err = parse_body(&PLACES, &obj(json!({"user_id": "u"})), Mode::Create).unwrap_err();
        assert!(
            matches!(err, ApiError::Invalid { ref field, .. } if field == "name"),
            "{err:?}"
        );
    }

    #[test]
    fn wrong_types_are_refused() {
        for (k, v) in [
            ("number_rooms", json!("3")),
            ("number_rooms", json!(1.5)),
            ("number_rooms", json!(-1)),
            ("latitude", json!(91)),
            ("name", json!(5)),
            ("name", json!("   ")),
            ("name", json!(null)),
        ] {
            let mut b = obj(json!({"user_id": "u", "name": "n"}));
            b.insert(k.into(), v.clone());
            let err = parse_body(&PLACES, &b, Mode::Create).unwrap_err();
            assert!(
                matches!(err, ApiError::Invalid { ref field, .. } if field == k),
                "{k}={v}: {err:?}"
            );
        }
    }

    #[test]
    fn control_characters_are_refused_but_line_breaks_in_free_text() {
        for (kind, body, field) in [
            (&STATES, json!({"name": "A\u{0}B"}), "name"),
            (&STATES, json!({"name": "A\u{1b}[31mB"}), "name"),
            (&STATES, json!({"name": "A\nB"}), "name"),
            (&STATES, json!({"name": "A\u{7f}B"}), "name"),
            (&STATES, json!({"name": "A\u{85}B"}), "name"),
            (
                &USERS,
                json!({"email": "a\u{0}@b", "password": "p"}),
                "email",
            ),
            (
                &USERS,
                json!({"email": "a@b", "password": "p", "last_name": "\u{8}x"}),
                "last_name",
            ),
            (
                &PLACES,
                json!({"user_id": "u", "name": "n", "description": "a\u{0}b"}),
                "description",
            ),
            (
                &PLACES,
                json!({"user_id": "u\u{0}", "name": "n"}),
                "user_id",
            ),
            (
                &REVIEWS,
                json!({"user_id": "u", "text": "bell\u{7}"}),
                "text",
            ),
        ] {
            let err = parse_body(kind, &obj(body.clone()), Mode::Create).unwrap_err();
            assert!(
                matches!(err, ApiError::Invalid { field: ref f, ref message } if f == field && message.contains("control characters")),
                "{body}: {err:?}"
            );
        }
        let got = parse_body(
            &REVIEWS,
            &obj(json!({"user_id": "u", "text": "Line one,\r\n\tline two.\nÉté 😀"})),
            Mode::Create,
        )
        .unwrap();
        assert_eq!(
            got[1].1,
            Val::Str("Line one,\r\n\tline two.\nÉté 😀".into())
        );
    }

    #[test]
    fn ids_longer_than_the_column_are_no_ids() {
        assert!(could_be_id("00000000-0000-4000-8000-000000000002"));
        assert!(could_be_id(&"é".repeat(36)), "characters, not bytes");
        assert!(!could_be_id(&"a".repeat(37)));
        assert!(!could_be_id(&"é".repeat(37)));
    }

    #[test]
    fn update_ignores_fixed_and_unknown_fields() {
        let got = parse_body(
            &USERS,
            &obj(json!({"email": "x@y", "id": "zzz", "first_name": "Ann", "extra": 1})),
            Mode::Update,
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.name, "first_name");
    }

    #[test]
    fn passwords_are_hashed_and_verifiable() {
        let h = hash_password("pw");
        assert!(h.starts_with("sha256$") && !h.contains("pw$"));
        assert!(verify_password("pw", &h));
        assert!(!verify_password("pW", &h));
    }

    #[test]
    fn email_shape() {
        for bad in ["", "a", "@b", "a@", "a b@c", "a@b@c"] {
            let err = parse_body(
                &USERS,
                &obj(json!({"email": bad, "password": "p"})),
                Mode::Create,
            );
            assert!(err.is_err(), "{bad:?} accepted");
        }
    }
}

//! `app-tier seed`: a small, fixed sample data set for the demo (3 states, 5 cities,
//! 3 users, 4 amenities, 4 places, 4 reviews).
//!
//! Ids are fixed, and every insert is `ON DUPLICATE KEY UPDATE id = id`, so seeding
//! twice changes nothing; all of it runs in one transaction, so a half-seeded database
//! cannot happen.

use sqlx::MySqlPool;

use crate::model::hash_password;

/// How many rows the seed inserted, all tables together (0 on a second run).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SeedReport {
    /// Rows newly inserted.
    pub inserted: u64,
}

const STATES: &[(&str, &str)] = &[
    ("00000000-0000-4000-8000-000000000001", "California"),
    ("00000000-0000-4000-8000-000000000002", "Arizona"),
    ("00000000-0000-4000-8000-000000000003", "Nevada"),
];

const CITIES: &[(&str, &str, &str)] = &[
    (
        "00000000-0000-4000-8000-000000000101",
        "00000000-0000-4000-8000-000000000001",
        "San Francisco",
    ),
    (
        "00000000-0000-4000-8000-000000000102",
        "00000000-0000-4000-8000-000000000001",
        "San Jose",
    ),
    (
        "00000000-0000-4000-8000-000000000103",
        "00000000-0000-4000-8000-000000000002",
        "Phoenix",
    ),
    (
        "00000000-0000-4000-8000-000000000104",
        "00000000-0000-4000-8000-000000000002",
        "Tempe",
    ),
    (
        "00000000-0000-4000-8000-000000000105",
        "00000000-0000-4000-8000-000000000003",
        "Las Vegas",
    ),
];

const USERS: &[(&str, &str, &str, &str)] = &[
    (
        "00000000-0000-4000-8000-000000000201",
        "ada@example.com",
        "Ada",
        "Lovelace",
    ),
    (
        "00000000-0000-4000-8000-000000000202",
        "grace@example.com",
        "Grace",
        "Hopper",
    ),
    (
        "00000000-0000-4000-8000-000000000203",
        "alan@example.com",
        "Alan",
        "Turing",
    ),
];

const AMENITIES: &[(&str, &str)] = &[
    ("00000000-0000-4000-8000-000000000301", "Wifi"),
    ("00000000-0000-4000-8000-000000000302", "Pool"),
    ("00000000-0000-4000-8000-000000000303", "Kitchen"),
    ("00000000-0000-4000-8000-000000000304", "Free parking"),
];

/// (id, city, owner, name, description, rooms, baths, guests, price, lat, lon)
type PlaceRow = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i32,
    i32,
    i32,
    i32,
    f64,
    f64,
);

const PLACES: &[PlaceRow] = &[
    (
        "00000000-0000-4000-8000-000000000401",
        "00000000-0000-4000-8000-000000000101",
        "00000000-0000-4000-8000-000000000201",
        "Loft in SoMa",
        "Bright loft near the ballpark.",
        1,
        1,
        2,
        180,
        37.778,
        -122.39,
    ),
    (
        "00000000-0000-4000-8000-000000000402",
        "00000000-0000-4000-8000-000000000102",
        "00000000-0000-4000-8000-000000000202",
        "Garden cottage",
        "Quiet cottage with a lemon tree.",
        2,
        1,
        4,
        120,
        37.33,
        -121.89,
    ),
    (
        "00000000-0000-4000-8000-000000000403",
        "00000000-0000-4000-8000-000000000103",
        "00000000-0000-4000-8000-000000000202",
        "Desert house",
        "Pool, sun and saguaros.",
        3,
        2,
        6,
        150,
        33.45,
        -112.07,
    ),
    (
        "00000000-0000-4000-8000-000000000404",
        "00000000-0000-4000-8000-000000000105",
        "00000000-0000-4000-8000-000000000203",
        "Strip view suite",
        "Twenty floors up.",
        1,
        1,
        2,
        240,
        36.11,
        -115.17,
    ),
];

const LINKS: &[(&str, &str)] = &[
    (
        "00000000-0000-4000-8000-000000000401",
        "00000000-0000-4000-8000-000000000301",
    ),
    (
        "00000000-0000-4000-8000-000000000401",
        "00000000-0000-4000-8000-000000000303",
    ),
    (
        "00000000-0000-4000-8000-000000000402",
        "00000000-0000-4000-8000-000000000301",
    ),
    (
        "00000000-0000-4000-8000-000000000402",
        "00000000-0000-4000-8000-000000000304",
    ),
    (
        "00000000-0000-4000-8000-000000000403",
        "00000000-0000-4000-8000-000000000302",
    ),
    (
        "00000000-0000-4000-8000-000000000403",
        "00000000-0000-4000-8000-000000000304",
    ),
    (
        "00000000-0000-4000-8000-000000000404",
        "00000000-0000-4000-8000-000000000301",
    ),
];

const REVIEWS: &[(&str, &str, &str, &str)] = &[
    (
        "00000000-0000-4000-8000-000000000501",
        "00000000-0000-4000-8000-000000000401",
        "00000000-0000-4000-8000-000000000202",
        "Great light, great coffee nearby.",
    ),
    (
        "00000000-0000-4000-8000-000000000502",
        "00000000-0000-4000-8000-000000000401",
        "00000000-0000-4000-8000-000000000203",
        "Noisy on game nights.",
    ),
    (
        "00000000-0000-4000-8000-000000000503",
        "00000000-0000-4000-8000-000000000403",
        "00000000-0000-4000-8000-000000000201",
        "The pool saved us in July.",
    ),
    (
        "00000000-0000-4000-8000-000000000504",
        "00000000-0000-4000-8000-000000000404",
        "00000000-0000-4000-8000-000000000202",
        "Worth it for the view.",
    ),
];

/// The password every seeded user has (it is a demo).
pub const DEMO_PASSWORD: &str = "hbnb-demo";

/// Inserts the sample data set (idempotent; one transaction).
pub async fn seed(pool: &MySqlPool) -> Result<SeedReport, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Affected-row counts of ON DUPLICATE KEY UPDATE depend on the client's found-rows
    // flag, so the report compares row counts instead.
    let before = total_rows(&mut tx).await?;
    for (id, name) in STATES {
        sqlx::query("INSERT INTO states (id, name) VALUES (?, ?) ON DUPLICATE KEY UPDATE id = id")
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    for (id, state, name) in CITIES {
        sqlx::query("INSERT INTO cities (id, state_id, name) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE id = id")
            .bind(id).bind(state).bind(name).execute(&mut *tx).await?;
    }
    for (id, email, first, last) in USERS {
        sqlx::query(
            "INSERT INTO users (id, email, password, first_name, last_name) VALUES (?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE id = id",
        )
        .bind(id)
        .bind(email)
        .bind(hash_password(DEMO_PASSWORD))
        .bind(first)
        .bind(last)
        .execute(&mut *tx)
        .await?;
    }
    for (id, name) in AMENITIES {
        sqlx::query(
            "INSERT INTO amenities (id, name) VALUES (?, ?) ON DUPLICATE KEY UPDATE id = id",
        )
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    }
    for (id, city, user, name, desc, rooms, baths, guests, price, lat, lon) in PLACES {
        sqlx::query(
            "INSERT INTO places (id, city_id, user_id, name, description, number_rooms, number_bathrooms, \
             max_guest, price_by_night, latitude, longitude) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE id = id",
        )
        .bind(id).bind(city).bind(user).bind(name).bind(desc).bind(rooms).bind(baths)
        .bind(guests).bind(price).bind(lat).bind(lon)
        .execute(&mut *tx).await?;
    }
    for (place, amenity) in LINKS {
        sqlx::query(
            "INSERT INTO place_amenity (place_id, amenity_id) VALUES (?, ?) ON DUPLICATE KEY UPDATE place_id = place_id",
        )
        .bind(place).bind(amenity).execute(&mut *tx).await?;
    }
    for (id, place, user, text) in REVIEWS {
        sqlx::query(
            "INSERT INTO reviews (id, place_id, user_id, text) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE id = id",
        )
        .bind(id).bind(place).bind(user).bind(text).execute(&mut *tx).await?;
    }
    let after = total_rows(&mut tx).await?;
    tx.commit().await?;
    Ok(SeedReport {
        inserted: after.saturating_sub(before),
    })
}

async fn total_rows(conn: &mut sqlx::MySqlConnection) -> Result<u64, sqlx::Error> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM states) + (SELECT COUNT(*) FROM cities) + (SELECT COUNT(*) FROM users) \
         + (SELECT COUNT(*) FROM amenities) + (SELECT COUNT(*) FROM places) + (SELECT COUNT(*) FROM place_amenity) \
         + (SELECT COUNT(*) FROM reviews)",
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

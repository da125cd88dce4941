//! `GET /hbnb`: the one server-rendered page, HBNB's "places with filters" screen.
//!
//! Filters come from the query string as repeated keys (`?states=ID&amenities=ID`, what
//! a plain HTML form with checkboxes submits), so the page works without JavaScript.
//! Its stylesheets and images are static files under `app-tier/static/`, served by the
//! web tier at `/static/...`; this tier never serves them. Every value from the database
//! is HTML-escaped.

use std::fmt::Write as _;

use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use crate::error::ApiError;
use crate::model::{AMENITIES, CITIES, STATES, USERS};
use crate::record::Record;
use crate::server::AppState;
use crate::store::{self, Page, Search};

/// How many places the page shows at most.
const PAGE_SIZE: u64 = 100;

/// The handler.
pub async fn hbnb(
    State(s): State<AppState>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let mut search = Search::default();
    for (k, v) in pairs {
        let list = match k.as_str() {
            "states" => &mut search.states,
            "cities" => &mut search.cities,
            "amenities" => &mut search.amenities,
            _ => continue,
        };
        if list.len() >= 1000 {
            return Err(ApiError::invalid(k, "too many filter values"));
        }
        list.push(v);
    }
    let all = Page {
        page: 1,
        per_page: Page::MAX_PER_PAGE,
    };
    let mut session = s.db.session();
    let mut conn = session.read().await?;
    let values = |records: Vec<Record>| {
        records
            .into_iter()
            .map(Record::into_value)
            .collect::<Result<Vec<Value>, _>>()
    };
    let states = values(store::list(&mut conn, &STATES, None, all).await?.0)?;
    let cities = values(store::list(&mut conn, &CITIES, None, all).await?.0)?;
    let amenities = values(store::list(&mut conn, &AMENITIES, None, all).await?.0)?;
    let (places, total) = store::search_places(
        &mut conn,
        &search,
        Page {
            page: 1,
            per_page: PAGE_SIZE,
        },
    )
    .await?;
    let places = values(places)?;
    let mut owners = Vec::with_capacity(places.len());
    for p in &places {
        let owner = match p["user_id"].as_str() {
            Some(uid) => store::get(&mut conn, &USERS, uid)
                .await?
                .map(Record::into_value)
                .transpose()?,
            None => None,
        };
        owners.push(owner);
    }
    let html = render(
        &search, &states, &cities, &amenities, &places, &owners, total,
    );
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response())
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn render(
    search: &Search,
    states: &[Value],
    cities: &[Value],
    amenities: &[Value],
    places: &[Value],
    owners: &[Option<Value>],
    total: u64,
) -> String {
    let checked = |list: &[String], id: &str| {
        if list.iter().any(|x| x == id) {
            " checked"
        } else {
            ""
        }
    };
    let mut h = String::with_capacity(16 * 1024);
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        "<title>HBnB</title>\n",
        "<link rel=\"stylesheet\" href=\"/static/styles/4-common.css\">\n",
        "<link rel=\"stylesheet\" href=\"/static/styles/3-header.css\">\n",
        "<link rel=\"stylesheet\" href=\"/static/styles/3-footer.css\">\n",
        "<link rel=\"stylesheet\" href=\"/static/styles/6-filters.css\">\n",
        "<link rel=\"stylesheet\" href=\"/static/styles/8-places.css\">\n",
        "<link rel=\"icon\" href=\"/static/images/icon.png\">\n",
        "</head>\n<body>\n<header><img class=\"logo\" src=\"/static/images/logo.png\" alt=\"HBnB\"></header>\n",
        "<div class=\"container\">\n<form class=\"filters\" method=\"get\" action=\"/hbnb\">\n",
        "<section class=\"locations\"><h3>States / Cities</h3><ul class=\"popover\">\n",
    ));
    for st in states {
        let sid = s(st, "id");
        let _ = writeln!(
            h,
            "<li><label><input type=\"checkbox\" name=\"states\" value=\"{}\"{}> <strong>{}</strong></label><ul>",
            esc(sid),
            checked(&search.states, sid),
            esc(s(st, "name"))
        );
        for c in cities.iter().filter(|c| s(c, "state_id") == sid) {
            let cid = s(c, "id");
            let _ = writeln!(
                h,
                "<li><label><input type=\"checkbox\" name=\"cities\" value=\"{}\"{}> {}</label></li>",
                esc(cid),
                checked(&search.cities, cid),
                esc(s(c, "name"))
            );
        }
        h.push_str("</ul></li>\n");
    }
    h.push_str(
        "</ul></section>\n<section class=\"amenities\"><h3>Amenities</h3><ul class=\"popover\">\n",
    );
    for a in amenities {
        let aid = s(a, "id");
        let _ = writeln!(
            h,
            "<li><label><input type=\"checkbox\" name=\"amenities\" value=\"{}\"{}> {}</label></li>",
            esc(aid),
            checked(&search.amenities, aid),
            esc(s(a, "name"))
        );
    }
    h.push_str("</ul></section>\n<button type=\"submit\">Search</button>\n</form>\n");
    let _ = write!(h, "<section class=\"places\">\n<h1>Places ({total})</h1>\n");
    for (p, owner) in places.iter().zip(owners) {
        let _ = write!(
            h,
            "<article class=\"place\" data-id=\"{}\">\n<div class=\"title_box\"><h2>{}</h2>\
             <div class=\"price_by_night\">${}</div></div>\n<div class=\"information\">\
             <div class=\"max_guest\">{} Guests</div><div class=\"number_rooms\">{} Bedrooms</div>\
             <div class=\"number_bathrooms\">{} Bathrooms</div></div>\n",
            esc(s(p, "id")),
            esc(s(p, "name")),
            p["price_by_night"],
            p["max_guest"],
            p["number_rooms"],
            p["number_bathrooms"],
        );
        if let Some(o) = owner {
            let _ = writeln!(
                h,
                "<div class=\"user\"><b>Owner:</b> {} {}</div>",
                esc(s(o, "first_name")),
                esc(s(o, "last_name"))
            );
        }
        let _ = write!(
            h,
            "<div class=\"description\">{}</div>\n</article>\n",
            esc(s(p, "description"))
        );
    }
    h.push_str("</section>\n</div>\n<footer>Holberton School</footer>\n</body>\n</html>\n");
    h
}

/// Escapes text for HTML element content and double-quoted attributes. Control
/// characters other than tab and line breaks, which HTML does not allow in a document
/// (a NUL is a parse error), become U+FFFD: the API refuses them in new text, but rows
/// written before that, or by hand, may hold them.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() => out.push(char::REPLACEMENT_CHARACTER),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
        );
    }

    #[test]
    fn control_characters_never_reach_the_page() {
        assert_eq!(esc("a\u{0}b\u{1b}c\u{85}d"), "a\u{fffd}b\u{fffd}c\u{fffd}d");
        assert_eq!(esc("line\r\n\tnext"), "line\r\n\tnext");
    }

    #[test]
    fn renders_places_with_escaped_names_and_static_links() {
        let place = json!({"id": "p1", "name": "<b>Loft</b>", "price_by_night": 80, "max_guest": 2,
                           "number_rooms": 1, "number_bathrooms": 1, "description": null, "user_id": "u"});
        let html = render(&Search::default(), &[], &[], &[], &[place], &[None], 1);
        assert!(html.contains("&lt;b&gt;Loft&lt;/b&gt;"));
        assert!(!html.contains("<b>Loft"));
        assert!(html.contains("href=\"/static/styles/4-common.css\""));
        assert!(html.contains("src=\"/static/images/logo.png\""));
    }
}

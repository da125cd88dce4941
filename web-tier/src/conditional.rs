//! Pure HTTP semantics for static responses: conditional requests (RFC 9110 §13),
//! range requests (RFC 9110 §14) and content-coding negotiation (§12.5.3), plus the
//! list syntax of header fields (§5.6.1), which the proxy reads too.
//!
//! Kept free of I/O so the whole matrix is unit-tested here; the static handler only
//! feeds in the request headers and the representation's validators.

use std::borrow::Cow;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, Method, header};

/// The validators of the selected representation.
pub struct Validators<'a> {
    /// Full entity-tag, quotes included, `W/` prefix if weak.
    pub etag: &'a str,
    /// Modification time.
    pub last_modified: SystemTime,
}

/// Outcome of evaluating preconditions, in RFC 9110 §13.2.2 order.
#[derive(Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Serve the representation (possibly a range of it).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

/// One entity-tag from a list: (weak, opaque-tag with quotes).
fn parse_etags(list: &str) -> Option<Vec<(bool, &str)>> {
    let mut out = Vec::new();
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t', ',']);
        if rest.is_empty() {
            return Some(out);
        }
        let weak = if let Some(r) = rest.strip_prefix("W/") {
            rest = r;
            true
        } else {
            false
        };
        if !rest.starts_with('"') {
            return None;
        }
        let end = rest[1..].find('"')? + 2;
        out.push((weak, &rest[..end]));
        rest = &rest[end..];
    }
}

fn split_tag(tag: &str) -> (bool, &str) {
    match tag.strip_prefix("W/") {
        Some(t) => (true, t),
        None => (false, tag),
    }
}

/// Does an `If-Match` / `If-None-Match` value match our tag? `*` matches any existing
/// representation. Strong comparison requires both tags strong.
fn list_matches(list: &str, ours: &str, strong: bool) -> bool {
    if list.trim() == "*" {
        return true;
    }
    let (our_weak, our_opaque) = split_tag(ours);
    let Some(tags) = parse_etags(list) else {
        return false;
    };
    tags.iter()
        .any(|&(weak, opaque)| opaque == our_opaque && (!strong || (!weak && !our_weak)))
}

/// Seconds since the epoch, the precision of an HTTP-date.
fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs()
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// A list-valued field whole: several lines of it are one list (RFC 9110 §5.3), joined
/// here only when there are several. A line with bytes beyond visible ASCII (obs-text,
/// which an entity-tag may hold) is kept, lossily: such a tag never equals ours, but the
/// field is still there, so `If-Match` fails and `If-None-Match` still overrides
/// `If-Modified-Since`, as they would were the field read as sent.
fn header_list(h: &HeaderMap, name: header::HeaderName) -> Option<Cow<'_, str>> {
    // Absent, the usual case, after one lookup.
    h.get(&name)?;
    let mut lines = h
        .get_all(name)
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()));
    let first = lines.next()?;
    match lines.next() {
        None => Some(first),
        Some(second) => {
            let mut all = format!("{first}, {second}");
            for line in lines {
                all.push_str(", ");
                all.push_str(&line);
            }
            Some(Cow::Owned(all))
        }
    }
}

fn header_date(h: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    header_str(h, name)
        .and_then(|s| httpdate::parse_http_date(s).ok())
        .map(secs)
}

/// Evaluates If-Match, If-Unmodified-Since, If-None-Match and If-Modified-Since.
pub fn evaluate(method: &Method, h: &HeaderMap, v: &Validators<'_>) -> Precondition {
    let lm = secs(v.last_modified);
    // Step 1/2: If-Match, else If-Unmodified-Since; a failure is 412 for any method.
    if let Some(im) = header_list(h, header::IF_MATCH) {
        if !list_matches(&im, v.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(ius) = header_date(h, header::IF_UNMODIFIED_SINCE)
        && lm > ius
    {
        return Precondition::Failed;
    }
    let safe = method == Method::GET || method == Method::HEAD;
    // Step 3/4: If-None-Match (weak comparison), else If-Modified-Since (GET/HEAD only;
    // an unparsable date is ignored, as §13.1.3 requires).
    if let Some(inm) = header_list(h, header::IF_NONE_MATCH) {
        if list_matches(&inm, v.etag, false) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if safe
        && let Some(ims) = header_date(h, header::IF_MODIFIED_SINCE)
        && lm <= ims
    {
        return Precondition::NotModified;
    }
    Precondition::Proceed
}

/// Should a `Range` header be honoured? `If-Range` with an entity-tag needs a strong
/// match; with a date it needs the exact Last-Modified. Otherwise the client's copy is
/// stale and it gets the full 200, which is the point of If-Range.
pub fn if_range_allows(h: &HeaderMap, v: &Validators<'_>) -> bool {
    let Some(raw) = h.get(header::IF_RANGE) else {
        return true;
    };
    let Ok(s) = raw.to_str() else {
        return false;
    };
    let s = s.trim();
    if s.starts_with('"') || s.starts_with("W/") {
        let (their_weak, theirs) = split_tag(s);
        let (our_weak, ours) = split_tag(v.etag);
        !their_weak && !our_weak && theirs == ours
    } else {
        match httpdate::parse_http_date(s) {
            Ok(d) => secs(d) == secs(v.last_modified),
            Err(_) => false,
        }
    }
}

/// What a `Range` header asks for, against a representation of a known length.
#[derive(Debug, PartialEq, Eq)]
pub enum Ranges {
    /// Ignore the header and send everything (absent, unknown unit, bad syntax, or too
    /// many ranges to be worth honouring).
    Ignore,
    /// 416: no range overlaps the representation.
    Unsatisfiable,
    /// 206 with these half-open byte ranges, in the order to send them.
    Satisfiable(Vec<Range<u64>>),
}

/// More ranges than this and the header is ignored: a request for thousands of tiny
/// ranges is an amplification attack, not a download manager (RFC 9110 §14.2 allows it).
const MAX_RANGES: usize = 64;

/// Parses `bytes=a-b, c-, -n`. Overlapping or adjacent ranges are merged (after sorting)
/// so a client cannot make us send the same bytes many times; otherwise the client's
/// order is kept.
///
/// An empty representation has no byte to send, so the header is ignored and the client
/// gets the (empty) 200, as from nginx, rather than a 416 for a `bytes=0-` probe (RFC
/// 9110 §14.2 lets a server ignore Range).
pub fn parse_range(header: &str, len: u64) -> Ranges {
    let Some((unit, set)) = header.split_once('=') else {
        return Ranges::Ignore;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || len == 0 {
        return Ranges::Ignore;
    }
    // A numeral too large for u64 is still a valid position (RFC 9110 §14.1.1 asks
    // recipients to expect them): past the end of any file, so it saturates. A huge
    // first-pos is then unsatisfiable (416, as nginx), a huge last-pos or suffix-length
    // reaches the end of the representation (§14.1.2; nginx answers 416 there too,
    // which the RFC does not allow for a range that starts inside it).
    let pos = |s: &str| s.parse::<u64>().unwrap_or(u64::MAX);
    let mut out = Vec::new();
    let mut specs = 0;
    for spec in set.split(',') {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        specs += 1;
        if specs > MAX_RANGES {
            return Ranges::Ignore;
        }
        let Some((first, last)) = spec.split_once('-') else {
            return Ranges::Ignore;
        };
        let (first, last) = (first.trim(), last.trim());
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if first.is_empty() {
            // Suffix range: the last N bytes.
            if !digits(last) {
                return Ranges::Ignore;
            }
            let n = pos(last);
            if n > 0 {
                out.push(len.saturating_sub(n)..len);
            }
            continue;
        }
        if !digits(first) || !(last.is_empty() || digits(last)) {
            return Ranges::Ignore;
        }
        let start = pos(first);
        let end = if last.is_empty() {
            u64::MAX
        } else {
            match pos(last) {
                e if e >= start => e,
                // last < first makes the whole header invalid (§14.1.1).
                _ => return Ranges::Ignore,
            }
        };
        if start < len {
            out.push(start..end.min(len - 1) + 1);
        }
    }
    if specs == 0 {
        return Ranges::Ignore;
    }
    if out.is_empty() {
        return Ranges::Unsatisfiable;
    }
    let mut sorted = out.clone();
    sorted.sort_by_key(|r| r.start);
    if sorted.windows(2).any(|w| w[1].start <= w[0].end) {
        let mut merged: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
        for r in sorted {
            match merged.last_mut() {
                Some(m) if r.start <= m.end => m.end = m.end.max(r.end),
                _ => merged.push(r),
            }
        }
        out = merged;
    }
    Ranges::Satisfiable(out)
}

/// The items of a comma-separated list field (RFC 9110 §5.6.1), across all its lines:
/// trimmed, empty ones left out, lines that are not visible ASCII skipped.
pub fn list_items(h: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    h.get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Does `Accept-Encoding` allow `coding` (q > 0, explicitly or through `*`)?
pub fn accepts_encoding(h: &HeaderMap, coding: &str) -> bool {
    let mut star = None;
    for item in list_items(h, header::ACCEPT_ENCODING) {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .filter_map(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .or_else(|| p.trim().strip_prefix("Q="))
            })
            .map(|q| q.trim().parse::<f32>().unwrap_or(0.0))
            .next()
            .unwrap_or(1.0);
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            star = Some(q > 0.0);
        }
    }
    star.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hdrs(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const LM: u64 = 1_700_000_000;

    fn v(etag: &str) -> Validators<'_> {
        Validators {
            etag,
            last_modified: SystemTime::UNIX_EPOCH + Duration::from_secs(LM),
        }
    }

    fn date(s: u64) -> String {
        httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(s))
    }

    #[test]
    fn preconditions() {
        use Precondition::*;
        let get = Method::GET;
        let t = "\"abc\"";
        let cases: Vec<(Vec<(&'static str, String)>, Precondition)> = vec![
            (vec![], Proceed),
            (vec![("if-none-match", t.into())], NotModified),
            (vec![("if-none-match", "W/\"abc\"".into())], NotModified),
            (
                vec![("if-none-match", "\"x\", \"abc\"".into())],
                NotModified,
            ),
            (vec![("if-none-match", "*".into())], NotModified),
            (vec![("if-none-match", "\"x\"".into())], Proceed),
            // Several lines are one list: a match on any line counts.
            (
                vec![
                    ("if-none-match", "\"x\"".into()),
                    ("if-none-match", "\"y\", \"abc\"".into()),
                ],
                NotModified,
            ),
            (
                vec![("if-match", "\"x\"".into()), ("if-match", t.into())],
                Proceed,
            ),
            (
                vec![("if-match", "\"x\"".into()), ("if-match", "\"y\"".into())],
                Failed,
            ),
            (vec![("if-match", t.into())], Proceed),
            (vec![("if-match", "W/\"abc\"".into())], Failed),
            (vec![("if-match", "\"x\"".into())], Failed),
            (vec![("if-match", "*".into())], Proceed),
            // A tag with bytes beyond ASCII never matches ours, but the field counts.
            (vec![("if-match", "\"\u{e9}\"".into())], Failed),
            (
                vec![
                    ("if-none-match", "\"\u{e9}\"".into()),
                    ("if-modified-since", date(LM)),
                ],
                Proceed,
            ),
            (vec![("if-modified-since", date(LM))], NotModified),
            (vec![("if-modified-since", date(LM - 1))], Proceed),
            (vec![("if-modified-since", "garbage".into())], Proceed),
            // If-None-Match takes precedence over If-Modified-Since.
            (
                vec![
                    ("if-none-match", "\"x\"".into()),
                    ("if-modified-since", date(LM)),
                ],
                Proceed,
            ),
            (vec![("if-unmodified-since", date(LM - 1))], Failed),
            (vec![("if-unmodified-since", date(LM))], Proceed),
            // If-Match takes precedence over If-Unmodified-Since.
            (
                vec![
                    ("if-match", t.into()),
                    ("if-unmodified-since", date(LM - 1)),
                ],
                Proceed,
            ),
        ];
        for (pairs, want) in cases {
            let pairs: Vec<(&'static str, &str)> =
                pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            assert_eq!(evaluate(&get, &hdrs(&pairs), &v(t)), want, "{pairs:?}");
        }
    }

    #[test]
    fn if_range() {
        let t = "\"abc\"";
        assert!(if_range_allows(&hdrs(&[]), &v(t)));
        assert!(if_range_allows(&hdrs(&[("if-range", t)]), &v(t)));
        assert!(!if_range_allows(&hdrs(&[("if-range", "\"old\"")]), &v(t)));
        assert!(!if_range_allows(&hdrs(&[("if-range", "W/\"abc\"")]), &v(t)));
        assert!(if_range_allows(&hdrs(&[("if-range", &date(LM))]), &v(t)));
        assert!(!if_range_allows(
            &hdrs(&[("if-range", &date(LM - 5))]),
            &v(t)
        ));
    }

    #[test]
    fn ranges() {
        use Ranges::*;
        let sat = |v: Vec<Range<u64>>| Satisfiable(v);
        let one = |r: Range<u64>| Satisfiable(std::iter::once(r).collect());
        assert_eq!(parse_range("bytes=0-9", 100), one(0..10));
        assert_eq!(parse_range("bytes=90-", 100), one(90..100));
        assert_eq!(parse_range("bytes=-10", 100), one(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), one(0..100));
        assert_eq!(parse_range("bytes=95-200", 100), one(95..100));
        assert_eq!(
            parse_range("bytes=50-59, 0-9", 100),
            sat(vec![50..60, 0..10])
        );
        assert_eq!(
            parse_range("bytes=0-9,5-19,30-39", 100),
            sat(vec![0..20, 30..40])
        );
        assert_eq!(parse_range("bytes=0-9,10-19", 100), one(0..20));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        // Nothing to send from an empty file: the header is ignored (nginx's 200).
        assert_eq!(parse_range("bytes=0-0", 0), Ignore);
        assert_eq!(parse_range("bytes=0-", 0), Ignore);
        assert_eq!(parse_range("bytes=-5", 0), Ignore);
        // Numerals beyond u64: a valid header, positions past any end.
        let huge = "99999999999999999999999";
        assert_eq!(parse_range(&format!("bytes={huge}-"), 100), Unsatisfiable);
        assert_eq!(parse_range(&format!("bytes=0-{huge}"), 100), one(0..100));
        assert_eq!(parse_range(&format!("bytes=-{huge}"), 100), one(0..100));
        assert_eq!(parse_range(&format!("bytes={huge}-5"), 100), Ignore);
        assert_eq!(
            parse_range("bytes=18446744073709551615-", 100),
            Unsatisfiable
        );
        assert_eq!(parse_range("bytes=200-300, 0-1", 100), one(0..2));
        assert_eq!(parse_range("bytes=9-0", 100), Ignore);
        assert_eq!(parse_range("bytes=a-b", 100), Ignore);
        assert_eq!(parse_range("items=0-1", 100), Ignore);
        assert_eq!(parse_range("bytes=", 100), Ignore);
        assert_eq!(parse_range("bytes=0-1", 100), one(0..2));
        let many = format!("bytes={}", vec!["0-0"; 65].join(","));
        assert_eq!(parse_range(&many, 100), Ignore);
    }

    #[test]
    fn accept_encoding() {
        let h = hdrs(&[("accept-encoding", "gzip;q=0.5, br;q=0")]);
        assert!(accepts_encoding(&h, "gzip"));
        assert!(!accepts_encoding(&h, "br"));
        assert!(accepts_encoding(&hdrs(&[("accept-encoding", "*")]), "br"));
        assert!(!accepts_encoding(
            &hdrs(&[("accept-encoding", "gzip, *;q=0")]),
            "br"
        ));
        assert!(!accepts_encoding(&hdrs(&[]), "gzip"));
    }
}

//! Fuzz targets for the server's parsers of network input (tests only; docs/FUZZING.md). Each
//! feeds random bytes, and inputs built from the pieces the parser looks for, and asserts it
//! answers without panicking, and within its own rules. `PROPTEST_CASES` sets how many inputs.

use proptest::prelude::*;

use crate::http::Query;
use crate::protocol::{validate_payload, validate_topic};

/// Random bytes, up to `max` of them.
pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

/// Inputs made of `pieces`, up to `max` of them: these reach deeper than random bytes do.
pub(crate) fn built(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(pieces), 0..max)
        .prop_map(|v| v.concat().into_bytes())
}

/// Random bytes or built ones, half and half.
pub(crate) fn input(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![bytes(max), built(pieces, max / 4 + 1)]
}

const QUERY: &[&str] = &[
    "topic",
    "after",
    "timeout_ms",
    "latest",
    "=",
    "&",
    "%",
    "%2",
    "%20",
    "+",
    "0",
    "1",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "true",
    "false",
    "a",
    "_=1",
    "é",
    "\0",
    "0000beef-",
    "-",
];
const HEAD: &[&str] = &[
    "GET ",
    "POST ",
    "/sse",
    "/stream",
    "/ws",
    "/longpoll",
    "?topic=a",
    "&after=1",
    " HTTP/1.1",
    " HTTP/1.0",
    "\r\n",
    "\n",
    "Host: a",
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Last-Event-ID: 5",
    "Content-Length: 3",
    "Transfer-Encoding: chunked",
    ": ",
    "\r\n\r\n",
    "x",
];
const CURSOR: &[&str] = &[
    "0",
    "1",
    "9",
    " ",
    "\t",
    "-",
    "+",
    "18446744073709551615",
    "99999999999999999999",
    "x",
    "é",
    "a",
    "f",
    "0000beef",
    "0000beef-",
];

proptest! {
    #[test]
    fn fuzz_query(q in input(QUERY, 256)) {
        // The topic is checked where it is used (the hub), not here.
        let q = String::from_utf8_lossy(&q);
        let _ = Query::parse(Some(&q));
    }

    #[test]
    fn fuzz_topic(t in input(QUERY, 200)) {
        let t = String::from_utf8_lossy(&t);
        if validate_topic(&t).is_ok() {
            prop_assert!(!t.is_empty() && t.len() <= 128, "{t:?}");
        }
    }

    #[test]
    fn fuzz_last_event_id(v in input(CURSOR, 64), after in any::<Option<u64>>()) {
        let after = after.map(crate::protocol::Cursor::bare);
        if let Ok(cursor) = crate::transport::sse::resume_cursor(Some(&v), after) {
            // What parses prints as a cursor that parses back to itself.
            let cursor = cursor.unwrap();
            prop_assert_eq!(cursor.to_string().parse::<crate::protocol::Cursor>(), Ok(cursor));
        }
        prop_assert_eq!(crate::transport::sse::resume_cursor(None, after), Ok(after));
    }

    #[test]
    fn fuzz_publish_body(body in input(&["a", "é", "\n", "\r", "\0", " ", "\u{feff}", "\u{2028}"], 512)) {
        if let Ok(text) = validate_payload(&body) {
            prop_assert!(!text.is_empty() && !text.contains(['\n', '\r']));
        }
    }

    #[test]
    fn fuzz_request_head(head in input(HEAD, 1024)) {
        if let Some(h) = crate::head::parse(&head) {
            prop_assert!(h.size <= head.len());
        }
    }

    #[test]
    fn fuzz_demo_config(body in input(&["{", "}", "\"rate\"", "\"payload_bytes\"", "\"poll_interval_ms\"", ":", ",", "1", "0", "-1", "1e308", "100.5", "null", "\"x\"", "[", "]"], 256)) {
        let _ = crate::demo::Settings::default().updated(&body);
    }
}

//! Fuzz targets for the gateway's parsers of network input (tests only; docs/FUZZING.md): the
//! send request's JSON, the condition language, TTLs and tokens.

use proptest::prelude::*;

use super::condition::Condition;
use super::message::{parse_ttl, Send};
use super::token;
use crate::fuzz::input;

const SEND: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"message\"",
    "\"token\"",
    "\"topic\"",
    "\"condition\"",
    "\"data\"",
    "\"notification\"",
    "\"title\"",
    "\"body\"",
    "\"android\"",
    "\"ttl\"",
    "\"3.5s\"",
    "\"collapse_key\"",
    "\"priority\"",
    "\"HIGH\"",
    "\"validate_only\"",
    "true",
    "null",
    "1",
    "\"'a' in topics\"",
    "\"/topics/a\"",
    "\"pb:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"",
    "\"x\"",
    "\\u0000",
];
const CONDITION: &[&str] = &[
    "'a' in topics",
    "'b' in topics",
    "\"c\" in topics",
    "&&",
    "||",
    "!",
    "(",
    ")",
    " ",
    "'",
    "in",
    "topics",
    "a",
    "%",
    "~",
];
const TTL: &[&str] = &[
    "0",
    "1",
    ".",
    "5",
    "s",
    "9999999999999999999",
    "-",
    "e",
    "ms",
    " ",
];

proptest! {
    #[test]
    fn fuzz_gateway_send(body in input(SEND, 1024)) {
        if let Ok(send) = Send::parse(&body) {
            if let super::message::Target::Token(t) = &send.target {
                prop_assert!(token::well_formed(t), "{t:?}");
            }
        }
    }

    #[test]
    fn fuzz_gateway_condition(text in input(CONDITION, 256)) {
        let text = String::from_utf8_lossy(&text);
        if let Ok(c) = Condition::parse(&text) {
            // A parsed condition can be evaluated for any set of topics.
            let n = c.topics().len();
            let _ = c.matches(&|i| i % 2 == 0 && i < n);
        }
    }

    #[test]
    fn fuzz_gateway_ttl(text in input(TTL, 64)) {
        let _ = parse_ttl(&String::from_utf8_lossy(&text));
    }

    #[test]
    fn fuzz_gateway_token(text in input(&["pb:", "APA91", "A", "-", "_", "+", "/", "=", " "], 128)) {
        let text = String::from_utf8_lossy(&text);
        prop_assert_eq!(token::well_formed(&text), token::check(&text).is_ok());
    }
}

//! The wire protocol every pushbench server speaks, as constants, small types and the bytes of
//! each item on the wire. The bottom of the workspace: it depends on no other pushbench crate.
//!
//! `docs/PROTOCOL.md` is the normative text; this crate is its single copy in code, shared by the
//! servers (`pushbench-servers`, which encode it) and the reference clients and load generator
//! (`pushbench-loadgen`, which parse it), so the two can never drift apart silently, and the
//! clients need none of the servers' code.
//!
//! # Layout
//! - this file: transports, paths, limits, and the topic and payload validators;
//! - [`epoch`]: a server's life ([`Epoch`]) and the `EPOCH-ID` cursor that survives a restart;
//! - [`frame`]: an event, the hello and the gap signal, encoded in every wire format.
//!
//! What only one side needs stays on that side: the servers' pre-encoded events with their
//! WebSocket frames (`pushbench_servers::event`), the clients' parsers (`pushbench_loadgen`).

use std::fmt;
use std::str::FromStr;

pub mod epoch;
pub mod frame;

pub use epoch::{Cursor, CursorError, Epoch};
pub use frame::{Gap, Hello};

/// Topic used when a request names none.
pub const DEFAULT_TOPIC: &str = "default";
/// Longest accepted topic name, in bytes.
pub const MAX_TOPIC_LEN: usize = 128;
/// Largest accepted publish body (64 KiB). Larger bodies get 413.
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

/// Publish endpoint (`POST`).
pub const PATH_PUBLISH: &str = "/publish";
/// JSON counters (`GET`).
pub const PATH_STATS: &str = "/stats";
/// The same counters in Prometheus text format (`GET`).
pub const PATH_METRICS: &str = "/metrics";

/// SSE `event:` name of the gap signal.
pub const SSE_GAP_EVENT: &str = "gap";
/// SSE `event:` name of the reset signal: the cursor came from another life of the server.
pub const SSE_RESET_EVENT: &str = "reset";

/// One server-push technique. Each has its own subscribe endpoint and its own server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// Short polling: `GET /poll` answers at once.
    Poll,
    /// Long polling: `GET /longpoll` is held until an event exists or a timeout passes.
    LongPoll,
    /// HTTP streaming: `GET /stream`, chunked NDJSON, one line per event.
    Stream,
    /// Server-Sent Events: `GET /sse`, `text/event-stream`.
    Sse,
    /// WebSocket: `GET /ws`, one text frame per event; client text frames are published.
    Ws,
}

impl Transport {
    /// Every transport, in the order reports list them.
    pub const ALL: [Transport; 5] = [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::Ws,
    ];

    /// The short name used on the command line, in JSON and in paths.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Poll => "poll",
            Transport::LongPoll => "longpoll",
            Transport::Stream => "stream",
            Transport::Sse => "sse",
            Transport::Ws => "ws",
        }
    }

    /// The subscribe endpoint's path.
    pub fn path(self) -> &'static str {
        match self {
            Transport::Poll => "/poll",
            Transport::LongPoll => "/longpoll",
            Transport::Stream => "/stream",
            Transport::Sse => "/sse",
            Transport::Ws => "/ws",
        }
    }

    /// Whether one request yields many events over a connection that stays open.
    pub fn is_streaming(self) -> bool {
        matches!(self, Transport::Stream | Transport::Sse | Transport::Ws)
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Transport {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Transport {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// A transport name that is not one of [`Transport::ALL`].
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown transport {0:?} (expected poll, longpoll, stream, sse or ws)")]
pub struct UnknownTransport(pub String);

impl FromStr for Transport {
    type Err = UnknownTransport;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transport::ALL
            .into_iter()
            .find(|t| t.name() == s)
            .ok_or_else(|| UnknownTransport(s.to_owned()))
    }
}

/// Why a topic name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name is empty.
    #[error("topic must not be empty")]
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`].
    #[error("topic is longer than {MAX_TOPIC_LEN} bytes")]
    TooLong,
    /// The name has a character outside `A-Z a-z 0-9 _ - . :`.
    #[error("topic may only contain A-Z, a-z, 0-9, '_', '-', '.' and ':'")]
    BadChar,
}

/// Checks a topic name: 1 to 128 bytes of `A-Z a-z 0-9 _ - . :`.
///
/// The alphabet is deliberately narrow so a topic never needs escaping in a URL, a Prometheus
/// label or a file name.
pub fn validate_topic(topic: &str) -> Result<(), TopicError> {
    if topic.is_empty() {
        return Err(TopicError::Empty);
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
    {
        return Err(TopicError::BadChar);
    }
    Ok(())
}

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// An empty payload: browsers' `EventSource` does not dispatch an SSE event with empty
    /// data, so allowing it would make SSE lose events that other transports deliver.
    #[error("payload must not be empty")]
    Empty,
    /// Longer than [`MAX_PAYLOAD_BYTES`].
    #[error("payload is larger than {MAX_PAYLOAD_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("payload must be UTF-8 text")]
    NotUtf8,
    /// Holds a line break, which would split an NDJSON line or an SSE `data:` field.
    #[error("payload must be one line: it contains a CR or LF byte")]
    LineBreak,
}

/// Checks a payload and returns it as text: one line of non-empty UTF-8, at most 64 KiB.
pub fn validate_payload(body: &[u8]) -> Result<&str, PayloadError> {
    if body.is_empty() {
        return Err(PayloadError::Empty);
    }
    if body.len() > MAX_PAYLOAD_BYTES {
        return Err(PayloadError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| PayloadError::NotUtf8)?;
    if memchr_line_break(body) {
        return Err(PayloadError::LineBreak);
    }
    Ok(text)
}

fn memchr_line_break(body: &[u8]) -> bool {
    body.iter().any(|&b| b == b'\n' || b == b'\r')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names_round_trip() {
        for t in Transport::ALL {
            assert_eq!(t.name().parse::<Transport>().unwrap(), t);
            assert_eq!(t.path(), format!("/{}", t.name()));
        }
        assert!("carrier-pigeon".parse::<Transport>().is_err());
    }

    #[test]
    fn topics() {
        assert!(validate_topic("default").is_ok());
        assert!(validate_topic("a.b:c-d_e9").is_ok());
        assert_eq!(validate_topic(""), Err(TopicError::Empty));
        assert_eq!(validate_topic("a b"), Err(TopicError::BadChar));
        assert_eq!(validate_topic("ü"), Err(TopicError::BadChar));
        assert_eq!(validate_topic(&"x".repeat(129)), Err(TopicError::TooLong));
        assert!(validate_topic(&"x".repeat(128)).is_ok());
    }

    #[test]
    fn payloads() {
        assert_eq!(
            validate_payload(b"hello \"w\" \\ \xc3\xbc"),
            Ok("hello \"w\" \\ ü")
        );
        assert_eq!(validate_payload(b""), Err(PayloadError::Empty));
        assert_eq!(validate_payload(b"a\nb"), Err(PayloadError::LineBreak));
        assert_eq!(validate_payload(b"a\rb"), Err(PayloadError::LineBreak));
        assert_eq!(validate_payload(b"\xff"), Err(PayloadError::NotUtf8));
        assert_eq!(
            validate_payload(&vec![b'x'; MAX_PAYLOAD_BYTES + 1]),
            Err(PayloadError::TooLarge)
        );
        assert!(validate_payload(&vec![b'x'; MAX_PAYLOAD_BYTES]).is_ok());
    }
}

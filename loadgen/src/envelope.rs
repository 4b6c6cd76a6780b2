//! Zero-DOM parsing of the JSON the servers send: event and gap objects, poll batches, publish
//! answers and error bodies.
//!
//! Serde derives over borrowed data: a payload whose JSON string has no escapes comes back as a
//! [`Bytes::slice_ref`] of the received buffer, so the common case neither allocates nor copies.
//! Only an escaped string (`\"`, `\\`, `\u00fc`...) is unescaped into a fresh allocation.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use pushbench_protocol::Epoch;
use pushbench_protocol::Hello;
use serde::de::{Deserializer, Visitor};
use serde::Deserialize;

/// Why a server message could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// Not JSON, or JSON of the wrong shape for its place.
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Valid JSON object that is none of the expected kinds.
    #[error("unexpected message: {0}")]
    Shape(&'static str),
}

/// Ids `from..=to` were lost: older than the replay buffer, or dropped for a slow subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Gap {
    /// First lost id.
    pub from: u64,
    /// Last lost id.
    pub to: u64,
}

/// One published event as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Per-topic id, increasing from 1.
    pub id: u64,
    /// The payload, unescaped.
    pub payload: Bytes,
}

/// One line of an NDJSON stream or one WebSocket text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// `{"id":N,"data":"..."}`.
    Event(Event),
    /// `{"gap":{"from":A,"to":B}}`.
    Gap(Gap),
    /// `{"epoch":"E","after":N}` (with `"reset":true` for a reset): where a subscription
    /// starts, in which life of the server.
    Hello(Hello),
    /// `{"error":"..."}`, e.g. a WebSocket server refusing an upstream frame.
    Error(String),
}

/// A poll or long-poll response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// Events after the requested id, in the order sent.
    pub events: Vec<Event>,
    /// Ids lost before the first event, if any.
    pub gap: Option<Gap>,
    /// The topic's newest id; larger than the last event's id when the batch was truncated.
    pub last_id: u64,
    /// The server's life, when it says (pushbench does; other servers need not).
    pub epoch: Option<Epoch>,
    /// The cursor named another life: the events are that life's from its oldest kept.
    pub reset: bool,
}

/// A JSON string that borrows from the input when it has no escapes.
///
/// Needed because serde only borrows a `Cow<str>` field that is not wrapped in `Option`.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                v: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v))
            }
        }
        d.deserialize_str(V).map(Text)
    }
}

/// Any single message object; which fields are set tells its kind.
#[derive(Deserialize)]
struct RawMessage<'a> {
    id: Option<u64>,
    #[serde(borrow)]
    data: Option<Text<'a>>,
    gap: Option<Gap>,
    #[serde(borrow)]
    error: Option<Text<'a>>,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    after: Option<u64>,
    reset: Option<bool>,
}

#[derive(Deserialize)]
struct RawEvent<'a> {
    id: u64,
    #[serde(borrow)]
    data: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawBatch<'a> {
    #[serde(borrow)]
    events: Vec<RawEvent<'a>>,
    gap: Option<Gap>,
    last_id: u64,
    #[serde(borrow)]
    epoch: Option<Text<'a>>,
    reset: Option<bool>,
}

#[derive(Deserialize)]
struct RawPublished {
    id: u64,
}

#[derive(Deserialize)]
struct RawError<'a> {
    #[serde(borrow)]
    error: Text<'a>,
}

/// One frame the gateway sends a device (docs/GATEWAY.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayFrame {
    /// A message: its id, and the load generator's payload (`data.pb`; empty when the message
    /// carries none, which the load generator counts as foreign).
    Message {
        /// The gateway's message id, which the device acknowledges.
        id: u64,
        /// `data.pb`.
        payload: Bytes,
    },
    /// `{"kind":"deleted_messages","count":N}`: N messages were dropped from a full queue.
    Deleted(u64),
    /// `{"kind":"upstream_ack",...}`: an upstream message was accepted.
    UpstreamAck,
    /// `{"error":"..."}`: a frame of the device's was refused.
    Error(String),
}

#[derive(Deserialize)]
struct RawGatewayFrame<'a> {
    #[serde(borrow)]
    kind: Option<Text<'a>>,
    message_id: Option<serde_json::Value>,
    #[serde(borrow)]
    data: Option<RawGatewayData<'a>>,
    count: Option<u64>,
    #[serde(borrow)]
    error: Option<Text<'a>>,
}

#[derive(Deserialize)]
struct RawGatewayData<'a> {
    #[serde(borrow)]
    pb: Option<Text<'a>>,
}

/// Parses one gateway frame, borrowing `data.pb` from `buf` when it has no escapes.
pub fn parse_gateway_frame(buf: &Bytes) -> Result<GatewayFrame, EnvelopeError> {
    let raw: RawGatewayFrame<'_> = serde_json::from_slice(buf)?;
    if let Some(Text(error)) = raw.error {
        return Ok(GatewayFrame::Error(error.into_owned()));
    }
    match raw.kind.as_ref().map(|k| &*k.0) {
        Some("data" | "notification") => {
            let id = raw
                .message_id
                .and_then(|v| v.as_u64())
                .ok_or(EnvelopeError::Shape(
                    "a message without a numeric message_id",
                ))?;
            let payload = match raw.data.and_then(|d| d.pb) {
                Some(Text(pb)) => payload_bytes(buf, pb),
                None => Bytes::new(),
            };
            Ok(GatewayFrame::Message { id, payload })
        }
        Some("deleted_messages") => Ok(GatewayFrame::Deleted(raw.count.unwrap_or(0))),
        Some("upstream_ack") => Ok(GatewayFrame::UpstreamAck),
        _ => Err(EnvelopeError::Shape(
            "expected a gateway message, deleted_messages, upstream_ack or error",
        )),
    }
}

/// The payload as `Bytes`: a view into `buf` when the string was borrowed from it.
fn payload_bytes(buf: &Bytes, text: Cow<'_, str>) -> Bytes {
    match text {
        Cow::Borrowed(s) => buf.slice_ref(s.as_bytes()),
        Cow::Owned(s) => Bytes::from(s.into_bytes()),
    }
}

/// Parses one event, gap or error object (surrounding whitespace, e.g. the NDJSON `\n`, allowed).
pub fn parse_envelope(buf: &Bytes) -> Result<Envelope, EnvelopeError> {
    if let Some(event) = plain_event(buf) {
        return Ok(Envelope::Event(event));
    }
    let raw: RawMessage<'_> = serde_json::from_slice(buf)?;
    match raw {
        RawMessage {
            gap: Some(gap),
            id: None,
            data: None,
            ..
        } => Ok(Envelope::Gap(gap)),
        RawMessage {
            id: Some(id),
            data: Some(Text(data)),
            gap: None,
            ..
        } => Ok(Envelope::Event(Event {
            id,
            payload: payload_bytes(buf, data),
        })),
        RawMessage {
            epoch: Some(Text(epoch)),
            after: Some(after),
            id: None,
            data: None,
            gap: None,
            error: None,
            reset,
        } => Ok(Envelope::Hello(Hello {
            epoch: parse_epoch(&epoch)?,
            after,
            reset: reset.unwrap_or(false),
        })),
        RawMessage {
            error: Some(Text(error)),
            id: None,
            data: None,
            gap: None,
            epoch: None,
            ..
        } => Ok(Envelope::Error(error.into_owned())),
        _ => Err(EnvelopeError::Shape(
            "expected {\"id\",\"data\"}, {\"gap\"}, {\"epoch\",\"after\"} or {\"error\"}",
        )),
    }
}

/// The hot path: `{"id":N,"data":"..."}` exactly as pushbench's servers write an event whose
/// payload needs no escapes (the load generator's always), then optional whitespace. Anything
/// else (escapes, other key orders, extra keys, gaps, errors) returns `None` and goes through
/// serde, so this decides nothing serde would decide differently: it only skips building a
/// parser for the one shape every delivery has.
fn plain_event(buf: &Bytes) -> Option<Event> {
    let rest = buf.strip_prefix(b"{\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // No leading zeros in JSON numbers; 19 digits always fit a u64.
    if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    let id = rest[..digits]
        .iter()
        .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
    let body = rest[digits..].strip_prefix(b",\"data\":\"")?;
    let end = body.iter().position(|&b| b == b'"')?;
    let payload = &body[..end];
    // A backslash means escapes to decode and a control character is invalid JSON: serde's job.
    if payload.iter().any(|&b| b == b'\\' || b < 0x20) {
        return None;
    }
    let tail = body[end + 1..].strip_prefix(b"}")?;
    if !tail.iter().all(u8::is_ascii_whitespace) || std::str::from_utf8(payload).is_err() {
        return None;
    }
    Some(Event {
        id,
        payload: buf.slice_ref(payload),
    })
}

/// Parses a `/poll` or `/longpoll` body. The `Vec` is the only allocation besides escaped payloads.
pub fn parse_batch(body: &Bytes) -> Result<Batch, EnvelopeError> {
    let raw: RawBatch<'_> = serde_json::from_slice(body)?;
    let events = raw
        .events
        .into_iter()
        .map(|e| Event {
            id: e.id,
            payload: payload_bytes(body, e.data),
        })
        .collect();
    Ok(Batch {
        events,
        gap: raw.gap,
        last_id: raw.last_id,
        epoch: raw.epoch.map(|Text(e)| parse_epoch(&e)).transpose()?,
        reset: raw.reset.unwrap_or(false),
    })
}

/// An `epoch` member: 8 lowercase hex digits (docs/PROTOCOL.md §1).
fn parse_epoch(text: &str) -> Result<Epoch, EnvelopeError> {
    text.parse()
        .map_err(|_| EnvelopeError::Shape("an epoch is 8 lowercase hex digits"))
}

/// Parses the data of an SSE `gap` event: `{"from":A,"to":B}`.
pub fn parse_gap(data: &[u8]) -> Result<Gap, EnvelopeError> {
    Ok(serde_json::from_slice(data)?)
}

/// Parses a publish answer, `{"id":N,"epoch":"E"}` (the epoch is not needed here).
pub fn parse_published(body: &[u8]) -> Result<u64, EnvelopeError> {
    let raw: RawPublished = serde_json::from_slice(body)?;
    Ok(raw.id)
}

/// The `last_message_id` of Nchan's channel info (`GET /pub` with `Accept: text/json`), e.g.
/// `{"messages": 2, "requested": 0, "subscribers": 0, "last_message_id": "1795643780:1" }`.
pub fn parse_nchan_last_message_id(body: &[u8]) -> Result<String, EnvelopeError> {
    #[derive(Deserialize)]
    struct Info<'a> {
        #[serde(borrow)]
        last_message_id: Cow<'a, str>,
    }
    let info: Info<'_> = serde_json::from_slice(body)?;
    Ok(info.last_message_id.into_owned())
}

/// The text of an `{"error":"..."}` body, or of the gateway's FCM-shaped
/// `{"error":{"message":"...","status":"..."}}`, if the body is one.
pub fn error_message(body: &[u8]) -> Option<String> {
    if let Ok(e) = serde_json::from_slice::<RawError<'_>>(body) {
        return Some(e.error.0.into_owned());
    }
    #[derive(Deserialize)]
    struct Fcm {
        error: FcmInner,
    }
    #[derive(Deserialize)]
    struct FcmInner {
        message: String,
        status: String,
    }
    let e: Fcm = serde_json::from_slice(body).ok()?;
    Some(format!("{}: {}", e.error.status, e.error.message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        match parse_envelope(&Bytes::copy_from_slice(json.as_bytes())).unwrap() {
            Envelope::Event(e) => e,
            other => panic!("not an event: {other:?}"),
        }
    }

    #[test]
    fn gateway_frames() {
        let buf = Bytes::from_static(
            br#"{"message_id":9,"kind":"data","from":"/topics/t","priority":"normal","sent_time_ms":1,"ttl_s":60.0,"data":{"pb":"pb1 1 2 ..","x":"y"}}"#,
        );
        let GatewayFrame::Message { id, payload } = parse_gateway_frame(&buf).unwrap() else {
            panic!()
        };
        assert_eq!((id, &payload[..]), (9, &b"pb1 1 2 .."[..]));
        let f = |s: &'static str| parse_gateway_frame(&Bytes::from_static(s.as_bytes()));
        assert_eq!(
            f(r#"{"message_id":3,"kind":"notification","notification":{"title":"t"},"data":{}}"#)
                .unwrap(),
            GatewayFrame::Message {
                id: 3,
                payload: Bytes::new()
            }
        );
        assert_eq!(
            f(r#"{"kind":"deleted_messages","count":4}"#).unwrap(),
            GatewayFrame::Deleted(4)
        );
        assert_eq!(
            f(r#"{"kind":"upstream_ack","message_id":"u1"}"#).unwrap(),
            GatewayFrame::UpstreamAck
        );
        assert_eq!(
            f(r#"{"error":"no"}"#).unwrap(),
            GatewayFrame::Error("no".into())
        );
        assert!(f(r#"{"kind":"data","data":{}}"#).is_err());
        assert_eq!(
            error_message(br#"{"error":{"code":404,"message":"gone","status":"NOT_FOUND"}}"#)
                .as_deref(),
            Some("NOT_FOUND: gone")
        );
    }

    #[test]
    fn plain_payload_is_a_view_of_the_buffer() {
        let buf = Bytes::from_static(b"{\"id\":7,\"data\":\"hello world\"}\n");
        let Envelope::Event(e) = parse_envelope(&buf).unwrap() else {
            panic!()
        };
        assert_eq!(e.id, 7);
        assert_eq!(&e.payload[..], b"hello world");
        let start = buf.as_ptr() as usize;
        let p = e.payload.as_ptr() as usize;
        assert!(p >= start && p < start + buf.len(), "payload was copied");
    }

    #[test]
    fn the_fast_path_agrees_with_serde() {
        let cases: &[&[u8]] = &[
            b"{\"id\":7,\"data\":\"pb1 1 2 ...\"}\n",
            b"{\"id\":0,\"data\":\"\"}",
            b"{\"id\":18446744073709551615,\"data\":\"x\"}",
            b"{\"id\":07,\"data\":\"x\"}",
            b"{\"id\":7,\"data\":\"a\\\"b\"}",
            b"{\"id\":7,\"data\":\"x\"} junk",
            b"{\"id\":7,\"data\":\"x\",\"gap\":1}",
            b"{\"id\":7,\"data\":\"\xc3\xbc\"}",
            b"{\"id\":7,\"data\":\"\xff\"}",
            b"{\"id\":7,\"data\":\"tab\there\"}",
        ];
        for &case in cases {
            let buf = Bytes::from_static(case);
            let fast = plain_event(&buf);
            let slow: Result<RawMessage<'_>, _> = serde_json::from_slice(&buf);
            match &fast {
                Some(e) => {
                    let raw = slow.unwrap_or_else(|e| panic!("{case:?}: {e}"));
                    assert_eq!(Some(e.id), raw.id, "{case:?}");
                    assert_eq!(&e.payload[..], raw.data.unwrap().0.as_bytes(), "{case:?}");
                    // A view of the buffer: no copy.
                    assert!(
                        buf.as_ptr_range().contains(&e.payload.as_ptr()) || e.payload.is_empty()
                    );
                }
                // Whatever the fast path declines, parse_envelope still answers as serde does.
                None => assert_eq!(
                    parse_envelope(&buf).is_ok(),
                    slow.is_ok() && !case.ends_with(b"\"gap\":1}"),
                    "{case:?}"
                ),
            }
        }
        assert!(plain_event(&Bytes::from_static(b"{\"id\":7,\"data\":\"x\"}\n")).is_some());
        assert!(plain_event(&Bytes::from_static(
            b"{\"id\":18446744073709551615,\"data\":\"x\"}"
        ))
        .is_none());
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(
            &event(r#"{"id":1,"data":"say \"hi\" \\ o/"}"#).payload[..],
            br#"say "hi" \ o/"#
        );
        assert_eq!(
            &event(r#"{"id":2,"data":"gr\u00fc\u00DF"}"#).payload[..],
            "grüß".as_bytes()
        );
        assert_eq!(
            &event(r#"{"id":3,"data":"a\nb\tc\/"}"#).payload[..],
            b"a\nb\tc/"
        );
        assert_eq!(
            &event(r#"{"id":4,"data":"\ud83d\ude00"}"#).payload[..],
            "😀".as_bytes()
        );
        assert_eq!(
            &event("{\"id\":5,\"data\":\"ü raw\"}").payload[..],
            "ü raw".as_bytes()
        );
    }

    #[test]
    fn key_order_and_unknown_keys_do_not_matter() {
        let e = event(r#" {"data":"x","extra":[1,{"a":null}],"id":18446744073709551615} "#);
        assert_eq!((e.id, &e.payload[..]), (u64::MAX, &b"x"[..]));
    }

    #[test]
    fn gap_and_error_objects() {
        let gap = parse_envelope(&Bytes::from_static(br#"{"gap":{"from":3,"to":9}}"#)).unwrap();
        assert_eq!(gap, Envelope::Gap(Gap { from: 3, to: 9 }));
        let gap = parse_envelope(&Bytes::from_static(br#"{"gap":{"to":9,"from":9}}"#)).unwrap();
        assert_eq!(gap, Envelope::Gap(Gap { from: 9, to: 9 }));
        let err = parse_envelope(&Bytes::from_static(br#"{"error":"frame \"too\" big"}"#)).unwrap();
        assert_eq!(err, Envelope::Error("frame \"too\" big".into()));
        assert_eq!(
            parse_gap(br#"{"from":1,"to":2}"#).unwrap(),
            Gap { from: 1, to: 2 }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        for bad in [
            &b""[..],
            b"not json",
            b"[]",
            b"{}",
            b"{\"id\":1}",
            b"{\"data\":\"x\"}",
            b"{\"id\":-1,\"data\":\"x\"}",
            b"{\"id\":1,\"data\":5}",
            b"{\"id\":1,\"data\":\"x\"",
            b"{\"id\":1,\"data\":\"x\"} trailing",
            b"{\"gap\":{\"from\":1}}",
            b"{\"gap\":{\"from\":1,\"to\":2},\"id\":3,\"data\":\"x\"}",
            b"{\"id\":1,\"data\":\"bad \\q escape\"}",
        ] {
            assert!(
                parse_envelope(&Bytes::copy_from_slice(bad)).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(parse_gap(b"{\"from\":\"1\",\"to\":2}").is_err());
        assert!(parse_batch(&Bytes::from_static(b"{\"events\":[]}")).is_err());
        assert!(parse_batch(&Bytes::from_static(
            b"{\"events\":[{\"gap\":{\"from\":1,\"to\":2}}],\"last_id\":2}"
        ))
        .is_err());
    }

    #[test]
    fn batch_without_gap() {
        let body = Bytes::from_static(
            br#"{"events":[{"id":4,"data":"a"},{"id":5,"data":"b\"c"}],"last_id":9}"#,
        );
        let b = parse_batch(&body).unwrap();
        assert_eq!(b.last_id, 9);
        assert_eq!(b.gap, None);
        assert_eq!(b.events.len(), 2);
        assert_eq!((b.events[0].id, &b.events[0].payload[..]), (4, &b"a"[..]));
        assert_eq!(
            (b.events[1].id, &b.events[1].payload[..]),
            (5, &b"b\"c"[..])
        );
        let empty = parse_batch(&Bytes::from_static(br#"{"last_id":0,"events":[]}"#)).unwrap();
        assert!(empty.events.is_empty());
        assert_eq!(empty.last_id, 0);
    }

    #[test]
    fn batch_with_gap() {
        let body = Bytes::from_static(
            br#"{"last_id":12,"gap":{"from":1,"to":10},"events":[{"id":11,"data":"x"},{"id":12,"data":"y"}]}"#,
        );
        let b = parse_batch(&body).unwrap();
        assert_eq!(b.gap, Some(Gap { from: 1, to: 10 }));
        assert_eq!(b.events.iter().map(|e| e.id).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(b.last_id, 12);
    }

    #[test]
    fn nchan_channel_info() {
        let body = br#"{"messages": 2, "requested": 0, "subscribers": 0, "last_message_id": "1795643780:1" }"#;
        assert_eq!(parse_nchan_last_message_id(body).unwrap(), "1795643780:1");
        assert!(parse_nchan_last_message_id(b"queued messages: 1").is_err());
    }

    #[test]
    fn publish_and_error_bodies() {
        assert_eq!(parse_published(br#"{"id":42}"#).unwrap(), 42);
        assert!(parse_published(br#"{"error":"nope"}"#).is_err());
        assert_eq!(
            error_message(br#"{"error":"bad \u0074opic"}"#).as_deref(),
            Some("bad topic")
        );
        assert_eq!(error_message(b"<html>"), None);
    }
}

//! An incremental `text/event-stream` parser following the WHATWG rules.
//!
//! Fed arbitrary chunks (a line, or even a CRLF pair, may be split anywhere), it yields events
//! as soon as their blank line arrives. A single `data:` line, the only kind pushbench servers
//! send, comes out as a view into the buffered bytes, without a copy.

use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field; empty means the default type, `message`.
    pub event: Bytes,
    /// The `data:` lines joined with `\n`.
    pub data: Bytes,
    /// The stream's last event id when this event was dispatched (an `id:` field in this event,
    /// or else the one before it, as `EventSource.lastEventId` does).
    pub last_event_id: EventId,
}

/// Longest id kept inline: any decimal `u64` and then some.
const INLINE_ID: usize = 30;

/// An event id. Every event carries one, so a short one (pushbench's are decimal numbers) is
/// kept inline: taking it from each event, keeping it as the last id and handing it out with the
/// event allocates nothing, where a `Bytes` each time was two allocations and two frees per event
/// (a twentieth of the load generator's time per SSE delivery). Longer ids, which the format
/// allows, are shared.
#[derive(Clone, PartialEq, Eq)]
pub enum EventId {
    /// Up to [`INLINE_ID`] bytes.
    Inline {
        /// Bytes used.
        len: u8,
        /// The id, then zeros.
        bytes: [u8; INLINE_ID],
    },
    /// Longer.
    Shared(Bytes),
}

impl EventId {
    /// The id `id`.
    pub fn new(id: &[u8]) -> Self {
        if id.len() > INLINE_ID {
            return EventId::Shared(Bytes::copy_from_slice(id));
        }
        let mut bytes = [0; INLINE_ID];
        bytes[..id.len()].copy_from_slice(id);
        EventId::Inline {
            len: id.len() as u8,
            bytes,
        }
    }
}

impl Default for EventId {
    /// No id.
    fn default() -> Self {
        EventId::new(b"")
    }
}

impl std::ops::Deref for EventId {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            EventId::Inline { len, bytes } => &bytes[..usize::from(*len)],
            EventId::Shared(b) => b,
        }
    }
}

impl std::fmt::Debug for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl SseEvent {
    /// The event type, `message` when no `event:` field was given.
    pub fn event_type(&self) -> &[u8] {
        if self.event.is_empty() {
            b"message"
        } else {
            &self.event
        }
    }
}

/// A line's field name and value (the value without the one space that may follow the colon).
/// A comment line has an empty name; an empty line, both empty.
fn field(line: &[u8]) -> (&[u8], &[u8]) {
    // The colon comes within a few bytes, where a plain loop beats a vectorised search's setup.
    match line.iter().position(|&b| b == b':') {
        Some(colon) => {
            let skip = if line.get(colon + 1) == Some(&b' ') {
                2
            } else {
                1
            };
            (&line[..colon], &line[colon + skip..])
        }
        None => (line, &line[line.len()..]),
    }
}

/// What a line other than `data:` does.
enum Effect {
    /// An empty line: the event is complete.
    Dispatch,
    Event(Bytes),
    Id(EventId),
    Retry(Duration),
    /// A comment, an unknown field, or an invalid value.
    Nothing,
}

fn effect(line: &[u8]) -> Effect {
    if line.is_empty() {
        return Effect::Dispatch;
    }
    match field(line) {
        (b"event", value) => Effect::Event(Bytes::copy_from_slice(value)),
        (b"id", value) if !value.contains(&0) => Effect::Id(EventId::new(value)),
        (b"retry", value) => parse_retry(value).map_or(Effect::Nothing, Effect::Retry),
        // A comment (empty name) or a field pushbench does not know.
        _ => Effect::Nothing,
    }
}

/// A `retry:` value that is all ASCII digits; anything else, or an absurd number, is `None`.
fn parse_retry(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = std::str::from_utf8(value).ok()?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ms))
}

/// The data buffer; a single line is kept as a slice to avoid copying it.
#[derive(Debug, Default)]
enum Data {
    #[default]
    None,
    One(Bytes),
    Many(BytesMut),
}

/// Incremental event-stream parser: [`feed`](SseParser::feed) bytes, then drain
/// [`next_event`](SseParser::next_event) until it returns `None`.
#[derive(Debug)]
pub struct SseParser {
    buf: BytesMut,
    /// Prefix of `buf` already searched for a line break, so a long line fed byte by byte is
    /// not rescanned from its start each time.
    scanned: usize,
    /// The last line ended in CR; an LF right after it belongs to the same line break.
    skip_lf: bool,
    /// Nothing of this stream has been consumed yet, so a BOM may still have to be stripped.
    at_start: bool,
    data: Data,
    event: Bytes,
    id_buffer: EventId,
    last_event_id: EventId,
    retry: Option<Duration>,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::new()
    }
}

impl SseParser {
    /// A parser at the start of a stream, with no last event id.
    pub fn new() -> Self {
        SseParser {
            buf: BytesMut::new(),
            scanned: 0,
            skip_lf: false,
            at_start: true,
            data: Data::None,
            event: Bytes::new(),
            id_buffer: EventId::default(),
            last_event_id: EventId::default(),
            retry: None,
        }
    }

    /// Sets the last event id, as if a previous stream had ended with it.
    pub fn set_last_event_id(&mut self, id: &[u8]) {
        self.id_buffer = EventId::new(id);
        self.last_event_id = self.id_buffer.clone();
    }

    /// The id to send as `Last-Event-ID` when reconnecting (empty: send none).
    pub fn last_event_id(&self) -> &EventId {
        &self.last_event_id
    }

    /// The reconnection delay from the latest valid `retry:` field.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Bytes held that do not yet form a complete line, so callers can bound a runaway line.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Forgets the partial event and line of a connection that ended, ready for a new stream.
    ///
    /// The last event id and retry delay survive, as they do across an `EventSource` reconnect.
    pub fn reset_stream(&mut self) {
        self.buf.clear();
        self.scanned = 0;
        self.skip_lf = false;
        self.at_start = true;
        self.data = Data::None;
        self.event = Bytes::new();
        self.id_buffer = self.last_event_id.clone();
    }

    /// Appends received bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete event, or `None` when more bytes are needed.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        loop {
            if self.skip_lf {
                let first = *self.buf.first()?;
                if first == b'\n' {
                    self.buf.advance(1);
                }
                self.skip_lf = false;
            }
            if self.at_start {
                let n = self.buf.len().min(BOM.len());
                if self.buf[..n] != BOM[..n] {
                    self.at_start = false;
                } else if n < BOM.len() {
                    return None;
                } else {
                    self.buf.advance(BOM.len());
                    self.at_start = false;
                }
            }
            let pos = memchr::memchr2(b'\n', b'\r', &self.buf[self.scanned..]);
            let Some(pos) = pos.map(|p| p + self.scanned) else {
                self.scanned = self.buf.len();
                return None;
            };
            // Only a `data:` line's value is kept, as a view into the buffer; every other line
            // is read in place, which spares a split of the buffer and its reference count for
            // each of them (three lines out of four in an event).
            let line = &self.buf[..pos];
            if line.starts_with(b"data") && line.get(4).is_none_or(|&b| b == b':') {
                let line = self.buf.split_to(pos).freeze();
                self.end_line();
                let value = line.slice_ref(field(&line).1);
                self.push_data(value);
                continue;
            }
            let effect = effect(line);
            self.buf.advance(pos);
            self.end_line();
            match effect {
                Effect::Dispatch => {
                    if let Some(event) = self.dispatch() {
                        return Some(event);
                    }
                }
                // Both are copied out of the stream buffer: kept as views, the id (which lives
                // on as the last event id) would keep the whole buffer shared, and every later
                // `feed` would then have to allocate a new one rather than reuse it.
                Effect::Event(event) => self.event = event,
                Effect::Id(id) => self.id_buffer = id,
                Effect::Retry(retry) => self.retry = Some(retry),
                Effect::Nothing => {}
            }
        }
    }

    /// Consumes the line break at the buffer's start.
    fn end_line(&mut self) {
        self.skip_lf = self.buf[0] == b'\r';
        self.buf.advance(1);
        self.scanned = 0;
    }

    /// Adds a `data:` line's value to the event being built.
    fn push_data(&mut self, value: Bytes) {
        self.data = match std::mem::take(&mut self.data) {
            Data::None => Data::One(value),
            Data::One(first) => {
                let mut joined = BytesMut::with_capacity(first.len() + 1 + value.len());
                joined.extend_from_slice(&first);
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
            Data::Many(mut joined) => {
                joined.extend_from_slice(b"\n");
                joined.extend_from_slice(&value);
                Data::Many(joined)
            }
        };
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        self.last_event_id = self.id_buffer.clone();
        let event = std::mem::take(&mut self.event);
        let data = match std::mem::take(&mut self.data) {
            Data::None => return None,
            Data::One(data) => data,
            Data::Many(data) => data.freeze(),
        };
        Some(SseEvent {
            event,
            data,
            last_event_id: self.last_event_id.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (type, data, last id) triples, easy to compare.
    fn collect(p: &mut SseParser, out: &mut Vec<(String, String, String)>) {
        while let Some(e) = p.next_event() {
            let s = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
            out.push((s(e.event_type()), s(&e.data), s(&e.last_event_id)));
        }
    }

    fn parse_in_chunks(input: &[u8], chunk: usize) -> Vec<(String, String, String)> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            p.feed(c);
            collect(&mut p, &mut out);
        }
        out
    }

    /// Every chunk size, 1 (byte by byte) included, must give the same events.
    fn parse_all_ways(input: &[u8]) -> Vec<(String, String, String)> {
        let whole = parse_in_chunks(input, input.len().max(1));
        for size in 1..input.len() {
            assert_eq!(parse_in_chunks(input, size), whole, "chunk size {size}");
        }
        whole
    }

    fn ev(t: &str, d: &str, id: &str) -> (String, String, String) {
        (t.into(), d.into(), id.into())
    }

    #[test]
    fn pushbench_events_and_gaps() {
        let input = b"retry: 1500\n: keep-alive\n\nid: 1\ndata: hello\n\nevent: gap\ndata: {\"from\":2,\"to\":4}\n\nid: 5\ndata: {\"json\": \"payload\"}\n\n";
        assert_eq!(
            parse_all_ways(input),
            [
                ev("message", "hello", "1"),
                ev("gap", "{\"from\":2,\"to\":4}", "1"),
                ev("message", "{\"json\": \"payload\"}", "5"),
            ]
        );
        let mut p = SseParser::new();
        p.feed(input);
        while p.next_event().is_some() {}
        assert_eq!(p.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(&p.last_event_id()[..], b"5");
    }

    #[test]
    fn ids_short_and_long() {
        let long = "x".repeat(INLINE_ID + 1);
        let edge = "y".repeat(INLINE_ID);
        let input = format!("id: {edge}\ndata: a\n\nid: {long}\ndata: b\n\ndata: c\n\n");
        assert_eq!(
            parse_all_ways(input.as_bytes()),
            [
                ev("message", "a", &edge),
                ev("message", "b", &long),
                ev("message", "c", &long),
            ]
        );
        assert!(matches!(
            EventId::new(edge.as_bytes()),
            EventId::Inline { .. }
        ));
        assert!(matches!(EventId::new(long.as_bytes()), EventId::Shared(_)));
        assert_eq!(format!("{:?}", EventId::new(b"7")), "\"7\"");
    }

    #[test]
    fn every_line_ending() {
        for nl in ["\n", "\r\n", "\r"] {
            let input = format!("id: 7{nl}data: a{nl}data: b{nl}{nl}data: c{nl}{nl}");
            assert_eq!(
                parse_all_ways(input.as_bytes()),
                [ev("message", "a\nb", "7"), ev("message", "c", "7")],
                "{nl:?}"
            );
        }
        // Mixed, and a CR followed by a CRLF is two line breaks, not one.
        let input = b"data: a\r\ndata: b\rdata: c\n\r\r\ndata: d\r\r";
        assert_eq!(
            parse_all_ways(input),
            [ev("message", "a\nb\nc", ""), ev("message", "d", "")]
        );
    }

    #[test]
    fn crlf_split_across_feeds() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for part in [&b"data: x\r"[..], b"\n", b"\r", b"\n", b"data: y\r", b"\r"] {
            p.feed(part);
            collect(&mut p, &mut out);
        }
        assert_eq!(out, [ev("message", "x", ""), ev("message", "y", "")]);
    }

    #[test]
    fn field_syntax() {
        let input = b"data\n\ndata:\n\ndata:no-space\n\ndata:  two spaces\n\ndata: x:y: z\n\nfoo: bar\ndata: q\n\n";
        assert_eq!(
            parse_all_ways(input),
            [
                ev("message", "", ""),
                ev("message", "", ""),
                ev("message", "no-space", ""),
                ev("message", " two spaces", ""),
                ev("message", "x:y: z", ""),
                ev("message", "q", ""),
            ]
        );
        // Trailing empty data lines keep their newline, only the final one is dropped.
        assert_eq!(
            parse_all_ways(b"data: a\ndata\n\n"),
            [ev("message", "a\n", "")]
        );
    }

    #[test]
    fn ids_persist_and_commit_without_data() {
        let input = b"id: 3\n\ndata: a\n\nid: 4\nevent: custom\n\ndata: b\n\nid\ndata: c\n\nid: bad\0id\ndata: d\n\n";
        assert_eq!(
            parse_all_ways(input),
            [
                ev("message", "a", "3"),
                ev("message", "b", "4"),
                ev("message", "c", ""),
                ev("message", "d", ""),
            ]
        );
    }

    #[test]
    fn event_type_resets_after_dispatch() {
        let input = b"event: gap\nid: 1\n\ndata: x\n\nevent: gap\ndata: y\n\ndata: z\n\n";
        assert_eq!(
            parse_all_ways(input),
            [
                ev("message", "x", "1"),
                ev("gap", "y", "1"),
                ev("message", "z", "1")
            ]
        );
    }

    #[test]
    fn retry_rules() {
        let mut p = SseParser::new();
        p.feed(b"retry: 10\nretry: 1x\nretry:\nretry: -5\nretry: 99999999999999999999999\n\n");
        assert_eq!(p.next_event(), None);
        assert_eq!(p.retry(), Some(Duration::from_millis(10)));
        p.feed(b"retry:250\n");
        assert_eq!(p.next_event(), None);
        assert_eq!(p.retry(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn bom_is_stripped_once() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        // The second BOM makes the field name unknown, so that event has no data.
        assert_eq!(parse_all_ways(input), [ev("message", "a", "")]);
        assert_eq!(parse_all_ways(b"\xEFdata: a\n\n").len(), 0);
        assert!(parse_all_ways(b"\xEF").is_empty());
    }

    #[test]
    fn incomplete_event_waits_and_reset_drops_it() {
        let mut p = SseParser::new();
        p.feed(b"id: 9\ndata: a\n\nid: 10\ndata: partial\n");
        assert_eq!(&p.next_event().unwrap().data[..], b"a");
        assert_eq!(p.next_event(), None);
        p.feed(b"data: more");
        assert_eq!(p.next_event(), None);
        assert!(p.buffered_len() > 0);
        p.reset_stream();
        assert_eq!(p.buffered_len(), 0);
        assert_eq!(&p.last_event_id()[..], b"9");
        p.feed(b"data: fresh\n\n");
        let e = p.next_event().unwrap();
        assert_eq!(
            (&e.data[..], &e.last_event_id[..]),
            (&b"fresh"[..], &b"9"[..])
        );
    }

    #[test]
    fn set_last_event_id_seeds_the_stream() {
        let mut p = SseParser::new();
        p.set_last_event_id(b"41");
        p.feed(b"data: x\n\n");
        assert_eq!(&p.next_event().unwrap().last_event_id[..], b"41");
    }

    #[test]
    fn single_data_line_is_not_copied() {
        let mut p = SseParser::new();
        p.feed(b"id: 1\ndata: aaaa\n\ndata: bbbb\n\n");
        let (a, b) = (p.next_event().unwrap(), p.next_event().unwrap());
        // Both are views of the one buffer fed: "aaaa" at offset 12, "bbbb" at offset 24.
        let distance = b.data.as_ptr() as usize - a.data.as_ptr() as usize;
        assert_eq!(distance, 12);
        assert_eq!(&a.last_event_id[..], b"1");
    }
}

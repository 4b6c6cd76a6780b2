//! Pushpin's WebSocket-over-HTTP event format: a WebSocket's life as HTTP requests to the
//! origin, each body a list of events `TYPE[ HEXLEN]\r\n[CONTENT\r\n]` (`OPEN`, `TEXT`,
//! `BINARY`, `PING`, `PONG`, `CLOSE`, `DISCONNECT`).

use bytes::{BufMut, Bytes, BytesMut};

/// One event of a WebSocket-over-HTTP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WsEvent {
    /// `OPEN`, `TEXT`, `CLOSE`, ...
    pub kind: String,
    /// Its content (empty for events without one).
    pub content: Bytes,
}

/// Parses a request body into its events; `None` if it is not that format.
pub(crate) fn parse(mut body: &[u8]) -> Option<Vec<WsEvent>> {
    let mut events = Vec::new();
    while !body.is_empty() {
        let end = body.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&body[..end]).ok()?;
        body = &body[end + 2..];
        let (kind, len) = match line.split_once(' ') {
            Some((kind, hex)) => (kind, usize::from_str_radix(hex, 16).ok()?),
            None => (line, 0),
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut content = Bytes::new();
        if line.contains(' ') {
            if body.len() < len + 2 || &body[len..len + 2] != b"\r\n" {
                return None;
            }
            content = Bytes::copy_from_slice(&body[..len]);
            body = &body[len + 2..];
        }
        events.push(WsEvent {
            kind: kind.to_owned(),
            content,
        });
    }
    Some(events)
}

/// Appends one event to a response body.
pub(crate) fn put(out: &mut BytesMut, kind: &str, content: Option<&[u8]>) {
    out.put_slice(kind.as_bytes());
    if let Some(c) = content {
        out.put_slice(format!(" {:x}\r\n", c.len()).as_bytes());
        out.put_slice(c);
    }
    out.put_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = BytesMut::new();
        put(&mut out, "OPEN", None);
        put(&mut out, "TEXT", Some(b"hi\r\nthere"));
        put(&mut out, "CLOSE", Some(&[0x03, 0xe8]));
        let events = parse(&out).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].kind, "OPEN");
        assert_eq!(events[1].content.as_ref(), b"hi\r\nthere");
        assert_eq!(events[2].content.as_ref(), &[0x03, 0xe8]);
        assert!(parse(b"TEXT 5\r\nab\r\n").is_none());
        assert!(parse(b"open\r\n").is_none());
    }
}

//! The bytes of each item a subscriber receives, in every wire format (docs/PROTOCOL.md §5):
//! an event, the hello that opens a stream, and the gap signal.
//!
//! Servers encode with these; the reference clients in `pushbench-loadgen` check what they
//! parse against the same text, so the two sides cannot drift apart.

use bytes::{BufMut, Bytes, BytesMut};

use crate::epoch::Epoch;
use crate::{SSE_GAP_EVENT, SSE_RESET_EVENT};

/// `{"id":N,"data":"..."}\n`: an event as one NDJSON line. Without the `\n` it is the JSON
/// object that poll batches and WebSocket frames carry, so one buffer serves three transports.
pub fn event_ndjson(id: u64, payload: &str) -> Bytes {
    let mut json = Vec::with_capacity(payload.len() + 40);
    json.extend_from_slice(b"{\"id\":");
    json.extend_from_slice(itoa(id).as_bytes());
    json.extend_from_slice(b",\"data\":");
    // serde_json's string escaper is the reference for JSON escaping; writing into a Vec
    // cannot fail.
    serde_json::to_writer(&mut json, payload).expect("writing JSON to a Vec cannot fail");
    json.extend_from_slice(b"}\n");
    Bytes::from(json)
}

/// `id: EPOCH-N\ndata: ...\n\n`: one SSE event. Its id names the server's life, because a
/// browser resumes with nothing but that id (docs/PROTOCOL.md §4.4).
pub fn event_sse(epoch: Epoch, id: u64, payload: &str) -> Bytes {
    let mut sse = BytesMut::with_capacity(payload.len() + 48);
    sse.put_slice(b"id: ");
    sse.put_slice(&epoch.hex());
    sse.put_u8(b'-');
    sse.put_slice(itoa(id).as_bytes());
    sse.put_slice(b"\ndata: ");
    sse.put_slice(payload.as_bytes());
    sse.put_slice(b"\n\n");
    sse.freeze()
}

/// The ids `from..=to` that a subscriber will never receive: older than the replay buffer, or
/// dropped because the subscriber fell too far behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// First lost id.
    pub from: u64,
    /// Last lost id.
    pub to: u64,
}

impl Gap {
    /// How many events were lost.
    pub fn len(&self) -> u64 {
        self.to - self.from + 1
    }

    /// Never true: a gap always covers at least one id. Present for clippy's `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// `{"from":A,"to":B}`.
    pub fn inner_json(&self) -> String {
        format!("{{\"from\":{},\"to\":{}}}", self.from, self.to)
    }

    /// `{"gap":{"from":A,"to":B}}`: the gap line or frame of NDJSON streaming and WebSocket.
    pub fn json(&self) -> String {
        format!("{{\"gap\":{}}}", self.inner_json())
    }

    /// `{"gap":...}\n`.
    pub fn ndjson(&self) -> Bytes {
        Bytes::from(format!("{}\n", self.json()))
    }

    /// `event: gap\ndata: {"from":A,"to":B}\n\n`. It carries no `id:` so that a browser's
    /// `Last-Event-ID` keeps pointing at the last real event.
    pub fn sse(&self) -> Bytes {
        Bytes::from(format!(
            "event: {SSE_GAP_EVENT}\ndata: {}\n\n",
            self.inner_json()
        ))
    }
}

/// Where a streaming subscription starts: the first item of every stream, SSE stream and
/// WebSocket (docs/PROTOCOL.md §5.1). It tells the client the server's life and the id it
/// starts after, so the client can resume with `EPOCH-ID` from its very first moment, even if
/// the connection breaks before any event arrives. With `reset`, the client's cursor came from
/// another life: nothing it had counts here, and this life's events follow from the oldest kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// This life of the server.
    pub epoch: Epoch,
    /// The id after which events follow (0 after a reset).
    pub after: u64,
    /// Whether the client's cursor named another life.
    pub reset: bool,
}

impl Hello {
    /// `{"epoch":"E","after":N}`, with `,"reset":true` for a reset.
    pub fn json(&self) -> String {
        let reset = if self.reset { ",\"reset\":true" } else { "" };
        format!(
            "{{\"epoch\":\"{}\",\"after\":{}{reset}}}",
            self.epoch, self.after
        )
    }

    /// The hello line of NDJSON streaming.
    pub fn ndjson(&self) -> Bytes {
        Bytes::from(format!("{}\n", self.json()))
    }

    /// SSE: `id: E-N` and a blank line, which a browser takes as its last event id without
    /// dispatching anything; a reset is the named event `reset`, with that id and the JSON.
    pub fn sse(&self) -> Bytes {
        let id = format!("id: {}-{}\n", self.epoch, self.after);
        Bytes::from(if self.reset {
            format!("event: {SSE_RESET_EVENT}\n{id}data: {}\n\n", self.json())
        } else {
            format!("{id}\n")
        })
    }
}

/// Formats a u64 without going through `fmt` machinery on the publish path.
pub fn itoa(mut n: u64) -> ItoaBuf {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    ItoaBuf { buf, start: i }
}

/// The digits [`itoa`] wrote.
#[derive(Debug)]
pub struct ItoaBuf {
    buf: [u8; 20],
    start: usize,
}

impl ItoaBuf {
    /// The digits.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itoa_matches_display() {
        for n in [0u64, 1, 9, 10, 12345, u64::MAX] {
            assert_eq!(itoa(n).as_bytes(), n.to_string().as_bytes());
        }
    }

    #[test]
    fn hello_formats() {
        let epoch = Epoch::from_bits(0xbeef);
        let hello = Hello {
            epoch,
            after: 5,
            reset: false,
        };
        assert_eq!(hello.json(), r#"{"epoch":"0000beef","after":5}"#);
        assert_eq!(
            hello.ndjson().as_ref(),
            b"{\"epoch\":\"0000beef\",\"after\":5}\n"
        );
        assert_eq!(hello.sse().as_ref(), b"id: 0000beef-5\n\n");
        let reset = Hello {
            epoch,
            after: 0,
            reset: true,
        };
        assert_eq!(
            reset.sse().as_ref(),
            b"event: reset\nid: 0000beef-0\ndata: {\"epoch\":\"0000beef\",\"after\":0,\"reset\":true}\n\n"
        );
    }

    #[test]
    fn gap_formats() {
        let g = Gap { from: 3, to: 7 };
        assert_eq!(g.len(), 5);
        assert_eq!(g.json(), r#"{"gap":{"from":3,"to":7}}"#);
        assert_eq!(
            g.sse().as_ref(),
            b"event: gap\ndata: {\"from\":3,\"to\":7}\n\n"
        );
    }
}

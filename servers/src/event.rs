//! One published event, encoded once per wire format.
//!
//! Fan-out to thousands of subscribers must not serialise per subscriber, so [`Event::encode`]
//! builds every format's bytes at publish time and subscribers share them by reference count.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Utf8Bytes;

use pushbench_protocol::frame;
pub use pushbench_protocol::frame::{Gap, Hello};
use pushbench_protocol::Epoch;

/// A published event with its id and its pre-encoded frames.
#[derive(Debug, Clone)]
pub struct Event {
    id: u64,
    /// Length of the raw payload, for accounting.
    payload_len: usize,
    /// `{"id":N,"data":"..."}\n`: an NDJSON line; without the `\n` it is the JSON object that
    /// poll batches and WebSocket frames carry, so one buffer serves three transports.
    ndjson: Bytes,
    /// `id: EPOCH-N\ndata: ...\n\n`: one SSE event. Its id names the server's life, because
    /// a browser resumes with nothing but that id (docs/PROTOCOL.md §4.4).
    sse: Bytes,
    /// The JSON object as WebSocket text: validated as UTF-8 once here, not per send.
    ws: Utf8Bytes,
}

impl Event {
    /// Encodes `payload` (already validated: one line of UTF-8) as event `id` of the server's
    /// life `epoch`.
    pub fn encode(epoch: Epoch, id: u64, payload: &str) -> Event {
        let ndjson = frame::event_ndjson(id, payload);
        let ws =
            Utf8Bytes::try_from(ndjson.slice(..ndjson.len() - 1)).expect("serde_json writes UTF-8");
        let sse = frame::event_sse(epoch, id, payload);

        Event {
            id,
            payload_len: payload.len(),
            ndjson,
            sse,
            ws,
        }
    }

    /// The event's id within its topic.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Length of the raw payload in bytes.
    pub fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// `{"id":N,"data":"..."}`, the element of a poll batch.
    pub fn json(&self) -> Bytes {
        self.ndjson.slice(..self.ndjson.len() - 1)
    }

    /// `{"id":N,"data":"..."}\n`, one HTTP-streaming line.
    pub fn ndjson(&self) -> &Bytes {
        &self.ndjson
    }

    /// `id: EPOCH-N\ndata: ...\n\n`, one SSE event.
    pub fn sse(&self) -> &Bytes {
        &self.sse
    }

    /// The JSON object as a WebSocket text payload.
    pub fn ws_text(&self) -> &Utf8Bytes {
        &self.ws
    }

    /// Bytes this event keeps alive in the replay buffer.
    pub fn retained_bytes(&self) -> usize {
        self.ndjson.len() + self.sse.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_every_format() {
        let e = Event::encode(Epoch::from_bits(0xbeef), 42, "a \"q\" \\ ü\t");
        assert_eq!(
            e.ndjson().as_ref(),
            b"{\"id\":42,\"data\":\"a \\\"q\\\" \\\\ \xc3\xbc\\t\"}\n"
        );
        assert_eq!(e.json().as_ref(), &e.ndjson()[..e.ndjson().len() - 1]);
        assert_eq!(e.ws_text().as_str().as_bytes(), e.json().as_ref());
        assert_eq!(
            e.sse().as_ref(),
            "id: 0000beef-42\ndata: a \"q\" \\ ü\t\n\n".as_bytes()
        );
        let v: serde_json::Value = serde_json::from_slice(&e.json()).unwrap();
        assert_eq!(v["id"], 42);
        assert_eq!(v["data"], "a \"q\" \\ ü\t");
    }
}

//! Short polling: `GET /poll?topic=T&after=ID` answers at once with what is new, often nothing.
//! With `latest=1` it answers with the newest event only: the pull client of Bozdag et al.,
//! which fetches the current state and may miss changes between two polls.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Response, StatusCode};

use crate::http::{full, head, ApiError, Body, Query};
use crate::hub::Batch;
use crate::state::App;

pub(crate) fn handle(app: &Arc<App>, query: Query) -> Result<Response<Body>, ApiError> {
    let batch = if query.latest {
        app.hub.read_latest(&query.topic, query.after)?
    } else {
        app.hub
            .read(&query.topic, query.after, app.config.max_batch)?
    };
    Ok(batch_response(&batch))
}

/// `{"events":[...],"last_id":N,"epoch":"E"}` plus `"gap":{...}` when the replay buffer missed
/// ids, and `"reset":true` when the cursor named another life of the server. Shared
/// with long polling, which answers in the same shape.
pub(crate) fn batch_response(batch: &Batch) -> Response<Body> {
    let (head, body) = batch_parts(batch);
    head.map(|()| full(body))
}

/// [`batch_response`]'s head and body apart, for what writes them without hyper.
pub(crate) fn batch_parts(batch: &Batch) -> (Response<()>, Bytes) {
    (
        head(StatusCode::OK, "application/json"),
        encode_batch(batch),
    )
}

/// The batch body; each event's JSON was encoded once at publish and is only copied here.
pub fn encode_batch(batch: &Batch) -> Bytes {
    let size: usize = batch.events.iter().map(|e| e.ndjson().len()).sum();
    let mut out = BytesMut::with_capacity(size + 64);
    out.put_slice(b"{\"events\":[");
    for (i, e) in batch.events.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_slice(&e.json());
    }
    out.put_slice(b"],\"last_id\":");
    out.put_slice(batch.last_id.to_string().as_bytes());
    out.put_slice(b",\"epoch\":\"");
    out.put_slice(&batch.epoch.hex());
    out.put_u8(b'"');
    if batch.reset {
        out.put_slice(b",\"reset\":true");
    }
    if let Some(gap) = batch.gap {
        out.put_slice(b",\"gap\":");
        out.put_slice(gap.inner_json().as_bytes());
    }
    out.put_u8(b'}');
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Gap};
    use crate::protocol::Epoch;

    #[test]
    fn batch_is_valid_json() {
        let epoch = Epoch::from_bits(0xbeef);
        let batch = Batch {
            events: vec![
                Arc::new(Event::encode(epoch, 3, "a")),
                Arc::new(Event::encode(epoch, 4, "b\"c")),
            ],
            gap: Some(Gap { from: 1, to: 2 }),
            last_id: 4,
            ..Batch::empty(epoch, true)
        };
        let v: serde_json::Value = serde_json::from_slice(&encode_batch(&batch)).unwrap();
        assert_eq!(v["events"][1]["data"], "b\"c");
        assert_eq!(v["last_id"], 4);
        assert_eq!(v["gap"]["from"], 1);
        assert_eq!(
            (&v["epoch"], &v["reset"]),
            (&"0000beef".into(), &true.into())
        );
        let empty: serde_json::Value =
            serde_json::from_slice(&encode_batch(&Batch::empty(epoch, false))).unwrap();
        assert_eq!(
            empty,
            serde_json::json!({"events": [], "last_id": 0, "epoch": "0000beef"})
        );
    }
}

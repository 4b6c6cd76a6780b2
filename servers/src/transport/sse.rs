//! Server-Sent Events: `GET /sse?topic=T` answers with `text/event-stream`, resuming after the
//! `Last-Event-ID` header (what a browser's `EventSource` sends when it reconnects) or `after=`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::body::Opened;
use crate::framing::Framing;
use crate::http::{head, parse_cursor, ApiError, Body, Query};
use crate::hub::Item;
use crate::protocol::Cursor;
use crate::state::App;

/// One SSE event per item; a comment line is the keep-alive.
pub(crate) const FRAMING: Framing = Framing {
    name: "sse",
    encode: encode_item,
    keepalive: b": keep-alive\n\n",
    chunked: true,
};

/// The bytes this transport writes for one item.
pub fn encode_item(item: &Item) -> Bytes {
    match item {
        Item::Hello(h) => h.sse(),
        Item::Event(e) => e.sse().clone(),
        Item::Gap(g) => g.sse(),
    }
}

/// Where an SSE subscription resumes: after the `Last-Event-ID` header's cursor when it is
/// sent, else after `after=`. The header wins: a reconnecting EventSource repeats its original
/// URL, whose `after` is stale by then.
pub(crate) fn resume_cursor(
    last_event_id: Option<&[u8]>,
    after: Option<Cursor>,
) -> Result<Option<Cursor>, ApiError> {
    let Some(v) = last_event_id else {
        return Ok(after);
    };
    let text = std::str::from_utf8(v).map_err(|_| {
        ApiError::BadRequest(format!(
            "Last-Event-ID must be a cursor, got {:?}",
            String::from_utf8_lossy(v)
        ))
    })?;
    parse_cursor("Last-Event-ID", text.trim()).map(Some)
}

/// The subscription `GET /sse` opens, resuming after `last_event_id` (the header's raw value)
/// if sent, else after `after=`.
pub(crate) fn open(
    app: &App,
    last_event_id: Option<&[u8]>,
    query: Query,
) -> Result<Opened, ApiError> {
    let after = resume_cursor(last_event_id, query.after)?;
    let sub = app.hub.subscribe(&query.topic, after)?;
    let preamble = Bytes::from(format!("retry: {}\n\n", app.config.sse_retry_ms));
    let mut head = head(StatusCode::OK, "text/event-stream");
    // Tells nginx-style proxies in front of the server not to buffer the stream.
    head.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(Opened::new(app, sub, FRAMING, Some(preamble), head))
}

pub(crate) fn handle<B>(
    app: &Arc<App>,
    req: &Request<B>,
    query: Query,
) -> Result<Response<Body>, ApiError> {
    let last_event_id = req.headers().get("last-event-id").map(|v| v.as_bytes());
    Ok(open(app, last_event_id, query)?.into_response(app))
}

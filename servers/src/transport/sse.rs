//! Server-Sent Events: `GET /sse?topic=T` answers with `text/event-stream`, resuming after the
//! `Last-Event-ID` header (what a browser's `EventSource` sends when it reconnects) or `after=`.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};

use crate::app::App;
use crate::body::{subscriber_body, Framing};
use crate::http::{response, ApiError, Body, Query};
use crate::hub::Item;
use crate::protocol::Transport;
use crate::stats::GaugeGuard;

super::transport_server!(Transport::Sse);

/// One SSE event per item; a comment line is the keep-alive.
pub(crate) const FRAMING: Framing = Framing {
    encode: encode_item,
    keepalive: b": keep-alive\n\n",
};

/// The bytes this transport writes for one item.
pub fn encode_item(item: &Item) -> Bytes {
    match item {
        Item::Event(e) => e.sse().clone(),
        Item::Gap(g) => g.sse(),
    }
}

pub(crate) fn handle<B>(
    app: &Arc<App>,
    req: &Request<B>,
    query: Query,
) -> Result<Response<Body>, ApiError> {
    let after = match req.headers().get("last-event-id") {
        // The header wins over `after=`: a reconnecting EventSource repeats its original URL,
        // whose `after` is stale by then.
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("Last-Event-ID must be a whole number, got {v:?}"))
                })?,
        ),
        None => query.after,
    };
    let sub = app.hub.subscribe(&query.topic, after)?;
    let open = GaugeGuard::new(app.hub.stats().clone(), |s| &s.subscribers_open);
    let preamble = Bytes::from(format!("retry: {}\n\n", app.config.sse_retry_ms));
    let body = subscriber_body(
        sub,
        FRAMING,
        Some(preamble),
        app.config.keepalive,
        &app.shutdown,
        open,
    );
    let mut resp = response(StatusCode::OK, "text/event-stream", body);
    // Tells nginx-style proxies in front of the server not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

//! HTTP streaming: `GET /stream?topic=T&after=ID` answers with chunked NDJSON, one line per
//! event, each written as soon as it is published.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::app::App;
use crate::body::{subscriber_body, Framing};
use crate::http::{response, ApiError, Body, Query};
use crate::hub::Item;
use crate::protocol::Transport;
use crate::stats::GaugeGuard;

super::transport_server!(Transport::Stream);

/// One NDJSON line per item; a blank line is the keep-alive.
pub(crate) const FRAMING: Framing = Framing {
    encode: encode_item,
    keepalive: b"\n",
};

/// The bytes this transport writes for one item.
pub fn encode_item(item: &Item) -> Bytes {
    match item {
        Item::Event(e) => e.ndjson().clone(),
        Item::Gap(g) => g.ndjson(),
    }
}

pub(crate) fn handle(app: &Arc<App>, query: Query) -> Result<Response<Body>, ApiError> {
    let sub = app.hub.subscribe(&query.topic, query.after)?;
    let open = GaugeGuard::new(app.hub.stats().clone(), |s| &s.subscribers_open);
    let body = subscriber_body(
        sub,
        FRAMING,
        None,
        app.config.keepalive,
        &app.shutdown,
        open,
    );
    Ok(response(StatusCode::OK, "application/x-ndjson", body))
}

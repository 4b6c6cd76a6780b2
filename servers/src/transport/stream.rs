//! HTTP streaming: `GET /stream?topic=T&after=ID` answers with chunked NDJSON, one line per
//! event, each written as soon as it is published.

use std::sync::Arc;

use bytes::Bytes;
use http::{Response, StatusCode};

use crate::body::Opened;
use crate::framing::Framing;
use crate::http::{head, ApiError, Body, Query};
use crate::hub::Item;
use crate::state::App;

/// One NDJSON line per item; a blank line is the keep-alive.
pub(crate) const FRAMING: Framing = Framing {
    name: "ndjson",
    encode: encode_item,
    keepalive: b"\n",
    chunked: true,
};

/// The bytes this transport writes for one item.
pub fn encode_item(item: &Item) -> Bytes {
    match item {
        Item::Hello(h) => h.ndjson(),
        Item::Event(e) => e.ndjson().clone(),
        Item::Gap(g) => g.ndjson(),
    }
}

/// The subscription `GET /stream` opens.
pub(crate) fn open(app: &App, query: Query) -> Result<Opened, ApiError> {
    let sub = app.hub.subscribe(&query.topic, query.after)?;
    let head = head(StatusCode::OK, "application/x-ndjson");
    Ok(Opened::new(app, sub, FRAMING, None, head))
}

pub(crate) fn handle(app: &Arc<App>, query: Query) -> Result<Response<Body>, ApiError> {
    Ok(open(app, query)?.into_response(app))
}

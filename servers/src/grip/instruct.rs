//! The origin's answers to subscribe requests that Pushpin forwards: what to send now, and
//! what Pushpin should hold the connection for (GRIP's `Grip-Hold` and `Grip-Channel`).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{full, read_body, response, ApiError, Body, Query};
use crate::hub::{Batch, Item, Subscription};
use crate::state::App;
use crate::transport::longpoll::{start, Start};
use crate::transport::poll::batch_response;
use crate::transport::{sse, stream};

use super::channel::{channel, Channel};
use super::wsevents::{self, WsEvent};

/// Largest WebSocket-over-HTTP body the origin reads (client messages are payloads, ≤ 64 KiB).
const MAX_WS_EVENTS_BODY: usize = 128 * 1024;

/// `GET /stream`: the hello and the backlog now, then whatever is published to `s:TOPIC`.
pub(crate) fn stream(app: &App, query: Query) -> Result<Response<Body>, ApiError> {
    let sub = app.hub.subscribe(&query.topic, query.after)?;
    let body = drain(sub, stream::encode_item, BytesMut::new());
    Ok(held(
        response(StatusCode::OK, "application/x-ndjson", full(body)),
        &channel(Channel::Stream, &query.topic),
    ))
}

/// `GET /sse`: as [`stream`], in SSE, resuming after `Last-Event-ID` when sent.
pub(crate) fn sse(
    app: &App,
    headers: &HeaderMap,
    query: Query,
) -> Result<Response<Body>, ApiError> {
    let last_event_id = headers.get("last-event-id").map(|v| v.as_bytes());
    let after = sse::resume_cursor(last_event_id, query.after)?;
    let sub = app.hub.subscribe(&query.topic, after)?;
    let mut preamble = BytesMut::new();
    preamble.extend_from_slice(format!("retry: {}\n\n", app.config.sse_retry_ms).as_bytes());
    let body = drain(sub, sse::encode_item, preamble);
    Ok(held(
        response(StatusCode::OK, "text/event-stream", full(body)),
        &channel(Channel::Sse, &query.topic),
    ))
}

/// `GET /longpoll`: what is there now, or a hold on `l:TOPIC` after the last id, answered
/// empty (this body) when the timeout passes.
pub(crate) fn longpoll(app: &App, query: Query) -> Result<Response<Body>, ApiError> {
    let topic = query.topic.clone();
    let hold = match start(app, query)? {
        Start::Now(batch) => return Ok(batch_response(&batch)),
        Start::Hold(hold) => hold,
    };
    let after = hold.after();
    let empty = Batch {
        last_id: after,
        ..Batch::empty(app.hub.epoch(), false)
    };
    let mut resp = batch_response(&empty);
    let h = resp.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("response"));
    let channel = format!("{}; prev-id={after}", channel(Channel::LongPoll, &topic));
    h.insert("grip-channel", header_value(&channel)?);
    // GRIP's timeout is in whole seconds; rounding up never answers before the client asked.
    let secs = hold.remaining().as_millis().div_ceil(1000).max(1);
    h.insert("grip-timeout", header_value(&secs.to_string())?);
    Ok(resp)
}

/// `POST /ws`, a WebSocket's life as HTTP requests (Pushpin's WebSocket-over-HTTP): on `OPEN`,
/// accept, subscribe the connection to `w:TOPIC`, and send the hello and the backlog; a text
/// message from the client is published, as on `pushbench serve ws`; a close is returned.
pub(crate) async fn ws(
    app: &Arc<App>,
    req: Request<Incoming>,
    query: Query,
) -> Result<Response<Body>, ApiError> {
    let body = read_body(req.into_body(), MAX_WS_EVENTS_BODY).await?;
    let events = wsevents::parse(&body).ok_or_else(|| {
        ApiError::BadRequest("expected a WebSocket-over-HTTP (websocket-events) body".into())
    })?;
    let mut out = BytesMut::new();
    for WsEvent { kind, content } in events {
        match kind.as_str() {
            "OPEN" => {
                wsevents::put(&mut out, "OPEN", None);
                let subscribe = format!(
                    "c:{{\"type\":\"subscribe\",\"channel\":\"{}\"}}",
                    channel(Channel::Ws, &query.topic)
                );
                wsevents::put(&mut out, "TEXT", Some(subscribe.as_bytes()));
                let sub = app.hub.subscribe(&query.topic, query.after)?;
                // With the `grip` extension each text message to Pushpin is either a control
                // message (`c:`) or one for the client (`m:`).
                for item in items(sub) {
                    let mut text = b"m:".to_vec();
                    text.extend_from_slice(&ws_text(&item));
                    wsevents::put(&mut out, "TEXT", Some(&text));
                }
            }
            "TEXT" => {
                if let Some(grip) = &app.grip {
                    grip.publish(&app.hub, &query.topic, &content).await?;
                }
            }
            "CLOSE" => wsevents::put(&mut out, "CLOSE", Some(&content)),
            // PING is answered by Pushpin; PONG and DISCONNECT need nothing.
            _ => {}
        }
    }
    let mut resp = response(
        StatusCode::OK,
        "application/websocket-events",
        full(out.freeze()),
    );
    resp.headers_mut().insert(
        header::SEC_WEBSOCKET_EXTENSIONS,
        HeaderValue::from_static("grip"),
    );
    Ok(resp)
}

/// Everything a fresh subscription has now: the hello, the backlog, a gap.
fn items(mut sub: Subscription) -> Vec<Item> {
    let mut out = Vec::new();
    while let Ok(Some(item)) = sub.try_next() {
        out.push(item);
    }
    out
}

fn drain(sub: Subscription, encode: fn(&Item) -> Bytes, mut out: BytesMut) -> Bytes {
    for item in items(sub) {
        out.extend_from_slice(&encode(&item));
    }
    out.freeze()
}

/// A WebSocket text message's bytes for one item: the same JSON `pushbench serve ws` sends.
fn ws_text(item: &Item) -> Bytes {
    match item {
        Item::Hello(h) => Bytes::from(h.json()),
        Item::Event(e) => e.json(),
        Item::Gap(g) => Bytes::from(g.json()),
    }
}

/// `resp`, held by Pushpin as a stream on `channel`.
fn held(mut resp: Response<Body>, channel: &str) -> Response<Body> {
    let h = resp.headers_mut();
    h.insert("grip-hold", HeaderValue::from_static("stream"));
    if let Ok(v) = HeaderValue::from_str(channel) {
        h.insert("grip-channel", v);
    }
    resp
}

fn header_value(text: &str) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(text).map_err(|_| ApiError::BadRequest(format!("bad header {text:?}")))
}

/// Answers a request Pushpin forwarded, if it is for a subscribe endpoint.
pub(crate) async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
) -> Result<Option<Response<Body>>, ApiError> {
    use crate::protocol::Transport;
    let path = req.uri().path();
    let Some(transport) = Transport::ALL.into_iter().find(|t| t.path() == path) else {
        return Ok(None);
    };
    // Pushpin turns a client's WebSocket into POSTs (WebSocket-over-HTTP).
    match transport {
        Transport::Ws => crate::http::allow(&req, &http::Method::POST, "POST")?,
        _ => crate::http::allow(&req, &http::Method::GET, "GET, OPTIONS")?,
    }
    let query = Query::parse(req.uri().query())?;
    Ok(Some(match transport {
        Transport::Poll => crate::transport::poll::handle(app, query)?,
        Transport::LongPoll => longpoll(app, query)?,
        Transport::Stream => stream(app, query)?,
        Transport::Sse => sse(app, req.headers(), query)?,
        Transport::Ws => ws(app, req, query).await?,
    }))
}

//! The demo's own routes: the page, and the two controls, which answer only the page's own
//! origin (see `same_origin`).

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::http::{allow, full, json_response, read_body, response, ApiError, Body};
use crate::state::{drop_all_after, App, ConnSlot};

use super::settings::TOPIC;
use super::state::Demo;

const PATH_PAGE: &str = "/";
const PATH_SCRIPT: &str = "/demo/demo.js";
const PATH_STYLE: &str = "/demo/style.css";
const PATH_CONFIG: &str = "/demo/config";
const PATH_DROP_ALL: &str = "/demo/drop-all";

/// Largest `POST /demo/config` body; the real ones are a few dozen bytes.
const MAX_CONTROL_BODY: usize = 4096;

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/demo.js");
const STYLE: &str = include_str!("page/style.css");

/// Whether `path` is one of the demo's (the page's, or under `/demo/`).
pub(crate) fn owns(path: &str) -> bool {
    path == PATH_PAGE || path.starts_with("/demo/")
}

/// Answers a request for one of the demo's paths.
pub(crate) async fn route(
    app: &Arc<App>,
    demo: &Demo,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Result<Response<Body>, ApiError> {
    match req.uri().path() {
        PATH_PAGE => page(&req, "text/html; charset=utf-8", PAGE),
        PATH_SCRIPT => page(&req, "text/javascript; charset=utf-8", SCRIPT),
        PATH_STYLE => page(&req, "text/css; charset=utf-8", STYLE),
        PATH_CONFIG if req.method() == Method::POST => {
            same_origin(&req)?;
            let body = read_body(req.into_body(), MAX_CONTROL_BODY).await?;
            let next = demo
                .settings
                .borrow()
                .updated(&body)
                .map_err(|e| ApiError::BadRequest(e.to_string()))?;
            demo.settings.send_replace(next);
            Ok(config(app, demo))
        }
        PATH_CONFIG => {
            allow(&req, &Method::GET, "GET, POST, OPTIONS")?;
            Ok(config(app, demo))
        }
        PATH_DROP_ALL => {
            allow(&req, &Method::POST, "POST, OPTIONS")?;
            same_origin(&req)?;
            // Every connection but this one, which closes after the answer.
            let open = app
                .hub
                .stats()
                .snapshot()
                .connections_open
                .saturating_sub(1);
            let mut resp = json_response(
                StatusCode::OK,
                Bytes::from(serde_json::json!({ "connections": open }).to_string()),
            );
            drop_all_after(slot, &mut resp);
            Ok(resp)
        }
        other => Err(ApiError::NotFound(other.to_owned())),
    }
}

/// Whether `path` is one of the demo's controls, whose answers carry no CORS header.
pub(crate) fn is_control(path: &str) -> bool {
    path == PATH_CONFIG || path == PATH_DROP_ALL
}

/// Refuses a control request a browser sent from another page: one whose `Origin` is not this
/// server (the scheme and `Host` the request came to), or whose `Sec-Fetch-Site` says it came
/// from another site or origin.
///
/// Why not CORS alone: a cross-origin `POST` with a form's or plain text's content type is a
/// "simple" request, sent without a preflight. The browser hides the answer from the other
/// page, but the server has acted by then. Browsers send `Origin` with every `POST`, so
/// checking it stops that. A request without either header (curl, a script) is not a
/// browser's cross-site request and is served.
fn same_origin(req: &Request<Incoming>) -> Result<(), ApiError> {
    let headers = req.headers();
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = text("sec-fetch-site") {
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::Forbidden(format!(
                "demo controls answer only the demo page's own origin (Sec-Fetch-Site: {site})"
            )));
        }
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return Ok(());
    };
    let host = text("host").unwrap_or("");
    let own = origin
        .to_str()
        .ok()
        .and_then(|o| o.strip_prefix("http://"))
        .is_some_and(|authority| !host.is_empty() && authority.eq_ignore_ascii_case(host));
    if own {
        return Ok(());
    }
    Err(ApiError::Forbidden(format!(
        "demo controls answer only the demo page's own origin, not {}",
        String::from_utf8_lossy(origin.as_bytes())
    )))
}

fn page(
    req: &Request<Incoming>,
    content_type: &'static str,
    text: &'static str,
) -> Result<Response<Body>, ApiError> {
    allow(req, &Method::GET, "GET, OPTIONS")?;
    Ok(response(StatusCode::OK, content_type, full(text)))
}

/// `{"topic":..,"last_id":..,"epoch":..,"rate":..,"payload_bytes":..,"poll_interval_ms":..}`:
/// the page starts every client after `EPOCH-LAST_ID`, so all five see the same ids, and a
/// restart of the server is a reset to each of them rather than a silent mix of two lives.
fn config(app: &App, demo: &Demo) -> Response<Body> {
    let last_id = app.hub.read(TOPIC, None, 0).map_or(0, |b| b.last_id);
    let mut value = serde_json::to_value(*demo.settings.borrow()).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("topic".into(), TOPIC.into());
        map.insert("last_id".into(), last_id.into());
        map.insert("epoch".into(), app.hub.epoch().to_string().into());
    }
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}

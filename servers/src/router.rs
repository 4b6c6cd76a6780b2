//! Request routing, and the endpoints every server shares: publish, stats, metrics. The shared
//! state is `state`'s.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::demo::routes as demo;
use crate::gateway::api as gateway;
use crate::grip::instruct as grip;
use crate::http::{
    allow, full, head_size, json_response, read_body, response, ApiError, Body, Query,
};
use crate::protocol::{Transport, MAX_PAYLOAD_BYTES, PATH_METRICS, PATH_PUBLISH, PATH_STATS};
use crate::state::{App, ConnSlot};
use crate::stats::Stats;
use crate::transport;

/// Answers one request. Errors become JSON responses here, in one place.
pub(crate) async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    slot: ConnSlot,
) -> Response<Body> {
    let stats = app.hub.stats().clone();
    Stats::inc(&stats.requests);
    // The demo's controls are for its own page only: no CORS header on anything they answer,
    // preflights and refusals included (`demo::same_origin` has why).
    let control = app.demo.is_some() && demo::is_control(req.uri().path());
    let mut resp = match route(&app, req, &slot).await {
        Ok(resp) => resp,
        Err(err) => err.response(),
    };
    if control {
        resp.headers_mut()
            .remove(header::ACCESS_CONTROL_ALLOW_ORIGIN);
    }
    if resp.status().is_client_error() {
        Stats::inc(&stats.bad_requests);
    }
    resp
}

async fn route(
    app: &Arc<App>,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Result<Response<Body>, ApiError> {
    check_header_size(&req, app.config.max_header_bytes)?;
    if req.method() == Method::OPTIONS {
        return Ok(preflight());
    }
    let path = req.uri().path();
    if let Some(gw) = &app.gateway {
        if path != PATH_STATS && path != PATH_METRICS {
            return Ok(gateway::route(app, gw, req, slot).await);
        }
    }
    if path == PATH_PUBLISH {
        allow(&req, &Method::POST, "POST, OPTIONS")?;
        return publish(app, req).await;
    }
    if path == PATH_STATS {
        allow(&req, &Method::GET, "GET, OPTIONS")?;
        return Ok(stats(app));
    }
    if path == PATH_METRICS {
        allow(&req, &Method::GET, "GET, OPTIONS")?;
        let mut text = app.hub.stats().snapshot().prometheus(&app.label());
        if let Some(gw) = &app.gateway {
            text.push_str(&gw.stats().snapshot().prometheus("gateway"));
        }
        return Ok(response(
            StatusCode::OK,
            "text/plain; version=0.0.4",
            full(text),
        ));
    }
    if app.grip.is_some() {
        let path = path.to_owned();
        return grip::route(app, req).await?.ok_or(ApiError::NotFound(path));
    }
    let Some(&transport) = app.transports.iter().find(|t| t.path() == path) else {
        if let Some(demo) = &app.demo {
            if demo::owns(path) {
                return demo::route(app, demo, req, slot).await;
            }
        }
        return Err(ApiError::NotFound(path.to_owned()));
    };
    allow(&req, &Method::GET, "GET, OPTIONS")?;
    let query = Query::parse(req.uri().query())?;
    match transport {
        Transport::Poll => transport::poll::handle(app, query),
        Transport::LongPoll => transport::longpoll::handle(app, query).await,
        Transport::Stream => transport::stream::handle(app, query),
        Transport::Sse => transport::sse::handle(app, &req, query),
        Transport::Ws => transport::ws::handle(app, req, query, slot),
    }
}

/// hyper itself refuses heads past its buffer (with a bare 431); this smaller, configurable
/// limit answers with a JSON body like every other refusal.
fn check_header_size(req: &Request<Incoming>, limit: usize) -> Result<(), ApiError> {
    if head_size(req.uri().to_string().len(), req.headers()) > limit {
        return Err(ApiError::HeadersTooLarge(limit));
    }
    Ok(())
}

/// CORS preflight: browsers send it before a cross-origin `POST /publish` with a JSON content
/// type, or an `EventSource` polyfill's `Last-Event-ID` header.
fn preflight() -> Response<Body> {
    let mut resp = response(StatusCode::NO_CONTENT, "text/plain", full(Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Content-Type, Last-Event-ID, Authorization"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    resp
}

async fn publish(app: &Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_PAYLOAD_BYTES as u64) {
        return Err(ApiError::PayloadTooLarge(MAX_PAYLOAD_BYTES));
    }
    let query = Query::parse(req.uri().query())?;
    let body = read_body(req.into_body(), MAX_PAYLOAD_BYTES).await?;
    let id = match &app.grip {
        Some(grip) => grip.publish(&app.hub, &query.topic, &body).await?,
        None => app.hub.publish(&query.topic, &body)?,
    };
    Ok(json_response(
        StatusCode::OK,
        Bytes::from(format!("{{\"id\":{id},\"epoch\":\"{}\"}}", app.hub.epoch())),
    ))
}

fn stats(app: &App) -> Response<Body> {
    let mut value = serde_json::to_value(app.hub.stats().snapshot()).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        let names: Vec<_> = app.transports.iter().map(|t| t.name()).collect();
        map.insert("transports".into(), names.into());
        // Lets a load generator on the same machine find the process to sample.
        map.insert("pid".into(), std::process::id().into());
        if let Some(gw) = &app.gateway {
            let counters = serde_json::to_value(gw.stats().snapshot()).unwrap_or_default();
            map.insert("gateway".into(), counters);
        }
    }
    json_response(StatusCode::OK, Bytes::from(value.to_string()))
}

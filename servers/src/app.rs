//! Request routing and the endpoints every server shares: publish, stats, metrics.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::demo::{self, Demo};
use crate::drop_switch::DropSwitch;
use crate::fanout::Fanout;
use crate::gateway::{self, Gateway};
use crate::http::{full, head_size, json_response, read_body, response, ApiError, Body, Query};
use crate::hub::Hub;
use crate::protocol::{Transport, MAX_PAYLOAD_BYTES, PATH_METRICS, PATH_PUBLISH, PATH_STATS};
use crate::stats::{GaugeGuard, Stats};
use crate::transport;

/// What every request of one server shares.
#[derive(Debug)]
pub(crate) struct App {
    pub hub: Hub,
    pub config: ServerConfig,
    /// The subscribe endpoints this server answers; others are 404.
    pub transports: Vec<Transport>,
    /// Cancelled when graceful shutdown starts: streams end, held polls answer, sockets close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline passes: whatever is still open is cut.
    pub hard_stop: CancellationToken,
    /// Every connection task and every upgraded WebSocket, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cuts every open connection on demand (the demo's drop-all button).
    pub drops: DropSwitch,
    /// Writes events to caught-up lean subscribers from the publishing side.
    pub fanout: Fanout,
    /// The browser demo's page, controls and publisher, when this server is the demo.
    pub demo: Option<Arc<Demo>>,
    /// The push gateway's devices and queues, when this server is the gateway: then every
    /// path but `/stats` and `/metrics` is the gateway's.
    pub gateway: Option<Arc<Gateway>>,
}

impl App {
    /// A server's shared state, before it accepts anything.
    pub fn new(
        hub: Hub,
        config: ServerConfig,
        transports: &[Transport],
        demo: Option<Arc<Demo>>,
    ) -> App {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        App {
            fanout: Fanout::new(
                hub.clone(),
                config.keepalive,
                shutdown.clone(),
                tasks.clone(),
            ),
            hub,
            config,
            transports: transports.to_vec(),
            drops: DropSwitch::new(&shutdown),
            shutdown,
            hard_stop: CancellationToken::new(),
            tasks,
            demo,
            gateway: None,
        }
    }

    /// The `transport` label of this server's metrics.
    pub fn label(&self) -> String {
        if self.gateway.is_some() {
            return "gateway".to_owned();
        }
        if self.transports.len() == Transport::ALL.len() {
            return "all".to_owned();
        }
        let names: Vec<_> = self.transports.iter().map(|t| t.name()).collect();
        names.join("+")
    }
}

/// What a connection holds while it is open: its place under the connection cap, and the
/// `connections_open` gauge. A WebSocket upgrade takes it over, because the HTTP connection
/// task ends at the upgrade while the socket lives on.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    pub _permit: tokio::sync::OwnedSemaphorePermit,
    pub _open: GaugeGuard,
}

/// What a connection task shares with its requests.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The connection's guard, until a WebSocket upgrade takes it.
    guard: Mutex<Option<ConnGuard>>,
    /// Set by a request that asks for every connection to be cut once its own answer is sent
    /// (the demo's drop-all): cutting at once would cut that answer too.
    drop_all_after: AtomicBool,
}

impl Conn {
    pub fn new(guard: ConnGuard) -> Conn {
        Conn {
            guard: Mutex::new(Some(guard)),
            drop_all_after: AtomicBool::new(false),
        }
    }

    /// Whether a request on this connection asked for a drop-all after its answer.
    pub fn drop_all_requested(&self) -> bool {
        self.drop_all_after.load(Ordering::Relaxed)
    }
}

/// Shared between a connection task and its requests.
pub(crate) type ConnSlot = Arc<Conn>;

/// Takes the connection's guard (for a WebSocket upgrade).
pub(crate) fn take_guard(slot: &ConnSlot) -> Option<ConnGuard> {
    slot.guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Cuts every connection of the server once `resp` has been sent on this connection: the
/// response closes the connection, and the connection task then pulls the switch.
pub(crate) fn drop_all_after(slot: &ConnSlot, resp: &mut Response<Body>) {
    slot.drop_all_after.store(true, Ordering::Relaxed);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

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

/// Refuses any method but `method`, naming the allowed ones (`allow`) in the 405.
pub(crate) fn allow(
    req: &Request<Incoming>,
    method: &Method,
    allow: &'static str,
) -> Result<(), ApiError> {
    if req.method() == method {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow,
    })
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
    let id = app.hub.publish(&query.topic, &body)?;
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

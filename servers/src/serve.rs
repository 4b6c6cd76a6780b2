//! The accept loop every server shares: connection cap, write timeout, HTTP/1.1 settings,
//! graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{header, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::drop_switch::Ended;
use crate::head::{self, Prefixed, Sniffed};
use crate::http::ApiError;
use crate::hub::Hub;
use crate::lean::{self, Lean};
use crate::protocol::Transport;
use crate::router;
use crate::state::{self, App, Conn, ConnGuard};
use crate::stats::{GaugeGuard, Stats};
use crate::write_timeout::WriteTimeout;

/// hyper's own cap on a request head. Heads between [`ServerConfig::max_header_bytes`] and
/// this get our JSON 431; larger ones get hyper's bare 431 before any handler runs.
const HYPER_MAX_HEAD: usize = 64 * 1024;

/// How long a refused connection gets to read its 503 before it is closed.
const REJECT_LINGER: Duration = Duration::from_secs(2);

/// Refusals answered at once. Each holds a socket and a task for up to [`REJECT_LINGER`], so
/// without a cap a flood past the connection cap would cost exactly what the cap prevents;
/// past this, a refused socket is closed without an answer.
const MAX_REJECTING: usize = 64;

/// How a server's shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections still open when the deadline passed, which were cut.
    pub forced: usize,
}

/// Serves `transports` on `listener` until `shutdown` completes, then closes every connection
/// within [`ServerConfig::shutdown_deadline`].
///
/// The caller binds the listener, so tests can bind `127.0.0.1:0` and read the port.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ServerConfig,
    transports: &[Transport],
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let app = Arc::new(App::new(hub, config, transports, None));
    serve_app(listener, app, shutdown).await
}

/// [`serve`] for a server whose shared state the caller built (the demo's).
pub(crate) async fn serve_app(
    listener: TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let permits = Arc::new(Semaphore::new(app.config.max_connections));
    let rejecting = Arc::new(Semaphore::new(MAX_REJECTING));
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(app.config.header_read_timeout)
        .max_buf_size(HYPER_MAX_HEAD)
        .keep_alive(true);
    // Shared by every connection task, which holds it only until its first request is read.
    let builder = Arc::new(http);
    if let Some(trigger) = app.config.drop_all.clone() {
        app.tasks.spawn(drop_on(trigger, app.clone()));
    }

    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Push latency is the product: never let Nagle hold back a small frame.
                    let _ = stream.set_nodelay(true);
                    if let Some(bytes) = app.config.send_buffer {
                        set_send_buffer(&stream, bytes);
                    }
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => spawn_connection(&app, &builder, stream, permit),
                        Err(_) => {
                            Stats::inc(&app.hub.stats().connections_rejected);
                            if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                                spawn_rejection(&app, &builder, stream, permit);
                            }
                            // Otherwise `stream` is dropped here: closed unanswered.
                        }
                    }
                }
                Err(err) => {
                    // Typically EMFILE: back off instead of spinning, and keep serving the
                    // connections already open.
                    Stats::inc(&app.hub.stats().accept_errors);
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    drop(listener);
    app.shutdown.cancel();
    app.tasks.close();
    let deadline = tokio::time::sleep(app.config.shutdown_deadline);
    tokio::select! {
        () = app.tasks.wait() => ShutdownReport { forced: 0 },
        () = deadline => {
            let forced = app.tasks.len();
            tracing::warn!(forced, "shutdown deadline passed; cutting remaining connections");
            app.hard_stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), app.tasks.wait()).await;
            ShutdownReport { forced }
        }
    }
}

/// Sets `stream`'s `SO_SNDBUF`; a socket that refuses keeps the kernel's buffer, logged.
fn set_send_buffer(stream: &TcpStream, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt::SndBuf};
    if let Err(err) = setsockopt(stream, SndBuf, &bytes) {
        tracing::warn!(%err, bytes, "cannot set the send buffer");
    }
}

/// Drops every open connection each time `trigger` is notified, until shutdown.
async fn drop_on(trigger: Arc<tokio::sync::Notify>, app: Arc<App>) {
    loop {
        tokio::select! {
            () = app.shutdown.cancelled() => return,
            () = trigger.notified() => {
                tracing::info!("dropping every open connection");
                app.drops.drop_all();
            }
        }
    }
}

fn spawn_connection(
    app: &Arc<App>,
    builder: &Arc<http1::Builder>,
    stream: TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let stats = app.hub.stats().clone();
    Stats::inc(&stats.connections);
    let slot = Arc::new(Conn::new(ConnGuard {
        _permit: permit,
        _open: GaugeGuard::new(stats, |s| &s.connections_open),
    }));
    // Fires at shutdown or at a drop-all; waited on instead of the shutdown token, so the
    // drop switch costs this task nothing more per wake-up.
    let ended = app.drops.signal();
    let builder = builder.clone();
    let app = app.clone();
    app.tasks.clone().spawn(async move {
        // Each request decides who answers: a subscription is served without hyper
        // (`crate::head`, `crate::lean`), anything else by hyper, which then keeps the
        // connection. An idle connection closes at shutdown or a drop-all, as hyper closes its
        // idle ones.
        let mut stream = stream;
        let mut read_ahead = Bytes::new();
        loop {
            let first = if read_ahead.is_empty() {
                tokio::select! {
                    biased;
                    () = ended.cancelled() => return,
                    sniffed = head::sniff(&stream, app.config.header_read_timeout) => match sniffed {
                        Sniffed::Bytes(first) => first,
                        Sniffed::Nothing => return,
                    },
                }
            } else {
                std::mem::take(&mut read_ahead)
            };
            let Some(lean) = head::parse(&first).and_then(|h| lean::route(&app, &h)) else {
                let io =
                    WriteTimeout::new(stream, app.config.write_timeout, app.hub.stats().clone());
                // Boxed: this task's future is as large as its largest state, and hyper's
                // connection is several times a lean subscription's.
                Box::pin(serve_http(
                    &app,
                    &builder,
                    Prefixed::new(first, io),
                    slot,
                    ended,
                ))
                .await;
                return;
            };
            // Nothing of the request is kept while the subscription lives.
            drop(first);
            let start = match lean {
                Lean::LongPoll(start) => start,
                Lean::Subscribe(subscribe) => {
                    // Its own task from here, holding the connection's place; this one ends.
                    let tasks = Tracked {
                        tasks: &app.tasks,
                        guard: state::take_guard(&slot),
                    };
                    lean::spawn(&app, stream, subscribe, ended, tasks);
                    return;
                }
            };
            let Some(kept) = lean::serve_longpoll(&app, stream, start, &ended).await else {
                return;
            };
            (stream, read_ahead) = (kept.stream, kept.read_ahead);
        }
    });
}

/// A subscription's task: tracked like every connection's, so shutdown waits for it, and
/// holding the connection's guard (its place under `--max-connections`, the open-connections
/// gauge) until it ends.
struct Tracked<'a> {
    tasks: &'a TaskTracker,
    guard: Option<ConnGuard>,
}

impl lean::Spawn for Tracked<'_> {
    fn spawn<F: Future<Output = ()> + Send + 'static>(self, subscription: F) {
        let guard = self.guard;
        self.tasks.spawn(subscription.map(move |()| drop(guard)));
    }
}

/// Serves a connection's requests with hyper until it closes, the shutdown deadline passes or
/// a drop-all cuts it.
async fn serve_http(
    app: &Arc<App>,
    builder: &http1::Builder,
    io: Prefixed<WriteTimeout<TcpStream>>,
    slot: Arc<Conn>,
    ended: tokio_util::sync::CancellationToken,
) {
    let svc_app = app.clone();
    let svc_slot = slot.clone();
    let service = service_fn(move |req| {
        let app = svc_app.clone();
        let slot = svc_slot.clone();
        async move { Ok::<_, Infallible>(router::handle(app, req, slot).await) }
    });
    let conn = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = ended.cancelled() => match Ended::cause(&app.shutdown) {
            // Dropping `conn` closes the socket mid-response, as a network failure would.
            Ended::Dropped => return,
            Ended::Shutdown => {
                // Idle keep-alive connections close at once; busy ones finish their
                // response, and every streaming body ends itself on the same signal.
                conn.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = app.hard_stop.cancelled() => {}
                }
            }
        },
    }
    if slot.drop_all_requested() {
        app.drops.drop_all();
    }
}

/// Answers a connection past the cap with 503 and closes it, so the client learns why instead
/// of hanging in the accept backlog. `permit` is its place under [`MAX_REJECTING`].
fn spawn_rejection(
    app: &Arc<App>,
    builder: &http1::Builder,
    stream: TcpStream,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let max = app.config.max_connections;
    let service = service_fn(move |_req| async move {
        let mut resp = ApiError::Unavailable(format!(
            "connection limit reached ({max} open); try again later"
        ))
        .response();
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        Ok::<_, Infallible>(resp)
    });
    let mut builder = http1::Builder::clone(builder);
    builder.keep_alive(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let shutdown = app.shutdown.clone();
    app.tasks.spawn(async move {
        // Shutdown need not wait for a refusal.
        tokio::select! {
            _ = tokio::time::timeout(REJECT_LINGER, conn) => {}
            () = shutdown.cancelled() => {}
        }
        drop(permit);
    });
}

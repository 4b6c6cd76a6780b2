//! Long-lived subscriptions served without hyper, once their head is parsed.
//!
//! Why: through hyper, a streaming response keeps the connection's read and write buffers
//! (about 14 KiB together) for its whole life, though after the head it only ever writes, and a
//! held long poll keeps them (and the request) while it waits. Here a subscription holds its
//! socket, its cursor into the topic's ring ([`Subscription`]) or its waiter, a timer, and a
//! write buffer that exists only while the socket is full. The wire bytes are the ones hyper
//! would write: the same status and headers (built by the transport for both paths), chunked
//! coding or `content-length`, and the terminating chunk when a stream ends at a shutdown or a
//! slow-subscriber disconnect.
//!
//! Which requests come here is [`route`]'s choice: a complete, valid subscribe request that the
//! transport accepts, read whole by the connection's first read ([`crate::head`]); everything
//! else, errors included, is answered by hyper, so every refusal keeps its one JSON shape. A
//! long poll's connection comes back after each answer ([`Kept`]), so a client that polls on
//! one connection stays here poll after poll.
//!
//! A WebSocket upgrade is answered here with the 101 head hyper would send, and the bare socket
//! goes to tokio-tungstenite ([`transport::ws::serve_upgraded`]), whose state is made only while
//! a frame is read. On the gateway, a device's
//! connection is the one request served here (`crate::gateway`'s `direct`). Through hyper, the upgraded
//! socket lived inside hyper's `Upgraded` (a boxed socket and its read-ahead), under the
//! session's own buffers.
//!
//! # Layout
//!
//! - `conn`: the socket and its writes, chunked coding, response heads.
//! - `stream`: HTTP streaming and SSE.
//! - `longpoll`: held long polls.
//! - `shared`: a socket shared with the topic's fan-out, as IO for the subscriber's task.
//! - `footprint`: what each subscription's own state takes in this build.

mod conn;
pub(crate) mod footprint;
mod longpoll;
mod shared;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::Version;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::Opened;
use crate::gateway::registry::Device;
use crate::gateway::session as gateway;
use crate::head::Head;
use crate::http::Query;
use crate::hub::Subscription;
use crate::protocol::Transport;
use crate::state::App;
use crate::stats::Stats;
use crate::transport;
use crate::transport::longpoll::Start;
use crate::write_timeout::WriteTimeout;

use conn::{head_bytes, AsTcp, Conn, Length};
use shared::Shared;

/// What a head opens, to be served here.
// It lives on the stack from routing to serving only, so its size costs nothing held.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Lean {
    /// A long poll, read once: answered now or held. Its connection comes back after.
    LongPoll(Start),
    /// A subscription, which holds its connection to the end.
    Subscribe(Subscribe),
}

/// A subscription opened from a head.
pub(crate) enum Subscribe {
    /// HTTP streaming or SSE on `topic`.
    Stream { opened: Opened, topic: String },
    /// A WebSocket whose upgrade was accepted: `accept` is its `Sec-WebSocket-Accept`.
    Ws {
        accept: String,
        sub: Subscription,
        topic: String,
    },
    /// A gateway device's connection whose upgrade was accepted.
    Device { accept: String, device: Arc<Device> },
}

/// A connection that stays open for its next request, and what of it was read already.
pub(crate) struct Kept {
    pub stream: TcpStream,
    pub read_ahead: Bytes,
}

/// The subscription `head` opens, if it is one this module serves and the transport accepts it.
pub(crate) fn route(app: &App, head: &Head) -> Option<Lean> {
    if head.size > app.config.max_header_bytes {
        return None;
    }
    if let Some(gw) = &app.gateway {
        let (accept, device) = gateway::open_lean(gw, head)?;
        return Some(Lean::Subscribe(Subscribe::Device { accept, device }));
    }
    let transport = *app.transports.iter().find(|t| t.path() == head.path)?;
    let query = Query::parse(head.query.as_deref()).ok()?;
    match transport {
        Transport::Stream => {
            let topic = query.topic.clone();
            let opened = transport::stream::open(app, query).ok()?;
            Some(Lean::Subscribe(Subscribe::Stream { opened, topic }))
        }
        Transport::Sse => {
            let topic = query.topic.clone();
            let last_event_id = head.headers.get("last-event-id").map(|v| v.as_bytes());
            let opened = transport::sse::open(app, last_event_id, query).ok()?;
            Some(Lean::Subscribe(Subscribe::Stream { opened, topic }))
        }
        Transport::Ws => {
            let (accept, sub) =
                transport::ws::open(app, Version::HTTP_11, &head.headers, &query).ok()?;
            Some(Lean::Subscribe(Subscribe::Ws {
                accept,
                sub,
                topic: query.topic,
            }))
        }
        Transport::LongPoll => transport::longpoll::start(app, query)
            .ok()
            .map(Lean::LongPoll),
        Transport::Poll => None,
    }
}

/// Answers the long poll `start` on `stream`; `Some` if the connection stays open for another
/// request. Boxed: the connection task that awaits it stays as small as its other states.
pub(crate) fn serve_longpoll<'a>(
    app: &'a App,
    stream: TcpStream,
    start: Start,
    ended: &'a CancellationToken,
) -> Pin<Box<dyn Future<Output = Option<Kept>> + Send + 'a>> {
    Stats::inc(&app.hub.stats().requests);
    let io = WriteTimeout::new(stream, app.config.write_timeout, app.hub.stats().clone());
    Box::pin(longpoll::serve_longpoll(app, io, start, ended))
}

/// Where a subscription's task goes: the server's tracked tasks, holding the connection's
/// guard until the subscription ends.
pub(crate) trait Spawn {
    fn spawn<F: Future<Output = ()> + Send + 'static>(self, subscription: F);
}

/// Serves `subscribe` on `stream` as a task of its own (see `stream` and
/// [`transport::ws::serve_upgraded`]) until it ends or `ended` fires.
///
/// Why a task of its own: the connection task that read the head ends here, so a subscription
/// holds one task, sized to its own state, instead of also keeping the connection's (its
/// sniffing and parsing states, about 600 bytes) for its whole life.
pub(crate) fn spawn(
    app: &Arc<App>,
    stream: TcpStream,
    subscribe: Subscribe,
    ended: CancellationToken,
    tasks: impl Spawn,
) {
    Stats::inc(&app.hub.stats().requests);
    match subscribe {
        // Built before it is spawned: an `async` block around the call would keep its arguments
        // beside the future made of them.
        Subscribe::Stream { opened, topic } => {
            tasks.spawn(stream::serve_stream(
                app.clone(),
                stream,
                topic,
                opened,
                ended,
            ));
        }
        Subscribe::Ws { accept, sub, topic } => {
            // Registered with the topic's fan-out, which writes its events while it is caught
            // up (`transport::ws::serve_upgraded`).
            let registration = app.fanout.register(&topic, stream, transport::ws::FRAMING);
            let entry = registration.entry_arc();
            let Some(conn) = upgrade(app, registration, &accept) else {
                return;
            };
            let (app, direct) = (app.clone(), Some(entry));
            match conn.into_flushed() {
                // As good as always: the 101 went whole, and the session's future is the task.
                Ok(io) => tasks.spawn(transport::ws::serve_upgraded(app, io, sub, ended, direct)),
                Err(mut conn) => tasks.spawn(async move {
                    if conn.flush().await.is_ok() {
                        let io = conn.io;
                        transport::ws::serve_upgraded(app, io, sub, ended, direct).await;
                    }
                }),
            }
        }
        Subscribe::Device { accept, device } => {
            // Shared with the gateway's send path, which writes the device's messages while its
            // session is caught up.
            let socket = Arc::new(stream);
            let Some(conn) = upgrade(app, socket.clone(), &accept) else {
                return;
            };
            let app = app.clone();
            match conn.into_flushed() {
                Ok(io) => tasks.spawn(gateway::serve_lean(app, device, io, socket, ended)),
                Err(mut conn) => tasks.spawn(async move {
                    if conn.flush().await.is_ok() {
                        gateway::serve_lean(app, device, conn.io, socket, ended).await;
                    }
                }),
            }
        }
    }
}

/// Starts the answer to an accepted WebSocket upgrade: the 101 head hyper would send, written
/// as far as the socket takes it (flush the rest), on a connection ready for the WebSocket.
fn upgrade<H: AsTcp + Unpin>(app: &App, holder: H, accept: &str) -> Option<Conn<Shared<H>>> {
    let stats = app.hub.stats().clone();
    let io = WriteTimeout::new(Shared::new(holder), app.config.write_timeout, stats);
    let mut conn = Conn::new(io);
    // Never fails: `accept` is base64, a valid header value.
    let resp = transport::ws::switching_protocols(accept).ok()?;
    conn.try_write(&[&head_bytes(&resp.map(|_| ()), Length::Upgrade)]);
    Some(conn)
}

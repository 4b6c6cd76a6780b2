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
//! goes to tokio-tungstenite ([`transport::ws::serve_upgraded`]). On the gateway, a device's
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

mod conn;
mod longpoll;
mod shared;
mod stream;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use http::Version;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::Opened;
use crate::gateway::{self, Device};
use crate::head::Head;
use crate::http::Query;
use crate::hub::Subscription;
use crate::protocol::Transport;
use crate::stats::Stats;
use crate::transport;
use crate::transport::longpoll::Start;
use crate::write_timeout::WriteTimeout;

use conn::{head_bytes, AsTcp, Conn, Length};
use shared::Shared;

/// A subscription opened from a head, to be served here.
pub(crate) enum Lean {
    /// HTTP streaming or SSE on `topic`.
    Stream { opened: Opened, topic: String },
    /// A WebSocket whose upgrade was accepted: `accept` is its `Sec-WebSocket-Accept`.
    Ws {
        accept: String,
        sub: Subscription,
        topic: String,
    },
    /// A long poll, read once: answered now or held.
    LongPoll(Start),
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
        return Some(Lean::Device { accept, device });
    }
    let transport = *app.transports.iter().find(|t| t.path() == head.path)?;
    let query = Query::parse(head.query.as_deref()).ok()?;
    match transport {
        Transport::Stream => {
            let topic = query.topic.clone();
            let opened = transport::stream::open(app, query).ok()?;
            Some(Lean::Stream { opened, topic })
        }
        Transport::Sse => {
            let topic = query.topic.clone();
            let last_event_id = head.headers.get("last-event-id").map(|v| v.as_bytes());
            let opened = transport::sse::open(app, last_event_id, query).ok()?;
            Some(Lean::Stream { opened, topic })
        }
        Transport::Ws => {
            let (accept, sub) =
                transport::ws::open(app, Version::HTTP_11, &head.headers, &query).ok()?;
            Some(Lean::Ws {
                accept,
                sub,
                topic: query.topic,
            })
        }
        Transport::LongPoll => transport::longpoll::start(app, query)
            .ok()
            .map(Lean::LongPoll),
        Transport::Poll => None,
    }
}

/// Serves `lean` on `stream` until it ends (see `stream`, `longpoll` and
/// [`transport::ws::serve_upgraded`]); `Some` if the connection stays open for another request.
/// Boxed: the connection task that awaits it stays as small as the subscription it serves.
pub(crate) fn serve<'a>(
    app: &'a App,
    stream: TcpStream,
    lean: Lean,
    ended: &'a CancellationToken,
) -> Pin<Box<dyn Future<Output = Option<Kept>> + Send + 'a>> {
    Stats::inc(&app.hub.stats().requests);
    let io = |stream| WriteTimeout::new(stream, app.config.write_timeout, app.hub.stats().clone());
    match lean {
        // Built before it is boxed: an `async` block around the call would keep its
        // arguments beside the future made of them.
        Lean::Stream { opened, topic } => {
            Box::pin(stream::serve_stream(app, stream, topic, opened, ended).map(|()| None))
        }
        Lean::LongPoll(start) => Box::pin(longpoll::serve_longpoll(app, io(stream), start, ended)),
        Lean::Ws { accept, sub, topic } => {
            // Registered with the topic's fan-out, which writes its events while it is caught
            // up (`transport::ws::serve_upgraded`).
            let registration = app.fanout.register(&topic, stream, transport::ws::FRAMING);
            let entry = registration.entry_arc();
            let Some(mut conn) = upgrade(app, registration, &accept) else {
                return Box::pin(std::future::ready(None));
            };
            let ended = ended.clone();
            Box::pin(async move {
                if conn.flush().await.is_ok() {
                    let direct = Some(entry);
                    transport::ws::serve_upgraded(app, conn.io, sub, &topic, ended, direct).await;
                }
                None
            })
        }
        Lean::Device { accept, device } => {
            // Shared with the gateway's send path, which writes the device's messages while its
            // session is caught up.
            let socket = Arc::new(stream);
            let Some(mut conn) = upgrade(app, socket.clone(), &accept) else {
                return Box::pin(std::future::ready(None));
            };
            let ended = ended.clone();
            Box::pin(async move {
                if conn.flush().await.is_ok() {
                    gateway::serve_lean(app, device, conn.io, socket, ended).await;
                }
                None
            })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a lean subscription's future holds, for the README's account of a connection's
    /// memory and against regressions: the whole of its state but the socket's registration,
    /// the keep-alive timer's entry and, for a WebSocket, tungstenite's buffers.
    #[tokio::test]
    async fn a_subscriptions_future_stays_small() {
        use crate::config::{HubConfig, ServerConfig};
        let transports = [
            Transport::LongPoll,
            Transport::Stream,
            Transport::Sse,
            Transport::Ws,
        ];
        let hub = crate::hub::Hub::new(HubConfig::default());
        let app = App::new(hub, ServerConfig::default(), &transports, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ended = CancellationToken::new();
        for (request, most) in [
            (&b"GET /stream HTTP/1.1\r\n\r\n"[..], 1024),
            (b"GET /sse HTTP/1.1\r\n\r\n", 1024),
            (b"GET /longpoll HTTP/1.1\r\n\r\n", 1024),
            (
                b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                  Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                2048,
            ),
        ] {
            let _client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (socket, _) = listener.accept().await.unwrap();
            let head = crate::head::parse(request).unwrap();
            let lean = route(&app, &head).unwrap();
            let future = serve(&app, socket, lean, &ended);
            let size = std::mem::size_of_val(&*future);
            println!("{}: {size} bytes", head.path);
            assert!(size <= most, "{}: {size} bytes", head.path);
        }
    }
}

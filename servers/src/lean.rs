//! Streaming, SSE and WebSocket subscriptions served without hyper, once their head is parsed.
//!
//! Why: through hyper, a streaming response keeps the connection's read and write buffers
//! (about 14 KiB together) for its whole life, though after the head it only ever writes. Here
//! a subscription holds its socket, its cursor into the topic's ring ([`Subscription`]), a
//! keep-alive timer, and a write buffer that exists only while the socket is full. The wire
//! bytes are the ones hyper would write: the same status and headers ([`Opened::head`], built
//! by the transport for both paths), chunked transfer coding, and the terminating chunk when
//! the stream ends at a shutdown or a slow-subscriber disconnect.
//!
//! Which requests come here is [`route`]'s choice: only a connection's first request, and only
//! when it is a complete, valid subscribe request that the transport accepts; everything else,
//! errors included, is answered by hyper, so every refusal keeps its one JSON shape.
//!
//! A burst of events (all that is ready when the subscriber wakes, up to [`BURST`]) goes out
//! as one chunk in one `writev`.
//!
//! A WebSocket upgrade is answered here with the 101 head hyper would send, and the bare socket
//! goes to tokio-tungstenite ([`transport::ws::serve_upgraded`]). Through hyper, the upgraded
//! socket lived inside hyper's `Upgraded` (a boxed socket and its read-ahead), under the
//! session's own buffers.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::time::SystemTime;

use bytes::Bytes;
use http::{Response, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::body::{Framing, Opened};
use crate::drop_switch::Ended;
use crate::head::Head;
use crate::http::Query;
use crate::hub::{Item, Subscription};
use crate::protocol::Transport;
use crate::stats::Stats;
use crate::transport;
use crate::write_timeout::WriteTimeout;

/// Items written together at most, as one chunk.
const BURST: usize = 16;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A subscription opened from a head, to be served here.
pub(crate) enum Lean {
    /// HTTP streaming or SSE.
    Stream(Opened),
    /// A WebSocket whose upgrade was accepted: `accept` is its `Sec-WebSocket-Accept`.
    Ws {
        accept: String,
        sub: Subscription,
        topic: String,
    },
}

/// The subscription `head` opens, if it is one this module serves and the transport accepts it.
pub(crate) fn route(app: &App, head: &Head) -> Option<Lean> {
    if app.gateway.is_some() || head.size > app.config.max_header_bytes {
        return None;
    }
    let transport = *app.transports.iter().find(|t| t.path() == head.path)?;
    let query = Query::parse(head.query.as_deref()).ok()?;
    match transport {
        Transport::Stream => transport::stream::open(app, query).ok().map(Lean::Stream),
        Transport::Sse => {
            let last_event_id = head.headers.get("last-event-id").map(|v| v.as_bytes());
            transport::sse::open(app, last_event_id, query)
                .ok()
                .map(Lean::Stream)
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
        Transport::Poll | Transport::LongPoll => None,
    }
}

/// Serves `lean` on `stream` until it ends (see [`serve_stream`] and
/// [`transport::ws::serve_upgraded`]). Boxed: the connection task that awaits it stays as
/// small as the subscription it serves.
pub(crate) fn serve<'a>(
    app: &'a App,
    stream: TcpStream,
    lean: Lean,
    ended: &'a CancellationToken,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Stats::inc(&app.hub.stats().requests);
    let io = WriteTimeout::new(stream, app.config.write_timeout, app.hub.stats().clone());
    match lean {
        Lean::Stream(opened) => Box::pin(serve_stream(app, io, opened, ended)),
        Lean::Ws { accept, sub, topic } => {
            let mut conn = Conn {
                io,
                pending: Vec::new(),
            };
            match transport::ws::switching_protocols(&accept) {
                Ok(resp) => conn.try_write(&[&head_bytes(&resp.map(|_| ()), false)]),
                // Never: `accept` is base64, a valid header value.
                Err(_) => return Box::pin(std::future::ready(())),
            }
            let ended = ended.clone();
            Box::pin(async move {
                if conn.flush().await.is_ok() {
                    transport::ws::serve_upgraded(app, conn.io, sub, &topic, ended).await;
                }
            })
        }
    }
}

/// What ended the stream.
enum End {
    /// The server shuts down, or the subscriber is too slow and disconnected: the body ends
    /// properly, so the client knows to resume rather than suspect the network.
    Finish,
    /// The peer left, a write failed, or the demo cut every connection: close at once.
    Cut,
}

/// Streams `opened` on `io` until the peer leaves, the hub disconnects it as slow, or
/// `ended` fires (shutdown or a drop-all).
///
/// Not an `async fn`: the future keeps only what the stream needs. An `async fn` would keep its
/// arguments (the request's whole response head among them) for its whole life beside the
/// parts taken out of them.
fn serve_stream<'a>(
    app: &'a App,
    io: WriteTimeout<TcpStream>,
    opened: Opened,
    ended: &'a CancellationToken,
) -> impl Future<Output = ()> + Send + 'a {
    let Opened {
        mut sub,
        framing,
        preamble,
        head,
        open,
    } = opened;
    let mut conn = Conn {
        io,
        pending: Vec::new(),
    };
    conn.try_write(&[&head_bytes(&head, true)]);
    drop(head);
    if let Some(p) = preamble {
        conn.try_chunk(&[p]);
    }
    async move {
        let _open = open;
        let end = match conn.flush().await {
            Ok(()) => stream_items(&mut conn, &mut sub, framing, app, ended).await,
            Err(_) => End::Cut,
        };
        if let End::Finish = end {
            conn.try_write(&[LAST_CHUNK]);
            // A peer that stopped reading does not hold the shutdown past its deadline.
            tokio::select! {
                _ = conn.flush() => {}
                () = app.hard_stop.cancelled() => {}
            }
        }
    }
}

/// What the stream does next.
enum Next {
    Stop(End),
    Item(Item),
    KeepAlive,
    Readable,
}

async fn stream_items(
    conn: &mut Conn,
    sub: &mut Subscription,
    framing: Framing,
    app: &App,
    ended: &CancellationToken,
) -> End {
    let keepalive = app.config.keepalive;
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Registered once, not per event: a fresh `cancelled()` per wake-up would lock the token's
    // waiter list for every delivery.
    let cancelled = ended.cancelled();
    tokio::pin!(cancelled);
    loop {
        let next = tokio::select! {
            biased;
            () = &mut cancelled => Next::Stop(match Ended::cause(&app.shutdown) {
                Ended::Dropped => End::Cut,
                Ended::Shutdown => End::Finish,
            }),
            item = sub.next() => match item {
                Ok(item) => Next::Item(item),
                Err(_slow) => Next::Stop(End::Finish),
            },
            _ = ticker.tick() => Next::KeepAlive,
            ready = conn.io.get_ref().readable() => match ready {
                Ok(()) => Next::Readable,
                Err(_) => Next::Stop(End::Cut),
            },
        };
        let stop = match next {
            Next::Stop(end) => return end,
            Next::Item(first) => conn.try_burst(sub, framing, first),
            Next::KeepAlive => {
                conn.try_chunk(&[Bytes::from_static(framing.keepalive)]);
                None
            }
            Next::Readable => match conn.drain_input() {
                Ok(()) => None,
                Err(_) => return End::Cut,
            },
        };
        if conn.flush().await.is_err() {
            return End::Cut;
        }
        if let Some(end) = stop {
            return end;
        }
    }
}

/// A subscriber's socket, and what it could not take yet.
struct Conn {
    io: WriteTimeout<TcpStream>,
    /// Bytes the socket had no room for. Empty, and unallocated, but while the socket is full.
    pending: Vec<u8>,
}

impl Conn {
    /// Writes `first` and whatever else is ready, up to [`BURST`] items, as one chunk; returns
    /// how the stream must end if the hub found the subscriber too slow meanwhile.
    fn try_burst(&mut self, sub: &mut Subscription, framing: Framing, first: Item) -> Option<End> {
        let mut items: [Bytes; BURST] = Default::default();
        items[0] = (framing.encode)(&first);
        let mut n = 1;
        let mut stop = None;
        while n < BURST {
            match sub.try_next() {
                Ok(Some(item)) => {
                    items[n] = (framing.encode)(&item);
                    n += 1;
                }
                Ok(None) => break,
                Err(_slow) => {
                    stop = Some(End::Finish);
                    break;
                }
            }
        }
        self.try_chunk(&items[..n]);
        stop
    }

    /// Writes `items` as one chunk, as far as the socket takes it.
    fn try_chunk(&mut self, items: &[Bytes]) {
        let len: usize = items.iter().map(Bytes::len).sum();
        if len == 0 {
            // An empty chunk would end the body.
            return;
        }
        let mut size = [0u8; 18];
        let size = chunk_size(len, &mut size);
        let mut parts: [&[u8]; BURST + 2] = [&[]; BURST + 2];
        parts[0] = size;
        for (part, item) in parts[1..].iter_mut().zip(items) {
            *part = item;
        }
        parts[items.len() + 1] = b"\r\n";
        self.try_write(&parts[..items.len() + 2]);
    }

    /// Writes `parts` in one system call as far as the socket takes them, and keeps the rest
    /// for [`Conn::flush`]. Nothing is written past bytes already pending.
    fn try_write(&mut self, parts: &[&[u8]]) {
        let mut written = 0;
        if self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); BURST + 2];
            for (slice, part) in slices.iter_mut().zip(parts) {
                *slice = IoSlice::new(part);
            }
            // Any error (a full socket, a peer gone) leaves the bytes pending; the flush meets
            // it again and decides.
            written = self
                .io
                .get_ref()
                .try_write_vectored(&slices[..parts.len()])
                .unwrap_or(0);
        }
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            self.pending.extend_from_slice(&part[skip..]);
        }
    }

    /// Waits until every pending byte is written (or the write timeout cuts the peer), then
    /// frees the buffer.
    async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.pending).await?;
        self.pending = Vec::new();
        Ok(())
    }

    /// Reads and drops what the peer sent after its request: nothing is answered on this
    /// connection again. An error, or the end of the input (the peer closed), ends the stream.
    fn drain_input(&mut self) -> io::Result<()> {
        let mut buf = [0u8; 256];
        loop {
            match self.io.get_ref().try_read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// `len` as a chunk-size line, in `buf`.
fn chunk_size(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// The status line and headers of `head`, as hyper writes them (for a chunked body if
/// `chunked`).
fn head_bytes(head: &Response<()>, chunked: bool) -> Vec<u8> {
    let status = head.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        let mut buf = [0; 18];
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (85, "55\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(chunk_size(len, &mut buf), want.as_bytes(), "{len}");
        }
    }

    /// What a lean subscription's future holds, for the README's account of a connection's
    /// memory and against regressions: the whole of its state but the socket's registration,
    /// the keep-alive timer's entry and, for a WebSocket, tungstenite's buffers.
    #[tokio::test]
    async fn a_subscriptions_future_stays_small() {
        use crate::config::{HubConfig, ServerConfig};
        let transports = [Transport::Stream, Transport::Sse, Transport::Ws];
        let hub = crate::hub::Hub::new(HubConfig::default());
        let app = App::new(hub, ServerConfig::default(), &transports, None);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ended = CancellationToken::new();
        for (request, most) in [
            (&b"GET /stream HTTP/1.1\r\n\r\n"[..], 1024),
            (b"GET /sse HTTP/1.1\r\n\r\n", 1024),
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

    #[test]
    fn the_head_is_what_hyper_would_send() {
        let head = crate::http::head(http::StatusCode::OK, "text/event-stream");
        let text = String::from_utf8(head_bytes(&head, true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
        assert!(text.contains("\r\naccess-control-allow-origin: *\r\n"));
        assert!(text.contains("\r\ntransfer-encoding: chunked\r\ndate: "));
        assert!(text.ends_with(" GMT\r\n\r\n"));
    }
}

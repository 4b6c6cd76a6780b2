//! WebSocket: `GET /ws?topic=T&after=ID` upgrades, then sends one text frame per event. Text
//! frames from the client are published to the topic: the in-band upstream path.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::drop_switch::Ended;
use crate::fanout::Entry;
use crate::framing::{text_frame_head, Framing, MAX_FRAME_HEAD};
use crate::http::{full, response, ApiError, Body, Query};
use crate::hub::{Item, Subscription};
use crate::state::{take_guard, App, ConnGuard, ConnSlot};
use crate::stats::GaugeGuard;

mod lazy;

pub(crate) use lazy::{server_socket, LazyWs};

/// How long a closing socket waits for the client's answering Close frame.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// How the publishing side's fan-out (`crate::fanout`) writes events to a lean WebSocket: one
/// text frame each, with no chunking.
pub(crate) const FRAMING: Framing = Framing {
    name: "ws",
    encode: frame_bytes,
    // The fan-out pings a direct subscriber of an idle topic.
    keepalive: &PING,
    chunked: false,
};

/// `item` as one unmasked text frame (RFC 6455 §5.2), the bytes tungstenite writes for it.
pub fn frame_bytes(item: &Item) -> Bytes {
    let payload = match item {
        Item::Hello(h) => Bytes::from(h.json()),
        Item::Event(e) => e.json(),
        Item::Gap(g) => Bytes::from(g.json()),
    };
    let mut head = [0u8; MAX_FRAME_HEAD];
    let head = text_frame_head(payload.len(), &mut head);
    let mut out = BytesMut::with_capacity(head.len() + payload.len());
    out.put_slice(head);
    out.put_slice(&payload);
    out.freeze()
}

/// Checks the upgrade and opens the subscription `GET /ws` asks for; returns its
/// `Sec-WebSocket-Accept` value with it.
pub(crate) fn open(
    app: &App,
    version: Version,
    headers: &HeaderMap,
    query: &Query,
) -> Result<(String, Subscription), ApiError> {
    let accept = check_upgrade(version, headers)?;
    let sub = app.hub.subscribe(&query.topic, query.after)?;
    Ok((accept, sub))
}

pub(crate) fn handle(
    app: &Arc<App>,
    req: Request<Incoming>,
    query: Query,
    slot: &ConnSlot,
) -> Result<Response<Body>, ApiError> {
    let (accept, sub) = open(app, req.version(), req.headers(), &query)?;
    let ended = app.drops.signal();
    let task_app = app.clone();
    spawn_session(app, req, slot, move |io| {
        run_session(task_app, LazyWs::new(io), sub, ended, None)
    });
    switching_protocols(&accept)
}

/// Serves a subscription whose upgrade was answered without hyper ([`crate::lean`]) on `io`,
/// until it ends or the shutdown deadline cuts it. `direct`: the socket's entry with its topic's
/// fan-out, which writes the events while the subscriber is caught up.
///
pub(crate) fn serve_upgraded<S>(
    app: Arc<App>,
    io: S,
    sub: Subscription,
    ended: CancellationToken,
    direct: Option<Arc<Entry>>,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session_app = app.clone();
    serve_raw(app, io, |io| {
        run_session(session_app, LazyWs::new(io), sub, ended, direct)
    })
}

/// Runs `session` on `io`, a socket whose upgrade was answered without hyper, holding the
/// `subscribers_open` gauge, until it ends or the shutdown deadline cuts it.
///
/// Not an `async fn`, and everything owned: the session's future is made here and polled in
/// place ([`UntilStopped`]), so the task keeps the session's arguments once, inside it. An
/// `async` wrapper would keep them a second time beside it.
pub(crate) fn serve_raw<S, F, Fut>(app: Arc<App>, io: S, session: F) -> UntilStopped<Fut>
where
    F: FnOnce(S) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    UntilStopped {
        _open: GaugeGuard::new(app.hub.stats().clone(), |s| &s.subscribers_open),
        stop: app.hard_stop.clone().cancelled_owned(),
        session: session(io),
    }
}

pin_project_lite::pin_project! {
    /// A session, polled until it ends or the shutdown deadline passes.
    pub(crate) struct UntilStopped<F> {
        _open: GaugeGuard,
        #[pin]
        stop: WaitForCancellationFutureOwned,
        #[pin]
        session: F,
    }
}

impl<F: std::future::Future<Output = ()>> std::future::Future for UntilStopped<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        let this = self.project();
        match this.session.poll(cx) {
            std::task::Poll::Pending => this.stop.poll(cx),
            std::task::Poll::Ready(()) => std::task::Poll::Ready(()),
        }
    }
}

/// The 101 answer to a WebSocket upgrade whose key gave `accept`.
pub(crate) fn switching_protocols(accept: &str) -> Result<Response<Body>, ApiError> {
    let mut resp = response(
        StatusCode::SWITCHING_PROTOCOLS,
        "text/plain",
        full(Bytes::new()),
    );
    let h = resp.headers_mut();
    h.remove(header::CONTENT_TYPE);
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(accept).map_err(|e| ApiError::BadRequest(e.to_string()))?,
    );
    Ok(resp)
}

/// Upgrades `req` and runs `session` on the upgraded IO, as a tracked task that holds the
/// connection's guard and the `subscribers_open` gauge for the socket's life and is cut at
/// the shutdown deadline.
pub(crate) fn spawn_session<F, Fut>(
    app: &Arc<App>,
    req: Request<Incoming>,
    slot: &ConnSlot,
    session: F,
) where
    F: FnOnce(TokioIo<Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let guard = take_guard(slot);
    let open = GaugeGuard::new(app.hub.stats().clone(), |s| &s.subscribers_open);
    let hard_stop = app.hard_stop.clone();
    app.tasks.spawn(async move {
        let run = async {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => session(TokioIo::new(upgraded)).await,
                Err(err) => tracing::debug!(%err, "websocket upgrade failed"),
            }
        };
        tokio::select! {
            () = run => {}
            () = hard_stop.cancelled() => {}
        }
        drop::<(Option<ConnGuard>, GaugeGuard)>((guard, open));
    });
}

/// Closes with `code` and `reason`, then gives the client a moment to answer the Close, as
/// RFC 6455 asks, before the socket is dropped.
pub(crate) async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if ws.close(Some(frame)).await.is_ok() {
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

/// Checks the RFC 6455 handshake (§4.2.1) and returns the `Sec-WebSocket-Accept` value.
pub(crate) fn check_upgrade(version: Version, h: &HeaderMap) -> Result<String, ApiError> {
    // RFC 6455 upgrades an HTTP/1.1 request; HTTP/1.0 has no upgrade mechanism.
    if version != Version::HTTP_11 {
        return Err(ApiError::BadRequest(format!(
            "a WebSocket upgrade must be an HTTP/1.1 request, not {version:?}"
        )));
    }
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    if !has_token(header::UPGRADE, "websocket") || !has_token(header::CONNECTION, "upgrade") {
        return Err(ApiError::BadRequest(
            "expected a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)".into(),
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(ApiError::BadRequest(
            "Sec-WebSocket-Version must be 13".into(),
        ));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::BadRequest("missing Sec-WebSocket-Key".into()))?;
    if !is_base64_16_bytes(key.as_bytes()) {
        return Err(ApiError::BadRequest(
            "Sec-WebSocket-Key must be 16 bytes in base64 (24 characters)".into(),
        ));
    }
    Ok(derive_accept_key(key.as_bytes()))
}

/// Whether `key` is the canonical base64 of 16 bytes: 22 alphabet characters, the last of which
/// carries 2 data bits and 4 zero bits, then `==`.
fn is_base64_16_bytes(key: &[u8]) -> bool {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let [body @ .., last, b'=', b'='] = key else {
        return false;
    };
    body.len() == 21
        && body.iter().all(|&c| value(c).is_some())
        && value(*last).is_some_and(|v| v & 0x0f == 0)
}

/// Serves one WebSocket until the client leaves, the hub disconnects it as slow, or `ended`
/// fires: at shutdown it closes with 1001; at a drop-all it just drops the socket, with no
/// Close frame, as a network failure would. With `direct`, the topic's fan-out writes the events
/// while the subscriber is caught up ([`direct_turn`]), and tungstenite's state is put away
/// meanwhile ([`LazyWs`]).
// Why not an `async fn`: see the body.
#[allow(clippy::manual_async_fn)]
fn run_session<S>(
    app: Arc<App>,
    mut ws: LazyWs<S>,
    mut sub: Subscription,
    ended: CancellationToken,
    direct: Option<Arc<Entry>>,
) -> impl std::future::Future<Output = ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Not an `async fn`: its future would keep each argument twice, as the argument and as the
    // local it becomes; an `async` block uses them in place.
    async move {
        let app = &*app;
        // A session under the fan-out keeps no timer: the fan-out pings it while its topic is
        // idle (`crate::fanout`), and in its own task's hands it is busy, not idle.
        let mut keepalive = direct.is_none().then(|| {
            let period = app.config.keepalive;
            let mut ticks = tokio::time::interval_at(Instant::now() + period, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            ticks
        });
        // Registered once, so each turn of the loop does not lock the token's waiter list.
        let mut ended = Box::pin(ended.cancelled_owned());
        let close = loop {
            // Shutdown wins over everything else. It is checked here, and not by biasing the
            // select below, so that the other branches stay fair: a client flooding upstream
            // frames must not starve its own deliveries, nor a busy topic its upstream.
            if app.shutdown.is_cancelled() {
                break Some((CloseCode::Away, "server shutting down"));
            }
            if let Some(entry) = &direct {
                let turn = direct_turn(app, &mut ws, &mut sub, entry, ended.as_mut());
                match turn.await {
                    Turn::Direct(Ok(())) => continue,
                    Turn::Own => {}
                    Turn::Direct(Err(_)) | Turn::Left => break None,
                    Turn::Dropped => return,
                }
            }
            // Boxed: a direct subscriber's future keeps no room for a turn it rarely takes.
            let turn = own_turn(app, &mut ws, &mut sub, ended.as_mut(), &mut keepalive);
            match Box::pin(turn).await {
                Own::Sent => {}
                Own::Close(close) => break close,
                Own::Dropped => return,
            }
        };
        if let Some((code, reason)) = close {
            // Boxed, here and below: the making keeps the socket while it runs.
            let ws = Box::pin(ws.ws()).await;
            Box::pin(self::close(ws, code, reason)).await;
        }
    }
}

/// How a turn of the subscriber's own went.
enum Own {
    /// It sent, answered, or found the server shutting down (the loop closes then).
    Sent,
    /// It must end: with a Close frame, or (`None`) at once.
    Close(Option<(CloseCode, &'static str)>),
    /// A drop-all: cut at once.
    Dropped,
}

/// One turn of the subscriber's own task: the next event, frame from the client, or ping.
async fn own_turn<S>(
    app: &App,
    ws: &mut LazyWs<S>,
    sub: &mut Subscription,
    mut ended: Pin<&mut WaitForCancellationFutureOwned>,
    keepalive: &mut Option<Interval>,
) -> Own
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws = ws.ws().await;
    // A send that cannot make progress is bounded by the socket's write timeout.
    let sent = tokio::select! {
        () = ended.as_mut() => match Ended::cause(&app.shutdown) {
            Ended::Shutdown => return Own::Sent,
            Ended::Dropped => return Own::Dropped,
        },
        msg = ws.next() => match answer(ws, sub, msg).await {
            Ok(true) => Ok(()),
            Ok(false) => return Own::Close(None),
            Err(e) => Err(e),
        },
        item = sub.next() => match item {
            Ok(first) => match send_burst(ws, sub, first).await {
                Ok(true) => Ok(()),
                Ok(false) => return Own::Close(Some((CloseCode::Policy, "subscriber too slow"))),
                Err(e) => Err(e),
            },
            Err(_slow) => return Own::Close(Some((CloseCode::Policy, "subscriber too slow"))),
        },
        () = tick(keepalive) => ws.send(Message::Ping(Bytes::new())).await,
    };
    match sent {
        Ok(()) => Own::Sent,
        Err(_) => Own::Close(None),
    }
}

/// The next tick of `keepalive`; never without one.
async fn tick(keepalive: &mut Option<Interval>) {
    match keepalive {
        Some(ticks) => {
            ticks.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// How a turn with the fan-out went.
enum Turn {
    /// The subscriber was direct until something woke it, and is this task's again: the result
    /// of writing what the fan-out left.
    Direct(Result<(), WsError>),
    /// It is not caught up: this task sends its events.
    Own,
    /// The client closed or failed.
    Left,
    /// A drop-all: cut at once.
    Dropped,
}

/// An empty ping from a server (RFC 6455 §5.5.2): FIN, opcode 9, no mask, no payload.
const PING: [u8; 2] = [0x89, 0x00];

/// Hands the subscriber to its topic's fan-out if it is caught up, and waits until something
/// needs this task: input from the client, the end of the server, or a hand-back.
///
/// Before that, the client's frames that tungstenite has read already, or that wait in the
/// socket, are answered, anything tungstenite holds (an automatic pong) is written, and
/// tungstenite's state is put away: while direct, only new input wakes the task, and tungstenite
/// writes nothing. It is made again when input comes.
async fn direct_turn<S>(
    app: &App,
    ws: &mut LazyWs<S>,
    sub: &mut Subscription,
    entry: &Entry,
    mut ended: Pin<&mut WaitForCancellationFutureOwned>,
) -> Turn
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(made) = ws.made() {
        while let Some(msg) = made.next().now_or_never() {
            match Box::pin(answer(made, sub, msg)).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return Turn::Left,
            }
        }
        if made.flush().await.is_err() {
            return Turn::Left;
        }
        ws.rest();
    }
    if !entry.go_direct(sub) {
        return Turn::Own;
    }
    enum Woke {
        Ended,
        Input,
        HandedBack,
    }
    let woke = tokio::select! {
        biased;
        () = ended.as_mut() => Woke::Ended,
        () = entry.handed_back() => Woke::HandedBack,
        _ = entry.socket().readable() => Woke::Input,
    };
    // The fan-out writes nothing more to this socket; what it could not write goes first.
    let rest = entry.take_back(sub);
    match woke {
        Woke::Ended if Ended::cause(&app.shutdown) == Ended::Dropped => return Turn::Dropped,
        // Read on the next turn, by tungstenite.
        Woke::Input => {
            Box::pin(ws.ws()).await;
        }
        Woke::Ended | Woke::HandedBack => {}
    }
    if rest.is_empty() {
        return Turn::Direct(Ok(()));
    }
    Turn::Direct(ws.io_mut().write_all(&rest).await.map_err(WsError::Io))
}

/// Answers one frame from the client: text is published to the topic, binary is refused, and
/// control frames need nothing (tungstenite answers pings itself). `Ok(false)`: the client
/// closed, failed or left.
async fn answer<S>(
    ws: &mut WebSocketStream<S>,
    sub: &Subscription,
    msg: Option<Result<Message, WsError>>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    answer_with(ws, msg, |text| {
        sub.publish(text).map(|_| None).map_err(|e| e.to_string())
    })
    .await
}

/// Answers one frame from a client: a text frame goes to `text`, whose reply (if any) is sent
/// back, or its error as an error frame; binary is refused; control frames need nothing
/// (tungstenite answers pings itself). `Ok(false)`: the client closed, failed or left. Shared
/// by a subscriber's session and a gateway device's.
pub(crate) async fn answer_with<S>(
    ws: &mut WebSocketStream<S>,
    msg: Option<Result<Message, WsError>>,
    text: impl FnOnce(&[u8]) -> Result<Option<String>, String>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match msg {
        Some(Ok(Message::Text(t))) => match text(t.as_bytes()) {
            Ok(None) => Ok(true),
            Ok(Some(reply)) => ws.send(Message::text(reply)).await.map(|()| true),
            Err(err) => ws.send(error_frame(&err)).await.map(|()| true),
        },
        Some(Ok(Message::Binary(_))) => ws
            .send(error_frame("binary frames are not accepted; send text"))
            .await
            .map(|()| true),
        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(true),
        // tungstenite has queued the answering Close (RFC 6455 §5.5.1); it goes out with the
        // next write, and there is none after this, so it is flushed here. Without it the
        // client sees the socket end with no Close (1006, an abnormal closure).
        Some(Ok(Message::Close(_))) => {
            let _ = ws.flush().await;
            Ok(false)
        }
        Some(Err(_)) | None => Ok(false),
    }
}

/// Most frames written before one flush.
const BURST: usize = 64;

/// Sends `first` and whatever else is already waiting (up to [`BURST`] frames) with one flush,
/// so a burst of events costs one write instead of one per event. `Ok(false)`: the subscriber
/// turned out too slow while the burst was gathered.
async fn send_burst<S>(
    ws: &mut WebSocketStream<S>,
    sub: &mut Subscription,
    first: Item,
) -> Result<bool, tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = |item: Item| match item {
        Item::Hello(h) => Message::text(h.json()),
        Item::Event(e) => Message::Text(e.ws_text().clone()),
        Item::Gap(g) => Message::text(g.json()),
    };
    ws.feed(frame(first)).await?;
    let mut keep = true;
    for _ in 1..BURST {
        match sub.try_next() {
            Ok(Some(item)) => ws.feed(frame(item)).await?,
            Ok(None) => break,
            Err(_slow) => {
                keep = false;
                break;
            }
        }
    }
    ws.flush().await?;
    Ok(keep)
}

pub(crate) fn error_frame(message: &str) -> Message {
    Message::text(serde_json::json!({ "error": message }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Gap};
    use tokio_tungstenite::tungstenite::protocol::{Role, WebSocket};

    /// What the fan-out writes must read back, through tungstenite as a client, as the very
    /// message the session would send: every length encoding (7-bit, 16-bit, 64-bit).
    #[test]
    fn fanout_frames_read_back_as_the_sessions_messages() {
        for len in [0, 10, 125, 126, 200, 65_535, 70_000] {
            let event = Event::encode(crate::protocol::Epoch::from_bits(7), 7, &"p".repeat(len));
            let item = Item::Event(Arc::new(event.clone()));
            let bytes = frame_bytes(&item);
            let mut client = WebSocket::from_raw_socket(
                std::io::Cursor::new(bytes.to_vec()),
                Role::Client,
                None,
            );
            match client.read() {
                Ok(Message::Text(text)) => assert_eq!(text, *event.ws_text(), "{len}"),
                other => panic!("{len}: {other:?}"),
            }
        }
        let gap = Gap { from: 3, to: 9 };
        let bytes = frame_bytes(&Item::Gap(gap));
        let mut client =
            WebSocket::from_raw_socket(std::io::Cursor::new(bytes.to_vec()), Role::Client, None);
        match client.read() {
            Ok(Message::Text(text)) => assert_eq!(text.as_str(), gap.json()),
            other => panic!("{other:?}"),
        }
    }
}

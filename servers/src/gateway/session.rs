//! A device's one WebSocket, `GET /v1/devices/{token}/connect`: messages down, acknowledgements
//! and upstream messages up.
//!
//! Down (text frames): each message's frame (`{"message_id":N,"kind":"data"|"notification",
//! ...}`), and on connect `{"kind":"deleted_messages","count":N}` when the queue overflowed
//! while the device was away (FCM's `onDeletedMessages`).
//!
//! Up (text frames): `{"ack":N}` for message N, which removes it from the device's queue;
//! `{"ack_through":N}` for every message written to it up to N (one ack for many, as FCM's own
//! clients acknowledge); and `{"upstream":{"message_id":"...","data":{...}}}`, which is
//! published to the project's upstream stream and answered
//! `{"kind":"upstream_ack","message_id":"..."}`.
//!
//! A second connection for the same device replaces the first, which is closed with 4001.
//! What was sent and not acknowledged goes again on the next connection.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::error::FcmError;
use super::message::MAX_MESSAGE_BYTES;
use super::registry::Device;
use super::relay::Gateway;
use super::stats::sub;
use super::stats::GatewayStats;
use crate::drop_switch::Ended;
use crate::head::Head;
use crate::http::Body;
use crate::state::{App, ConnSlot};
use crate::stats::{GaugeGuard, Stats};
use crate::transport::ws::{
    answer_with, check_upgrade, close, serve_raw, server_socket, spawn_session, switching_protocols,
};

/// Most frames written before one flush.
const BURST: usize = 64;

/// Close code for a connection replaced by a newer one of the same device.
const REPLACED: u16 = 4001;

/// Close code for a device that was unregistered while connected.
const UNREGISTERED: u16 = 4004;

/// Where devices live in the API: `/v1/devices/{token}/connect` opens a session.
pub(super) const DEVICES: &str = "/v1/devices/";

/// The hub topic a project's upstream messages are published to.
pub(crate) fn upstream_topic(project: &str) -> String {
    format!("upstream.{project}")
}

pub(crate) fn connect(
    app: &Arc<App>,
    device: Arc<Device>,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Result<Response<Body>, FcmError> {
    let accept = check_upgrade(req.version(), req.headers())?;
    let ended = app.drops.signal();
    let session_app = app.clone();
    spawn_session(app, req, slot, move |io| {
        run(session_app, device, io, ended, None)
    });
    Ok(switching_protocols(&accept)?)
}

/// The device whose connection `head` asks for, and its `Sec-WebSocket-Accept`, if `head` is
/// a valid upgrade for a registered device. Anything else is hyper's to answer (`connect`), so
/// every refusal keeps FCM's shape.
pub(crate) fn open_lean(gw: &Gateway, head: &Head) -> Option<(String, Arc<Device>)> {
    let token = head.path.strip_prefix(DEVICES)?.strip_suffix("/connect")?;
    let accept = check_upgrade(Version::HTTP_11, &head.headers).ok()?;
    let device = gw.registry.device(token)?;
    Some((accept, device))
}

/// Marks the device online for this session, and offline again when dropped (if no newer
/// session took over meanwhile); unacknowledged messages then wait for the next one.
struct Online<'a> {
    gw: &'a Gateway,
    device: Arc<Device>,
    id: u64,
    _gauge: GaugeGuard<GatewayStats>,
}

impl Drop for Online<'_> {
    fn drop(&mut self) {
        let mut st = self.device.state();
        drop(st.writer.take_back(self.id));
        if st.session.as_ref().is_some_and(|(id, _)| *id == self.id) {
            st.session = None;
            st.queue.disconnected();
            if st.registered {
                self.gw.registry.went_offline(&self.device);
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Up {
    ack: Option<u64>,
    ack_through: Option<u64>,
    upstream: Option<Upstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    message_id: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// Serves a device's connection whose upgrade was answered without hyper (`crate::lean`):
/// `socket` is shared with the send path, which writes the device's messages while the session
/// is caught up (`super::direct`).
pub(crate) fn serve_lean<S>(
    app: Arc<App>,
    device: Arc<Device>,
    io: S,
    socket: Arc<TcpStream>,
    ended: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let session_app = app.clone();
    serve_raw(app, io, |io| {
        run(session_app, device, io, ended, Some(socket))
    })
}

async fn run<S>(
    app: Arc<App>,
    device: Arc<Device>,
    io: S,
    ended: CancellationToken,
    direct: Option<Arc<TcpStream>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut ws = server_socket(io).await;
    let app = &*app;
    let Some(gw) = app.gateway.as_deref() else {
        return;
    };
    let kicked = CancellationToken::new();
    let id = gw
        .next_session
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // `None`: unregistered since the upgrade was accepted.
    let deleted = {
        let mut st = device.state();
        if st.registered {
            if let Some((_, old)) = st.session.replace((id, kicked.clone())) {
                old.cancel();
            }
            gw.registry.went_online(&device);
            // The send path writes no more to the old session's socket.
            st.writer.cut();
            st.queue.disconnected();
            Some(st.queue.take_deleted())
        } else {
            None
        }
    };
    let Some(deleted) = deleted else {
        close(
            &mut ws,
            CloseCode::from(UNREGISTERED),
            "device unregistered",
        )
        .await;
        return;
    };
    let gauge = GaugeGuard::new(gw.stats.clone(), |s| &s.devices_online);
    let _online = Online {
        gw,
        device: device.clone(),
        id,
        _gauge: gauge,
    };
    if deleted > 0 {
        let notice = serde_json::json!({ "kind": "deleted_messages", "count": deleted });
        if ws.send(Message::text(notice.to_string())).await.is_err() {
            return;
        }
    }
    let period = app.config.keepalive;
    let mut keepalive = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Registered once, so each turn of the loop does not lock the tokens' waiter lists.
    let mut ended = Box::pin(ended.cancelled_owned());
    let mut kicked_fut = Box::pin(kicked.clone().cancelled_owned());
    let mut frames = Vec::with_capacity(BURST);
    // Whatever waited while the device was away goes first.
    let mut pending = true;
    // Each way out is noticed where it fires, not by looking at the tokens every turn: a
    // look locks the token's tree.
    let close_with = loop {
        if pending {
            match deliver(gw, &device, id, &mut ws, &mut frames).await {
                Ok(more) => pending = more,
                Err(_) => break None,
            }
            continue;
        }
        let woke = match &direct {
            Some(socket) => {
                let session = Session {
                    app,
                    gw,
                    device: &device,
                    id,
                    socket,
                };
                let waits = Waits {
                    ended: &mut ended,
                    kicked: &mut kicked_fut,
                    keepalive: &mut keepalive,
                };
                session.direct_turn(&mut ws, waits).await
            }
            None => tokio::select! {
                () = &mut ended => Ok(Woke::Ended),
                () = &mut kicked_fut => Ok(Woke::Kicked),
                () = device.wake.notified() => Ok(Woke::Messages),
                msg = ws.next() => match answer(app, gw, &device, &mut ws, msg).await {
                    Ok(true) => Ok(Woke::Input),
                    Ok(false) => Err(()),
                    Err(_) => Err(()),
                },
                _ = keepalive.tick() => match ws.send(Message::Ping(Bytes::new())).await {
                    Ok(()) => Ok(Woke::Input),
                    Err(_) => Err(()),
                },
            },
        };
        match woke {
            Ok(Woke::Messages) => pending = true,
            Ok(Woke::Input) => {}
            Ok(Woke::Ended) => match Ended::cause(&app.shutdown) {
                Ended::Shutdown => break Some((CloseCode::Away, "server shutting down")),
                Ended::Dropped => return,
            },
            Ok(Woke::Kicked) => break Some(kicked_close(&device)),
            Err(()) => break None,
        }
    };
    if let Some((code, reason)) = close_with {
        close(&mut ws, code, reason).await;
    }
}

/// What a turn of a session's loop ended with.
enum Woke {
    /// Messages may wait in the queue.
    Messages,
    /// The device's input was answered, a ping sent, or nothing needs doing.
    Input,
    /// The server is shutting down, or a drop-all cuts every connection.
    Ended,
    /// A newer connection replaced this one, or the device unregistered.
    Kicked,
}

/// A session whose socket the send path may write to.
struct Session<'a> {
    app: &'a App,
    gw: &'a Gateway,
    device: &'a Device,
    id: u64,
    socket: &'a Arc<TcpStream>,
}

/// What a session waits for besides its device's messages and its client's input.
struct Waits<'a> {
    ended: &'a mut Pin<Box<WaitForCancellationFutureOwned>>,
    kicked: &'a mut Pin<Box<WaitForCancellationFutureOwned>>,
    keepalive: &'a mut Interval,
}

impl Session<'_> {
    /// Hands the socket to the send path if everything queued is written, and waits until
    /// something needs this task: the keep-alive timer, input from the device, the end of the
    /// server, a newer connection, or a hand-back (a frame the socket did not take whole).
    /// `Err`: the device closed, failed or left.
    ///
    /// Before that, frames tungstenite has read already, or that wait in the socket, are
    /// answered, and anything tungstenite holds is written: while direct, only new input wakes
    /// the task, and tungstenite writes nothing.
    async fn direct_turn<S>(
        &self,
        ws: &mut WebSocketStream<S>,
        waits: Waits<'_>,
    ) -> Result<Woke, ()>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        while let Some(msg) = ws.next().now_or_never() {
            if !answer(self.app, self.gw, self.device, ws, msg)
                .await
                .map_err(drop)?
            {
                return Err(());
            }
        }
        ws.flush().await.map_err(drop)?;
        if !self.device.state().go_direct(self.id, self.socket) {
            return Ok(Woke::Messages);
        }
        let woke = loop {
            tokio::select! {
                biased;
                () = waits.ended.as_mut() => break Woke::Ended,
                () = waits.kicked.as_mut() => break Woke::Kicked,
                () = self.device.wake.notified() => break Woke::Messages,
                _ = waits.keepalive.tick() => {
                    // A message written within the interval kept the connection alive as well
                    // as a ping would. Why skip: at 10,000 devices and 15 s, the pings (and the
                    // pongs they bring back) cost the gateway about as much as their acks.
                    let last = self.device.state().writer.last_write();
                    let period = waits.keepalive.period();
                    if let Some(next) = last.map(|at| at + period).filter(|&n| n > Instant::now()) {
                        waits.keepalive.reset_at(next.into());
                        continue;
                    }
                    let rest = self.device.state().writer.take_back(self.id);
                    write_rest(ws, &rest).await?;
                    ws.send(Message::Ping(Bytes::new())).await.map_err(drop)?;
                    return Ok(Woke::Input);
                }
                _ = self.socket.readable() => break Woke::Input,
            }
        };
        // The send path writes nothing more to this socket; what it could not write goes first.
        let rest = self.device.state().writer.take_back(self.id);
        // A drop-all cuts the socket as a network failure would; anything else may still
        // write (a Close frame at shutdown), so the frame is finished first.
        let dropped = matches!(woke, Woke::Ended)
            && matches!(Ended::cause(&self.app.shutdown), Ended::Dropped);
        if !dropped {
            write_rest(ws, &rest).await?;
        }
        Ok(woke)
    }
}

/// Writes what the send path left of a frame, before anything else goes on the socket.
async fn write_rest<S>(ws: &mut WebSocketStream<S>, rest: &[u8]) -> Result<(), ()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if rest.is_empty() {
        return Ok(());
    }
    ws.get_mut().write_all(rest).await.map_err(drop)
}

/// Answers one frame from the device: an ack or an upstream message, or an error frame for
/// anything else. `Ok(false)`: the device closed, failed or left.
async fn answer<S>(
    app: &App,
    gw: &Gateway,
    device: &Device,
    ws: &mut WebSocketStream<S>,
    msg: Option<Result<Message, WsError>>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    answer_with(ws, msg, |text| upward(app, gw, device, text)).await
}

/// Why a session was told to go: a newer connection, or the device unregistered.
fn kicked_close(device: &Device) -> (CloseCode, &'static str) {
    if device.state().registered {
        (CloseCode::from(REPLACED), "replaced by a newer connection")
    } else {
        (CloseCode::from(UNREGISTERED), "device unregistered")
    }
}

/// Writes up to [`BURST`] waiting messages with one flush. `Ok(true)`: more may wait.
///
/// Only the device's current session (`session`) takes messages: one that was replaced but has
/// not noticed yet must not mark the new session's messages as written.
async fn deliver<S>(
    gw: &Gateway,
    device: &Device,
    session: u64,
    ws: &mut WebSocketStream<S>,
    frames: &mut Vec<Utf8Bytes>,
) -> Result<bool, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    frames.clear();
    let taken = device
        .state()
        .take_frames(session, BURST, |f| frames.push(f), &gw.stats);
    if taken.is_none() || frames.is_empty() {
        return Ok(false);
    }
    for text in frames.drain(..) {
        ws.feed(Message::Text(text)).await?;
        Stats::inc(&gw.stats.delivered);
    }
    ws.flush().await?;
    Ok(true)
}

/// One text frame from the device: an ack, or an upstream message. Returns the reply to send,
/// if any, or what was wrong with the frame.
fn upward(app: &App, gw: &Gateway, device: &Device, text: &[u8]) -> Result<Option<String>, String> {
    let s = &gw.stats;
    let up: Up = serde_json::from_slice(text).map_err(|e| {
        Stats::inc(&s.upstream_refused);
        format!("expected {{\"ack\":ID}}, {{\"ack_through\":ID}} or {{\"upstream\":{{\"message_id\":...,\"data\":{{...}}}}}}: {e}")
    })?;
    match (up.ack, up.ack_through, up.upstream) {
        (Some(id), None, None) => {
            let acked = u64::from(device.state().queue.ack(id));
            count_acks(s, acked);
            Ok(None)
        }
        (None, Some(id), None) => {
            let acked = device.state().queue.ack_through(id);
            count_acks(s, acked);
            Ok(None)
        }
        (None, None, Some(u)) => {
            let size: usize = u.data.iter().map(|(k, v)| k.len() + v.len()).sum();
            if u.message_id.is_empty() || u.message_id.len() > 256 || size > MAX_MESSAGE_BYTES {
                Stats::inc(&s.upstream_refused);
                return Err(format!(
                    "upstream needs a message_id of 1 to 256 bytes and at most {MAX_MESSAGE_BYTES} bytes of data"
                ));
            }
            let received_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            let event = serde_json::json!({
                "from": &*device.token,
                "message_id": &u.message_id,
                "data": u.data,
                "received_time_ms": received_ms,
            });
            if let Err(e) = app.hub.publish(
                &upstream_topic(&device.project),
                event.to_string().as_bytes(),
            ) {
                Stats::inc(&s.upstream_refused);
                return Err(format!("upstream refused: {e}"));
            }
            Stats::inc(&s.upstream);
            let ack = serde_json::json!({ "kind": "upstream_ack", "message_id": u.message_id });
            Ok(Some(ack.to_string()))
        }
        _ => {
            Stats::inc(&s.upstream_refused);
            Err("a frame carries exactly one of ack, ack_through or upstream".into())
        }
    }
}

/// Counts what an ack removed from the queue; one that removed nothing is an unknown ack.
/// Outside the device's lock: a message entered the `queued` gauge before it could be written,
/// so no ack of it can bring the gauge down first.
fn count_acks(s: &GatewayStats, acked: u64) {
    if acked == 0 {
        Stats::inc(&s.unknown_acks);
        return;
    }
    sub(&s.queued, acked);
    Stats::add(&s.acked, acked);
}

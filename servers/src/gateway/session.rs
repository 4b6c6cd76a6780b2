//! A device's one WebSocket, `GET /v1/devices/{token}/connect`: messages down, acknowledgements
//! and upstream messages up.
//!
//! Down (text frames): each message's frame (`{"message_id":N,"kind":"data"|"notification",
//! ...}`), and on connect `{"kind":"deleted_messages","count":N}` when the queue overflowed
//! while the device was away (FCM's `onDeletedMessages`).
//!
//! Up (text frames): `{"ack":N}` for message N, which removes it from the device's queue, and
//! `{"upstream":{"message_id":"...","data":{...}}}`, which is published to the project's
//! upstream stream and answered `{"kind":"upstream_ack","message_id":"..."}`.
//!
//! A second connection for the same device replaces the first, which is closed with 4001.
//! What was sent and not acknowledged goes again on the next connection.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming;
use serde::Deserialize;
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

use super::api::upstream_topic;
use super::error::FcmError;
use super::message::MAX_MESSAGE_BYTES;
use super::registry::{sub, Device};
use super::{Gateway, GatewayStats};
use crate::app::{App, ConnSlot};
use crate::drop_switch::Ended;
use crate::http::Body;
use crate::stats::{GaugeGuard, Stats};
use crate::transport::ws::{
    check_upgrade, close, error_frame, spawn_session, switching_protocols, Socket,
};

/// Most frames written before one flush.
const BURST: usize = 64;

/// Close code for a connection replaced by a newer one of the same device.
const REPLACED: u16 = 4001;

/// Close code for a device that was unregistered while connected.
const UNREGISTERED: u16 = 4004;

pub(crate) fn connect(
    app: &Arc<App>,
    gw: &Arc<Gateway>,
    device: Arc<Device>,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Result<Response<Body>, FcmError> {
    let accept = check_upgrade(req.version(), req.headers())?;
    let ended = app.drops.signal();
    let (app2, gw2) = (app.clone(), gw.clone());
    spawn_session(app, req, slot, move |ws| async move {
        run(&app2, &gw2, device, ws, ended).await;
    });
    Ok(switching_protocols(&accept)?)
}

/// Marks the device online for this session, and offline again when dropped (if no newer
/// session took over meanwhile); unacknowledged messages then wait for the next one.
struct Online {
    device: Arc<Device>,
    id: u64,
    _gauge: GaugeGuard<GatewayStats>,
}

impl Drop for Online {
    fn drop(&mut self) {
        let mut st = self.device.state();
        if st.session.as_ref().is_some_and(|(id, _)| *id == self.id) {
            st.session = None;
            st.queue.disconnected();
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Up {
    ack: Option<u64>,
    upstream: Option<Upstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upstream {
    message_id: String,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

async fn run(
    app: &App,
    gw: &Gateway,
    device: Arc<Device>,
    mut ws: Socket,
    ended: CancellationToken,
) {
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
    let mut ended = Box::pin(ended.cancelled_owned());
    let mut frames = Vec::with_capacity(BURST);
    // Whatever waited while the device was away goes first.
    let mut pending = true;
    let close_with = loop {
        if app.shutdown.is_cancelled() {
            break Some((CloseCode::Away, "server shutting down"));
        }
        if kicked.is_cancelled() {
            break Some(kicked_close(&device));
        }
        if pending {
            match deliver(gw, &device, id, &mut ws, &mut frames).await {
                Ok(more) => pending = more,
                Err(_) => break None,
            }
            continue;
        }
        let sent = tokio::select! {
            () = &mut ended => match Ended::cause(&app.shutdown) {
                Ended::Shutdown => continue,
                Ended::Dropped => return,
            },
            () = kicked.cancelled() => break Some(kicked_close(&device)),
            () = device.wake.notified() => {
                pending = true;
                Ok(())
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(text))) => match upward(app, gw, &device, text.as_bytes()) {
                    Ok(None) => Ok(()),
                    Ok(Some(reply)) => ws.send(Message::text(reply)).await,
                    Err(err) => ws.send(error_frame(&err)).await,
                },
                Some(Ok(Message::Binary(_))) => {
                    ws.send(error_frame("binary frames are not accepted; send text")).await
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Ok(()),
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
            },
            _ = keepalive.tick() => ws.send(Message::Ping(Bytes::new())).await,
        };
        if sent.is_err() {
            break None;
        }
    };
    if let Some((code, reason)) = close_with {
        close(&mut ws, code, reason).await;
    }
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
async fn deliver(
    gw: &Gateway,
    device: &Device,
    session: u64,
    ws: &mut Socket,
    frames: &mut Vec<Utf8Bytes>,
) -> Result<bool, tokio_tungstenite::tungstenite::Error> {
    frames.clear();
    let s = &gw.stats;
    {
        let mut st = device.state();
        if st.session.as_ref().map(|(id, _)| *id) != Some(session) {
            return Ok(false);
        }
        let (expired, resent) = st.queue.take_unsent(BURST, Instant::now(), frames);
        sub(&s.queued, expired);
        drop(st);
        Stats::add(&s.expired, expired);
        Stats::add(&s.resent, resent);
    }
    if frames.is_empty() {
        return Ok(false);
    }
    for text in frames.drain(..) {
        ws.feed(Message::Text(text)).await?;
        Stats::inc(&s.delivered);
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
        format!("expected {{\"ack\":ID}} or {{\"upstream\":{{\"message_id\":...,\"data\":{{...}}}}}}: {e}")
    })?;
    match (up.ack, up.upstream) {
        (Some(id), None) => {
            let mut st = device.state();
            if st.queue.ack(id) {
                sub(&s.queued, 1);
                drop(st);
                Stats::inc(&s.acked);
            } else {
                drop(st);
                Stats::inc(&s.unknown_acks);
            }
            Ok(None)
        }
        (None, Some(u)) => {
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
            Err("a frame carries exactly one of ack or upstream".into())
        }
    }
}

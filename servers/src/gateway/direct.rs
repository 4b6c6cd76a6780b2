//! Who writes a connected device's messages: its session's task, or the send itself.
//!
//! Why: through its session's task, every message cost a wake-up, a turn of the session's
//! loop and tungstenite's copy of the frame, per device, on top of the write; and every device
//! also wakes once more for its acknowledgement. At 10,000 devices that made a topic send cost
//! about twice what direct WebSocket's fan-out (`crate::fanout`) pays for the same deliveries.
//!
//! So a session that has written everything its device's queue holds hands its socket to the
//! send path ([`DeviceState::go_direct`]) and sleeps. A send then writes the new message's frame
//! straight to the socket, under the device's lock ([`Writer::push`]), and marks it
//! sent as the session would have: it stays queued until acknowledged, and goes again on the
//! next connection if it is not. If the socket does not take the whole frame, the rest is kept
//! ([`Leftover`]) and the session is woken to write it: it takes its socket back
//! ([`Writer::take_back`]) and goes on as before, under the write timeout. Every change of
//! hands happens under the device's lock, so the two never write to one socket at once.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::queue::Queue;
use super::stats::{sub, GatewayStats};
use crate::chunked;
use crate::framing::{text_frame_head, MAX_FRAME_HEAD};
use crate::stats::Stats;

/// Who writes a device's messages now, and what a full socket left for its session. Kept in the
/// device's state, under its lock; `current` below is the id of the device's current session.
#[derive(Debug, Default)]
pub struct Writer {
    /// The session whose socket the send path writes to, while it is caught up.
    direct: Option<Direct>,
    /// What that socket did not take, for its session to write.
    leftover: Option<Leftover>,
    /// When the send path last wrote a message to the socket: a connection that carried one
    /// within the keep-alive interval needs no ping (see `session`).
    last_write: Option<Instant>,
}

/// The socket of the session the send path writes to.
#[derive(Debug)]
struct Direct {
    session: u64,
    /// Kept so that `fd` stays this socket's while the send path may write to it.
    _socket: Arc<TcpStream>,
    /// The socket's descriptor, read once: here, beside the device's state that a send has
    /// just locked, it costs no cache miss, where `socket`'s own block would, per delivery.
    fd: RawFd,
}

/// What a session's socket did not take of a frame the send path wrote.
#[derive(Debug)]
struct Leftover {
    session: u64,
    bytes: Vec<u8>,
}

/// Gives up to `max` unsent messages' frames to `out`, marked sent, and counts what expired or
/// went again on the way. `None` if `session` is not the device's `current` one: a session
/// replaced but not yet told must not mark the new session's messages written.
pub fn take_frames(
    queue: &mut Queue,
    current: Option<u64>,
    session: u64,
    max: usize,
    out: impl FnMut(Utf8Bytes),
    stats: &GatewayStats,
    now: Instant,
) -> Option<()> {
    if current != Some(session) {
        return None;
    }
    let (expired, resent) = queue.take_unsent(max, now, out);
    sub(&stats.queued, expired);
    Stats::add(&stats.expired, expired);
    Stats::add(&stats.resent, resent);
    Some(())
}

impl Writer {
    /// Hands `session`'s socket to the send path, if it is the `current` session and nothing
    /// in `queue` waits to be written. Returns whether it did.
    pub fn go_direct(
        &mut self,
        queue: &Queue,
        current: Option<u64>,
        session: u64,
        socket: &Arc<TcpStream>,
    ) -> bool {
        if current != Some(session) || queue.has_unsent() {
            return false;
        }
        self.direct = Some(Direct {
            session,
            fd: socket.as_raw_fd(),
            _socket: socket.clone(),
        });
        true
    }

    /// The send path writes to no session's socket any more (a newer session replaces it).
    pub fn cut(&mut self) {
        self.direct = None;
    }

    /// Takes `session`'s socket back from the send path: returns what the socket did not take,
    /// to be written first.
    pub fn take_back(&mut self, session: u64) -> Vec<u8> {
        if self.direct.as_ref().is_some_and(|d| d.session == session) {
            self.direct = None;
        }
        match self.leftover.take() {
            Some(left) if left.session == session => left.bytes,
            other => {
                self.leftover = other;
                Vec::new()
            }
        }
    }

    /// When the send path last wrote a message to a session's socket.
    pub fn last_write(&self) -> Option<Instant> {
        self.last_write
    }

    /// Writes the message just queued to the socket, if a session gave the send path its
    /// socket. Returns `(written, woken)`: whether the message was written (whole or in part),
    /// and whether the session must be woken to write the rest.
    pub fn push(
        &mut self,
        queue: &mut Queue,
        current: Option<u64>,
        stats: &GatewayStats,
        now: Instant,
    ) -> (bool, bool) {
        let Some(session) = self.direct.as_ref().map(|d| d.session) else {
            return (false, false);
        };
        let mut frame = None;
        if take_frames(queue, current, session, 1, |f| frame = Some(f), stats, now).is_none() {
            // Never: a replaced session's socket is taken away as it is replaced.
            self.direct = None;
            return (false, true);
        }
        let (Some(frame), Some(direct)) = (frame, &self.direct) else {
            return (false, false);
        };
        let mut head = [0u8; MAX_FRAME_HEAD];
        let head = text_frame_head(frame.len(), &mut head);
        let mut rest = Vec::new();
        chunked::try_write(direct.fd, &[head, frame.as_bytes()], &mut rest);
        self.last_write = Some(now);
        if rest.is_empty() {
            return (true, false);
        }
        Stats::inc(&stats.handbacks);
        self.direct = None;
        self.leftover = Some(Leftover {
            session,
            bytes: rest,
        });
        (true, true)
    }
}

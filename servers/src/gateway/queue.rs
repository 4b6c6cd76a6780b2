//! One device's store-and-forward queue: what the gateway holds for it until it acknowledges.
//!
//! Messages wait here while the device is offline, in send order. Each one leaves in exactly
//! one of these ways, and each way is counted:
//! - acknowledged by the device (`acked`);
//! - its TTL passed before it was sent (`expired`); a TTL of zero means "now or never", so
//!   such a message is refused at once for an offline device;
//! - a newer message with the same collapse key arrived before it was sent (`collapsed`);
//! - the queue was full, and it was the oldest (`overflowed`);
//! - the device unregistered (`discarded`).
//!
//! A message sent but not yet acknowledged stays; when the device reconnects it is sent again
//! (at least once, as FCM delivers), and a TTL that passed meanwhile expires it then.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use tokio_tungstenite::tungstenite::Utf8Bytes;

/// One message as every recipient's queue holds it: shared, encoded once.
#[derive(Debug)]
pub struct Queued {
    /// The gateway's message id.
    pub id: u64,
    /// The frame the device receives.
    pub frame: Utf8Bytes,
    /// Replaces an older unsent message with the same key.
    pub collapse_key: Option<Arc<str>>,
    /// After this it is not sent any more.
    pub expires: Instant,
}

#[derive(Debug)]
struct Entry {
    msg: Arc<Queued>,
    /// Written before, on an earlier connection.
    resend: bool,
    /// A TTL of zero, queued while the device was connected: its first write happens although
    /// the TTL has run out, so zero means "now" for a connected device, not "never".
    now: bool,
}

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pushed {
    /// The message was queued.
    pub queued: bool,
    /// Unsent messages it replaced (same collapse key).
    pub collapsed: u64,
    /// Oldest messages dropped to make room.
    pub overflowed: u64,
    /// Refused at once: TTL zero and the device offline.
    pub expired: u64,
}

/// A device's bounded queue.
///
/// The messages written and awaiting their ack are always the front of the queue (written in
/// order, acknowledged from the front, all unwritten again when the connection ends), so one
/// count says which they are. Why not a flag per message: a write then looked at every message
/// awaiting its ack to find the first unwritten one, and each look at 10,000 devices was a
/// cache miss.
#[derive(Debug)]
pub struct Queue {
    entries: VecDeque<Entry>,
    /// How many messages at the front were written and await their ack.
    sent: usize,
    capacity: usize,
    /// Messages dropped for room since the device last connected: the device is told, as FCM's
    /// `onDeletedMessages` does.
    deleted_since_connect: u64,
}

impl Queue {
    /// An empty queue holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            entries: VecDeque::new(),
            sent: 0,
            capacity: capacity.max(1),
            deleted_since_connect: 0,
        }
    }

    /// Messages held (sent or not).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `msg` for a device that is `online` or not.
    pub fn push(&mut self, msg: Arc<Queued>, online: bool, now: Instant) -> Pushed {
        let mut out = Pushed::default();
        if !online && msg.expires <= now {
            out.expired = 1;
            return out;
        }
        if let Some(key) = &msg.collapse_key {
            out.collapsed = self.remove_unsent(|e| e.msg.collapse_key.as_ref() == Some(key));
        }
        while self.entries.len() >= self.capacity {
            // The oldest message not yet written goes first: one already written has most
            // likely reached the device, and only its acknowledgement is outstanding.
            if self.sent < self.entries.len() {
                self.entries.remove(self.sent);
                self.deleted_since_connect += 1;
            } else {
                self.entries.pop_front();
                self.sent -= 1;
            }
            out.overflowed += 1;
        }
        // A TTL that has already run out (zero) still gets its one write to a connected device.
        let now_or_never = online && msg.expires <= now;
        self.entries.push_back(Entry {
            msg,
            resend: false,
            now: now_or_never,
        });
        out.queued = true;
        out
    }

    /// Whether a message waits to be written.
    pub fn has_unsent(&self) -> bool {
        self.sent < self.entries.len()
    }

    /// Removes the unwritten messages `drop` picks; returns how many.
    fn remove_unsent(&mut self, mut drop: impl FnMut(&Entry) -> bool) -> u64 {
        let before = self.entries.len();
        let mut i = self.sent;
        while i < self.entries.len() {
            if drop(&self.entries[i]) {
                self.entries.remove(i);
            } else {
                i += 1;
            }
        }
        (before - self.entries.len()) as u64
    }

    /// Gives up to `max` unsent messages' frames to `out` in order, marking them sent; expired
    /// ones on the way are removed. Returns how many expired, and how many of those given had
    /// been sent before (on an earlier connection).
    pub fn take_unsent(
        &mut self,
        max: usize,
        now: Instant,
        mut out: impl FnMut(Utf8Bytes),
    ) -> (u64, u64) {
        let (mut expired, mut resent) = (0, 0);
        let mut given = 0;
        while given < max {
            let Some(e) = self.entries.get(self.sent) else {
                break;
            };
            if e.msg.expires <= now && !e.now {
                self.entries.remove(self.sent);
                expired += 1;
            } else {
                resent += u64::from(e.resend);
                out(e.msg.frame.clone());
                self.sent += 1;
                given += 1;
            }
        }
        (expired, resent)
    }

    /// The device acknowledged message `id`: removes it. False if it held no such message
    /// sent (an unknown id, or a repeated ack).
    pub fn ack(&mut self, id: u64) -> bool {
        match self
            .entries
            .iter()
            .take(self.sent)
            .position(|e| e.msg.id == id)
        {
            Some(i) => {
                self.entries.remove(i);
                self.sent -= 1;
                true
            }
            None => false,
        }
    }

    /// The device acknowledged every message up to `id` at once (a stream ack, as FCM's own
    /// clients send one per 10 messages): removes every message written to it with an id up
    /// to `id`, and returns how many. Ids grow in queue order and the written ones are the
    /// front of the queue, so the loop stops at the first message that stays.
    pub fn ack_through(&mut self, id: u64) -> u64 {
        let mut removed = 0;
        while self.sent > 0 && self.entries.front().is_some_and(|e| e.msg.id <= id) {
            self.entries.pop_front();
            self.sent -= 1;
            removed += 1;
        }
        removed
    }

    /// The device's connection ended: what it was sent but did not acknowledge goes again.
    pub fn disconnected(&mut self) {
        for (i, e) in self.entries.iter_mut().enumerate() {
            e.resend |= i < self.sent;
            e.now = false;
        }
        self.sent = 0;
    }

    /// The device connected: how many messages were dropped for room since last time (its
    /// `deleted_messages` notice), reset.
    pub fn take_deleted(&mut self) -> u64 {
        std::mem::take(&mut self.deleted_since_connect)
    }

    /// Removes unsent messages whose TTL passed; returns how many.
    pub fn expire(&mut self, now: Instant) -> u64 {
        self.remove_unsent(|e| !e.now && e.msg.expires <= now)
    }

    /// Empties the queue (the device unregistered); returns how many messages it held.
    pub fn clear(&mut self) -> u64 {
        let n = self.entries.len() as u64;
        self.entries.clear();
        self.sent = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(id: u64, key: Option<&str>, ttl_ms: u64, now: Instant) -> Arc<Queued> {
        Arc::new(Queued {
            id,
            frame: Utf8Bytes::from(id.to_string()),
            collapse_key: key.map(Arc::from),
            expires: now + Duration::from_millis(ttl_ms),
        })
    }

    /// Queues messages `ids` for a connected device.
    fn push_online(q: &mut Queue, ids: std::ops::RangeInclusive<u64>, now: Instant) {
        for id in ids {
            q.push(msg(id, None, 1000, now), true, now);
        }
    }

    fn take(q: &mut Queue, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        q.take_unsent(100, now, |f| out.push(f));
        out.iter().map(|b| b.as_str().to_owned()).collect()
    }

    #[test]
    fn collapse_replaces_unsent_only_and_keeps_order() {
        let now = Instant::now();
        let mut q = Queue::new(10);
        q.push(msg(1, Some("k"), 1000, now), false, now);
        q.push(msg(2, None, 1000, now), false, now);
        let p = q.push(msg(3, Some("k"), 1000, now), false, now);
        assert_eq!(p.collapsed, 1);
        assert_eq!(take(&mut q, now), ["2", "3"]);
        // Sent but unacknowledged: not collapsed, sent again after a reconnect.
        assert_eq!(q.push(msg(4, Some("k"), 1000, now), true, now).collapsed, 0);
        q.disconnected();
        assert_eq!(take(&mut q, now), ["2", "3", "4"]);
        assert!(q.ack(3));
        assert!(!q.ack(3));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_stream_ack_removes_only_what_was_written_up_to_its_id() {
        let now = Instant::now();
        let mut q = Queue::new(10);
        push_online(&mut q, 1..=5, now);
        let mut written = Vec::new();
        q.take_unsent(3, now, |f| written.push(f));
        // 4 and 5 are not written yet: an ack through 5 cannot remove them.
        assert_eq!(q.ack_through(5), 3);
        assert_eq!(q.len(), 2);
        assert_eq!(q.ack_through(5), 0, "nothing written is left");
        assert_eq!(take(&mut q, now), ["4", "5"]);
        assert_eq!(q.ack_through(4), 1);
        assert!(q.ack(5));
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn written_messages_stay_the_front_of_the_queue() {
        let now = Instant::now();
        let mut q = Queue::new(3);
        push_online(&mut q, 1..=3, now);
        assert_eq!(take(&mut q, now), ["1", "2", "3"]);
        // An ack from the middle of what was written leaves the rest written.
        assert!(q.ack(2));
        assert!(!q.has_unsent());
        // Full of written messages: the oldest written one makes room.
        q.push(msg(4, None, 1000, now), true, now);
        assert_eq!(take(&mut q, now), ["4"]);
        assert_eq!(q.push(msg(5, None, 1000, now), true, now).overflowed, 1);
        assert_eq!(
            q.take_deleted(),
            0,
            "a written message is not a deleted one"
        );
        assert_eq!(take(&mut q, now), ["5"]);
        assert_eq!(q.ack_through(5), 3);
        assert_eq!(q.len(), 0);
        // After a reconnect everything held is unwritten again, and goes again in order.
        push_online(&mut q, 6..=7, now);
        assert_eq!(take(&mut q, now), ["6", "7"]);
        q.disconnected();
        assert_eq!(
            q.ack_through(7),
            0,
            "nothing is written on the new connection yet"
        );
        assert_eq!(take(&mut q, now), ["6", "7"]);
    }

    #[test]
    fn ttl_and_overflow() {
        let now = Instant::now();
        let mut q = Queue::new(2);
        // TTL zero: offline refuses at once, online is sent now (once).
        assert_eq!(q.push(msg(1, None, 0, now), false, now).expired, 1);
        let mut online = Queue::new(2);
        online.push(msg(9, None, 0, now), true, now);
        let later = now + Duration::from_millis(1);
        assert_eq!(online.expire(later), 0);
        assert_eq!(take(&mut online, later), ["9"]);
        online.disconnected();
        assert!(
            take(&mut online, later).is_empty(),
            "not again after a reconnect"
        );
        assert!(q.push(msg(2, None, 50, now), false, now).queued);
        assert!(q.push(msg(3, None, 5000, now), false, now).queued);
        let later = now + Duration::from_millis(100);
        assert_eq!(q.expire(later), 1);
        assert_eq!(take(&mut q, later), ["3"]);
        assert_eq!(q.push(msg(4, None, 5000, now), false, now).overflowed, 0);
        assert_eq!(q.push(msg(5, None, 5000, now), false, now).overflowed, 1);
        // 3 was written and awaits its ack: 4, unsent, made room for 5.
        assert_eq!(q.take_deleted(), 1);
        assert_eq!(q.take_deleted(), 0);
        assert_eq!(take(&mut q, later), ["5"]);
        assert_eq!(q.clear(), 2);
        // A connected device's backlog still expires by TTL; only TTL zero gets its one write.
        let mut q = Queue::new(4);
        q.push(msg(1, None, 50, now), true, now);
        assert_eq!(q.expire(later), 1);
    }
}

//! What a worker records: latency histograms, per-client delivery accounting, errors.
//!
//! Every worker thread owns one [`Recorder`], shared by its clients without locks (they run on
//! that thread only), and hands it to the collector at the end; interval histograms go to the
//! collector once a second. There is never one message per delivery.

use std::collections::BTreeMap;

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use smallvec::SmallVec;

use std::time::Instant;

use super::payload;
use super::schedule::Clock;
use crate::error::ClientError;

/// Latencies are recorded in microseconds, from 1 µs to 60 s, to 3 significant digits.
pub const LATENCY_MAX_US: u64 = 60_000_000;

/// A histogram with the run's bounds.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("static bounds are valid")
}

/// A histogram as HdrHistogram V2 compressed (deflate), base64: the form every HdrHistogram
/// library reads, used in the JSON report and between worker processes.
pub fn encode_b64(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    match V2DeflateSerializer::new().serialize(h, &mut bytes) {
        Ok(_) => base64::engine::general_purpose::STANDARD.encode(&bytes),
        // Serialising into a Vec fails only for histograms too large to exist here.
        Err(_) => String::new(),
    }
}

/// Reads [`encode_b64`]'s output back.
pub fn decode_b64(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| format!("histogram is not base64: {e}"))?;
    Deserializer::new()
        .deserialize(&mut std::io::Cursor::new(bytes))
        .map_err(|e| format!("histogram does not decode: {e:?}"))
}

/// Serde for histograms, as [`encode_b64`] text.
pub mod hist_serde {
    use hdrhistogram::Histogram;

    /// Writes `h` as base64 text.
    pub fn serialize<S: serde::Serializer>(h: &Histogram<u64>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode_b64(h))
    }

    /// Reads base64 text back.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Histogram<u64>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        super::decode_b64(&text).map_err(serde::de::Error::custom)
    }
}

/// Totals of one worker, merged across workers at the end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorder {
    /// Due → received, of each first delivery of a window event to a client.
    #[serde(with = "hist_serde")]
    pub latency: Histogram<u64>,
    /// Sent → received of the same deliveries: the server and the network alone, without the
    /// publisher's own lateness.
    #[serde(with = "hist_serde", default = "latency_histogram")]
    pub latency_from_sent: Histogram<u64>,
    /// Due → received, since the last interval was taken.
    #[serde(with = "hist_serde")]
    pub interval: Histogram<u64>,
    /// Time from starting a subscription to its first response (TCP connect included).
    #[serde(with = "hist_serde")]
    pub connect: Histogram<u64>,
    /// How late the worker's own timer fired during the window (loop lag: the worker's health,
    /// not the server's).
    #[serde(with = "hist_serde")]
    pub loop_lag: Histogram<u64>,
    /// First deliveries of window events.
    pub delivered: u64,
    /// Window events a client received again.
    pub duplicates: u64,
    /// Deliveries with a lower id than one the client already had.
    pub out_of_order: u64,
    /// Gap signals received.
    pub gaps: u64,
    /// Ids covered by those gap signals.
    pub gap_events: u64,
    /// Reset signals received: the server restarted, and ids counted from 1 again.
    #[serde(default)]
    pub resets: u64,
    /// Events whose payload is not ours (another publisher on the topic).
    pub foreign: u64,
    /// Deliveries timed before they were sent: a clock problem, recorded as 1 µs.
    pub clock_anomalies: u64,
    /// Clients that subscribed.
    pub clients_connected: u64,
    /// Clients whose subscription failed.
    pub clients_failed: u64,
    /// Clients that ended before the run did (gave up reconnecting).
    pub clients_lost: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Gateway runs: devices that went offline on schedule.
    #[serde(default)]
    pub offline_clients: u64,
    /// Gateway runs: first deliveries, to those devices, of window events due while they were
    /// away (held by the gateway until they came back).
    #[serde(default)]
    pub held_delivered: u64,
    /// Due → received of those deliveries.
    #[serde(with = "hist_serde", default = "latency_histogram")]
    pub held_latency: Histogram<u64>,
    /// First deliveries that waited for the load generator: events due before the long poll
    /// that fetched them went out, when it went out late ([`crate::client::Delivery::asked_late`]).
    #[serde(default)]
    pub waited_for_generator: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            latency: latency_histogram(),
            latency_from_sent: latency_histogram(),
            interval: latency_histogram(),
            connect: latency_histogram(),
            loop_lag: latency_histogram(),
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            gaps: 0,
            gap_events: 0,
            resets: 0,
            foreign: 0,
            clock_anomalies: 0,
            clients_connected: 0,
            clients_failed: 0,
            clients_lost: 0,
            errors: BTreeMap::new(),
            offline_clients: 0,
            held_delivered: 0,
            held_latency: latency_histogram(),
            waited_for_generator: 0,
        }
    }
}

impl Recorder {
    /// Records one first delivery's latency in microseconds.
    pub fn record_latency(&mut self, latency_us: u64) {
        let v = latency_us.clamp(1, LATENCY_MAX_US);
        self.latency.saturating_record(v);
        self.interval.saturating_record(v);
    }

    /// Accounts for one delivered event: the recording path every delivery takes (payload stamp,
    /// window check, duplicate and order check, latency into the histogram, counters).
    /// `window` is (events before the window, events in it).
    pub fn delivery(
        &mut self,
        track: &mut Track,
        window: (u64, u64),
        clock: &Clock,
        id: u64,
        payload: &[u8],
        received: Instant,
    ) -> Outcome {
        let backwards = track.order(id);
        let Some(stamp) = payload::decode(payload) else {
            self.foreign += 1;
            return Outcome::Foreign;
        };
        let (before, inside) = window;
        if stamp.seq < before || stamp.seq >= before + inside {
            return Outcome::OutsideWindow;
        }
        match track.see(stamp.seq - before) {
            Seen::Duplicate => {
                self.duplicates += 1;
                Outcome::Duplicate
            }
            Seen::First => {
                if backwards {
                    self.out_of_order += 1;
                }
                let received = clock.unix_ns(received);
                if received < stamp.sent_unix_ns() {
                    self.clock_anomalies += 1;
                }
                self.record_latency(received.saturating_sub(stamp.due_unix_ns) / 1000);
                let from_sent = received.saturating_sub(stamp.sent_unix_ns()) / 1000;
                self.latency_from_sent
                    .saturating_record(from_sent.clamp(1, LATENCY_MAX_US));
                self.delivered += 1;
                Outcome::First
            }
        }
    }

    /// Accounts a first delivery to a device that was offline from `away.0` to `away.1` (Unix
    /// ns): if the event fell due meanwhile, the gateway held it, and its latency is recorded
    /// apart as well.
    pub fn held(&mut self, clock: &Clock, payload: &[u8], received: Instant, away: (u64, u64)) {
        let Some(stamp) = payload::decode(payload) else {
            return;
        };
        if stamp.due_unix_ns < away.0 || stamp.due_unix_ns >= away.1 {
            return;
        }
        let latency = clock.unix_ns(received).saturating_sub(stamp.due_unix_ns) / 1000;
        self.held_latency
            .saturating_record(latency.clamp(1, LATENCY_MAX_US));
        self.held_delivered += 1;
    }

    /// Accounts a first delivery fetched by a long poll sent late, at `asked`: if the event was
    /// due before then, it waited for the load generator.
    pub fn asked_late(&mut self, clock: &Clock, payload: &[u8], asked: Instant) {
        if payload::decode(payload).is_some_and(|s| s.due_unix_ns < clock.unix_ns(asked)) {
            self.waited_for_generator += 1;
        }
    }

    /// Counts an error by its kind.
    pub fn error(&mut self, err: &ClientError) {
        *self.errors.entry(error_kind(err)).or_default() += 1;
    }

    /// Takes the interval histogram, leaving an empty one.
    pub fn take_interval(&mut self) -> Histogram<u64> {
        let taken = self.interval.clone();
        self.interval.reset();
        taken
    }

    /// Adds another worker's totals.
    pub fn merge(&mut self, other: &Recorder) {
        // Same bounds everywhere, so `add` cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.latency_from_sent.add(&other.latency_from_sent);
        let _ = self.connect.add(&other.connect);
        let _ = self.loop_lag.add(&other.loop_lag);
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.gaps += other.gaps;
        self.gap_events += other.gap_events;
        self.resets += other.resets;
        self.foreign += other.foreign;
        self.clock_anomalies += other.clock_anomalies;
        self.clients_connected += other.clients_connected;
        self.clients_failed += other.clients_failed;
        self.clients_lost += other.clients_lost;
        self.offline_clients += other.offline_clients;
        self.held_delivered += other.held_delivered;
        self.waited_for_generator += other.waited_for_generator;
        let _ = self.held_latency.add(&other.held_latency);
        for (k, v) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// A short, stable name for an error, for the `errors` table.
pub fn error_kind(err: &ClientError) -> String {
    match err {
        ClientError::Topic { .. } => "bad_topic".into(),
        ClientError::Connect { source, .. } => {
            format!("connect_{:?}", source.kind()).to_lowercase()
        }
        ClientError::Io(e) => format!("io_{:?}", e.kind()).to_lowercase(),
        ClientError::Hyper(_) => "http".into(),
        ClientError::WebSocket(_) => "websocket".into(),
        ClientError::Status { status, .. } => format!("status_{}", status.as_u16()),
        ClientError::Server(_) => "server_error_message".into(),
        ClientError::Protocol(_) => "protocol".into(),
        ClientError::Closed => "closed".into(),
        ClientError::Unsupported(_) => "unsupported".into(),
        ClientError::TooManyReconnects { .. } => "too_many_reconnects".into(),
    }
}

/// What [`Recorder::delivery`] made of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The first delivery of a window event to this client: timed and counted.
    First,
    /// A window event this client already had.
    Duplicate,
    /// A warm-up event, or one after the window.
    OutsideWindow,
    /// Not a payload of this run.
    Foreign,
}

/// Window events whose bits a [`Track`] holds inline: a 30 s window at 1 event/s fits, so
/// the many-subscriber runs keep them in the subscriber's own slot.
const INLINE_WORDS: usize = 2;

/// One client's view of the window: which events it got, in what order.
#[derive(Debug)]
pub struct Track {
    /// One bit per window event. Inline up to `64 × INLINE_WORDS` events: on the heap, these
    /// bits were a cache miss of their own on every delivery at 10,000 subscribers (98% of
    /// [`Recorder::delivery`]'s samples in perf), as each subscriber's word is touched about
    /// once a second.
    seen: SmallVec<[u64; INLINE_WORDS]>,
    /// Highest id delivered so far.
    last_id: u64,
}

/// What a delivery was, for this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first delivery of this window event.
    First,
    /// This client had it already.
    Duplicate,
}

impl Track {
    /// Accounting for a window of `window_events` events.
    pub fn new(window_events: u64) -> Track {
        Track {
            seen: smallvec::smallvec![0; window_events.div_ceil(64) as usize],
            last_id: 0,
        }
    }

    /// Notes delivery of the event with server `id`; returns whether its id went backwards.
    pub fn order(&mut self, id: u64) -> bool {
        if id <= self.last_id {
            return true;
        }
        self.last_id = id;
        false
    }

    /// Starts ordering afresh: the server restarted, and its ids count from 1 again.
    pub fn restart_order(&mut self) {
        self.last_id = 0;
    }

    /// Notes the window event at `index` (0-based within the window).
    pub fn see(&mut self, index: u64) -> Seen {
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            return Seen::Duplicate;
        }
        self.seen[word] |= bit;
        Seen::First
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_counts_duplicates_and_order() {
        let mut t = Track::new(130);
        assert_eq!(t.see(0), Seen::First);
        assert_eq!(t.see(129), Seen::First);
        assert_eq!(t.see(0), Seen::Duplicate);
        assert!(!t.order(5));
        assert!(!t.order(6));
        assert!(t.order(4));
        assert!(t.order(6));
    }

    #[test]
    fn delivery_accounting() {
        let clock = Clock::now();
        let mut rec = Recorder::default();
        let mut track = Track::new(10);
        let due = Instant::now();
        let mut p = String::new();
        let stamp = |seq| payload::Stamp {
            seq,
            due_unix_ns: clock.unix_ns(due),
            sent_after_due_ns: 1_000_000,
        };
        let later = due + std::time::Duration::from_millis(3);
        payload::encode(stamp(5), 64, &mut p);
        let w = (2, 10);
        assert_eq!(
            rec.delivery(&mut track, w, &clock, 1, p.as_bytes(), later),
            Outcome::First
        );
        assert_eq!(
            rec.delivery(&mut track, w, &clock, 2, p.as_bytes(), later),
            Outcome::Duplicate
        );
        payload::encode(stamp(1), 64, &mut p);
        assert_eq!(
            rec.delivery(&mut track, w, &clock, 3, p.as_bytes(), later),
            Outcome::OutsideWindow
        );
        payload::encode(stamp(4), 64, &mut p);
        // Id 2 after id 3: counted out of order, still timed.
        assert_eq!(
            rec.delivery(&mut track, w, &clock, 2, p.as_bytes(), later),
            Outcome::First
        );
        assert_eq!(
            rec.delivery(&mut track, w, &clock, 4, b"hello", later),
            Outcome::Foreign
        );
        assert_eq!(
            (rec.delivered, rec.duplicates, rec.out_of_order, rec.foreign),
            (2, 1, 1, 1)
        );
        let p50 = rec.latency.value_at_quantile(0.5);
        assert!((2_900..=3_100).contains(&p50), "{p50}");
        // Sent 1 ms after its due time: 2 ms from send to receipt.
        let p50 = rec.latency_from_sent.value_at_quantile(0.5);
        assert!((1_900..=2_100).contains(&p50), "{p50}");
    }

    #[test]
    fn recorder_round_trips_through_json() {
        let mut a = Recorder::default();
        a.record_latency(1234);
        a.delivered = 1;
        let text = serde_json::to_string(&a).unwrap();
        let b: Recorder = serde_json::from_str(&text).unwrap();
        assert_eq!(b.latency, a.latency);
        assert_eq!(b.delivered, 1);
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        a.record_latency(100);
        b.record_latency(300);
        b.delivered = 2;
        b.error(&ClientError::Closed);
        a.merge(&b);
        assert_eq!(a.latency.len(), 2);
        assert_eq!(a.delivered, 2);
        assert_eq!(a.errors["closed"], 1);
        // Out-of-range values are clamped, not lost.
        a.record_latency(0);
        a.record_latency(u64::MAX);
        assert_eq!(a.latency.len(), 4);
    }
}

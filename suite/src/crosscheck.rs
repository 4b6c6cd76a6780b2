//! `[latency]`'s cross-check: an independent client beside `load`'s. It shares no code with
//! the load generator's clients ([`crate::rawhttp`]: blocking std sockets, hand-written
//! HTTP/1.1, no async runtime). It subscribes once (SSE or an HTTP stream), publishes on a
//! second keep-alive connection at `[latency]`'s rate, and times each event from just before its
//! publish is written to its arrival on the subscription. Should its median and `load`'s
//! disagree by more than [`TOLERANCE`], one of the two is measuring itself rather than the
//! server, and the report flags the run.
//!
//! Arrival is the kernel's stamp on the bytes that completed the event (`SO_TIMESTAMPNS`), as
//! `load` times its deliveries, so both measure the same span. Its publisher waits for each
//! answer on a thread of its own, as `load`'s does (see [`record`] for why that matters). It also records when its blocked
//! read returned, which adds one wake-up of a sleeping reader: that figure is reported beside
//! the other, not compared. Why: the wake-up is fixed, a few tens of µs on this machine, and
//! with servers answering in about 120 µs it alone put the two 16–21% apart in quick runs.
//!
//! It runs against the very server process of `[latency]`'s run, half its events just before
//! `load` and half just after ([`Bracket`]). Why: this machine's speed moves by tens of percent
//! within minutes, and a cross-check measured minutes away, against another process, differed
//! from `load` by that much (26% in one full run) while agreeing within 4% in a quick run.

use std::io::{self, Write as _};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::report::Percentiles;
use pushbench_servers::Transport;
use serde::{Deserialize, Serialize};

use crate::rawhttp::{Conn, EventStream, Format};
use crate::SuiteError;

/// The techniques cross-checked, in report order.
pub const MODES: [Transport; 2] = [Transport::Stream, Transport::Sse];

/// How far apart the two medians may be, as a fraction of `load`'s.
pub const TOLERANCE: f64 = 0.15;

/// Events published before timing starts.
const WARMUP: usize = 10;

/// Longest wait for one read: an event that does not arrive ends the measurement.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long before each due time the publisher stops sleeping and spins (`load`'s is 400 µs).
const SPIN: Duration = Duration::from_micros(400);

/// Bytes per payload, as in `load`'s runs.
const PAYLOAD_BYTES: usize = 64;

/// One technique's cross-check.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Crosscheck {
    /// The subscription's technique.
    pub transport: Transport,
    /// Events timed (after the warm-up).
    pub events: u64,
    /// Time between publishes, µs.
    pub interval_us: u64,
    /// Publish write → arrival of the bytes completing the event, by the kernel's stamp, µs
    /// (before the stamp was taken, this was `read_us`'s figure).
    pub latency_us: Percentiles,
    /// Publish write → return of the blocked read completing the event, µs: one reader's
    /// wake-up more than `latency_us`. Absent in older summaries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_us: Option<Percentiles>,
}

/// The cross-check of one `[latency]` run, bracketing it: [`Bracket::half`] before the run and
/// again after, on the same server, then [`Bracket::finish`].
#[derive(Debug)]
pub struct Bracket {
    transport: Transport,
    events: usize,
    rate: f64,
    hists: Hists,
    /// Halves timed so far.
    halves: usize,
    error: Option<SuiteError>,
}

impl Bracket {
    /// A cross-check of `events` events in all at `rate`, for a technique it reads; `None`
    /// for the others, or for no events.
    pub fn new(transport: Transport, events: usize, rate: f64) -> Option<Bracket> {
        (MODES.contains(&transport) && events > 0).then(|| Bracket {
            transport,
            events,
            rate,
            hists: Hists::new(),
            halves: 0,
            error: None,
        })
    }

    /// Times half the events against the server at `url`. After a failure it does nothing
    /// more, and [`finish`](Self::finish) reports the failure.
    pub fn half(&mut self, url: &str) {
        self.halves += 1;
        if self.error.is_none() {
            let first = self.events.div_ceil(2);
            let n = if self.halves == 1 {
                first
            } else {
                self.events - first
            };
            if let Err(e) = record(url, self.transport, n, self.rate, &mut self.hists) {
                self.error = Some(e);
            }
        }
    }

    /// The cross-check of every event timed.
    pub fn finish(self) -> Result<Crosscheck, SuiteError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Crosscheck::of(self.transport, self.rate, &self.hists)),
        }
    }
}

/// The two timings of every event: to its stamped arrival, and to its read's return.
#[derive(Debug)]
struct Hists {
    stamped: Histogram<u64>,
    read: Histogram<u64>,
}

impl Hists {
    fn new() -> Hists {
        let h = || {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
        };
        Hists {
            stamped: h(),
            read: h(),
        }
    }
}

impl Crosscheck {
    fn of(transport: Transport, rate: f64, hists: &Hists) -> Crosscheck {
        Crosscheck {
            transport,
            events: hists.stamped.len(),
            interval_us: (1e6 / rate) as u64,
            latency_us: Percentiles::of(&hists.stamped),
            read_us: Some(Percentiles::of(&hists.read)),
        }
    }
}

/// Times `events` events of `transport` (after a warm-up of its own) against the server at
/// `url` (`http://HOST:PORT`), published `rate` times a second, into `hists`.
fn record(
    url: &str,
    transport: Transport,
    events: usize,
    rate: f64,
    hists: &mut Hists,
) -> Result<(), SuiteError> {
    let err =
        |e: &dyn std::fmt::Display| SuiteError::Crosscheck(format!("{}: {e}", transport.name()));
    let format = match transport {
        Transport::Sse => Format::Sse,
        Transport::Stream => Format::Ndjson,
        other => return Err(err(&format!("{} is not a stream it reads", other.name()))),
    };
    if !(rate > 0.0 && rate.is_finite()) {
        return Err(err(&format!("rate {rate} is not a pace")));
    }
    let addr = url
        .strip_prefix("http://")
        .unwrap_or(url)
        .trim_end_matches('/');
    let topic = format!("crosscheck-{}", transport.name());
    let mut sub = Conn::connect(addr, READ_TIMEOUT).map_err(|e| err(&e))?;
    sub.stamp_arrivals().map_err(|e| err(&e))?;
    let request = format!(
        "GET {}?topic={topic} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
        transport.path()
    );
    sub.send(request.as_bytes()).map_err(|e| err(&e))?;
    // The server subscribes before it answers, so once the head is here no event is missed.
    let head = sub.read_head().map_err(|e| err(&e))?;
    if head.status != 200 {
        return Err(err(&format!("subscribing answered {}", head.status)));
    }
    let mut stream = EventStream::new(sub, &head, format);
    // The publisher waits for each answer on a thread of its own while the event is on its way,
    // as `load`'s publisher and any real one do. Why it matters: the server answers the
    // publish before it writes the event, and that answer wakes the waiting reader's core, which
    // on a virtual CPU costs the server's core tens of µs before the event leaves. A client
    // that read its answer only after the event measured 20-30% less than `load` for that
    // reason alone.
    let publisher = Conn::connect(addr, READ_TIMEOUT).map_err(|e| err(&e))?;
    let mut to_server = publisher.writer().map_err(|e| err(&e))?;
    let (answered, answers) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || read_answers(publisher, answered));
    let timed = publish_and_time(
        &mut to_server,
        &answers,
        &mut stream,
        (addr, &topic),
        events,
        rate,
        hists,
    );
    // Ends the answer reader's wait: its read sees the end of the stream.
    let _ = to_server.shutdown(std::net::Shutdown::Both);
    let _ = reader.join();
    timed.map_err(|e| err(&e))
}

/// Reads publish answers off `conn` in order, sending each one's status, until the
/// connection ends or nobody listens.
fn read_answers(mut conn: Conn, answered: std::sync::mpsc::Sender<io::Result<u16>>) {
    loop {
        let answer = conn
            .read_head()
            .and_then(|head| conn.read_sized_body(&head).map(|_| head.status));
        let failed = answer.is_err();
        if answered.send(answer).is_err() || failed {
            return;
        }
    }
}

/// The timed loop of [`record`]: publishes on `to_server` at `rate`, times each event's
/// arrival on `stream`, and checks each publish's answer from `answers`.
fn publish_and_time(
    to_server: &mut std::net::TcpStream,
    answers: &std::sync::mpsc::Receiver<io::Result<u16>>,
    stream: &mut EventStream,
    (addr, topic): (&str, &str),
    events: usize,
    rate: f64,
    hists: &mut Hists,
) -> Result<(), String> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for k in 0..WARMUP + events {
        // Open loop: event k is due at start + (k + 1) × interval, whatever came before.
        let due = start + interval.saturating_mul(u32::try_from(k + 1).unwrap_or(u32::MAX));
        // Sleep until just before the due time, then spin, as `load`'s publisher does. A core
        // that went idle wakes slowly on this kind of VM, and one-subscriber latencies here have
        // two modes (about 0.11 and 0.23 ms). Sleeping to the due time, this client's median
        // fell in the slow one in 3 of 8 quick brackets; spinning, in none of 8.
        std::thread::sleep(due.saturating_duration_since(Instant::now() + SPIN));
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let payload = format!("{k:0>width$}", width = PAYLOAD_BYTES);
        let request = format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        let (t0, t0_wall) = (Instant::now(), SystemTime::now());
        to_server
            .write_all(request.as_bytes())
            .map_err(|e| e.to_string())?;
        let arrival = loop {
            let (got, at) = stream.next_event().map_err(|e| e.to_string())?;
            if got == payload {
                break at;
            }
        };
        match answers.recv_timeout(READ_TIMEOUT) {
            Ok(Ok(200)) => {}
            Ok(Ok(status)) => return Err(format!("publishing answered {status}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("no answer to a publish".into()),
        }
        if k >= WARMUP {
            let us = |d: Duration| (d.as_micros() as u64).max(1);
            let read = arrival.read.saturating_duration_since(t0);
            // Every event is stamped, the socket having asked before it subscribed; should
            // the kernel give none, the read's return is the later, safe bound.
            let stamped = match arrival.stamped {
                Some(at) => at.duration_since(t0_wall).unwrap_or_default(),
                None => read,
            };
            hists.stamped.saturating_record(us(stamped));
            hists.read.saturating_record(us(read));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pushbench_servers::{Hub, HubConfig};

    /// One cross-check of `events` events, as a bracket's two halves make one.
    fn measure(
        url: &str,
        transport: Transport,
        events: usize,
        rate: f64,
    ) -> Result<Crosscheck, SuiteError> {
        let mut hists = Hists::new();
        record(url, transport, events, rate, &mut hists)?;
        Ok(Crosscheck::of(transport, rate, &hists))
    }

    /// A pushbench server of `t` on a thread of its own, until the test ends.
    fn server(t: Transport) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let hub = Hub::new(HubConfig::default());
                let forever = std::future::pending::<()>();
                if t == Transport::Sse {
                    pushbench_servers::sse::run(listener, hub, forever).await;
                } else {
                    pushbench_servers::stream::run(listener, hub, forever).await;
                }
            });
        });
        url
    }

    #[test]
    fn times_every_event_of_sse_and_a_stream() {
        for t in MODES {
            let url = server(t);
            let t0 = Instant::now();
            let c = measure(&url, t, 20, 200.0).unwrap();
            assert_eq!((c.transport, c.events), (t, 20));
            assert_eq!(c.interval_us, 5_000);
            assert!(c.latency_us.p50 > 0 && c.latency_us.p99 >= c.latency_us.p50);
            // The read returns after the bytes arrive, never before.
            let read = c.read_us.unwrap();
            assert!(read.p50 >= c.latency_us.p50, "{t:?}: {read:?} {c:?}");
            // 30 events 5 ms apart: paced, not a burst.
            assert!(t0.elapsed() >= Duration::from_millis(150), "{t:?}");
        }
    }

    #[test]
    fn a_bracket_pools_both_halves_and_reports_the_first_failure() {
        let url = server(Transport::Sse);
        assert!(Bracket::new(Transport::Ws, 10, 200.0).is_none());
        assert!(Bracket::new(Transport::Sse, 0, 200.0).is_none());
        let mut b = Bracket::new(Transport::Sse, 9, 200.0).unwrap();
        b.half(&url);
        b.half(&url);
        let c = b.finish().unwrap();
        assert_eq!(
            (c.transport, c.events, c.interval_us),
            (Transport::Sse, 9, 5_000)
        );
        // A server gone between the halves: the bracket fails rather than report half.
        let mut b = Bracket::new(Transport::Sse, 4, 200.0).unwrap();
        b.half(&url);
        let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone_url = format!("http://{}", gone.local_addr().unwrap());
        drop(gone);
        b.half(&gone_url);
        let e = b.finish().unwrap_err();
        assert!(e.to_string().starts_with("cross-check: sse:"), "{e}");
    }

    #[test]
    fn a_server_that_never_sends_the_event_fails_within_the_timeout() {
        // A listener nobody serves: the kernel accepts, nothing answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let t0 = Instant::now();
        let e = measure(&url, Transport::Sse, 5, 100.0).unwrap_err();
        assert!(e.to_string().starts_with("cross-check: sse:"), "{e}");
        assert!(t0.elapsed() < READ_TIMEOUT * 2);
        assert!(measure(&url, Transport::Ws, 5, 100.0).is_err());
    }
}

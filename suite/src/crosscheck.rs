//! `[latency]`'s cross-check: an independent client beside `load`'s. It shares no code with
//! the load generator's clients ([`crate::rawhttp`]: blocking std sockets, hand-written
//! HTTP/1.1, no async runtime). It subscribes once (SSE or an HTTP stream), publishes on a
//! second keep-alive connection at `[latency]`'s rate, and times each event from just before its
//! publish is written to the read that completes it on the subscription. Should its median and
//! `load`'s disagree by more than [`TOLERANCE`], one of the two is measuring itself rather than
//! the server, and the report flags the run.
//!
//! It runs against the very server process of `[latency]`'s run, half its events just before
//! `load` and half just after ([`Bracket`]). Why: this machine's speed moves by tens of percent
//! within minutes, and a cross-check measured minutes away, against another process, differed
//! from `load` by that much (26% in one full run) while agreeing within 4% in a quick run.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::report::Percentiles;
use pushbench_servers::Transport;
use serde::{Deserialize, Serialize};

use crate::headline::fmt_value;
use crate::rawhttp::{Conn, EventStream, Format};
use crate::summary::{Run, Server, Summary};
use crate::SuiteError;

/// The techniques cross-checked, in report order.
pub const MODES: [Transport; 2] = [Transport::Stream, Transport::Sse];

/// How far apart the two medians may be, as a fraction of `load`'s.
pub const TOLERANCE: f64 = 0.15;

/// Events published before timing starts.
const WARMUP: usize = 10;

/// Longest wait for one read: an event that does not arrive ends the measurement.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// Publish write → read completing the event, µs.
    pub latency_us: Percentiles,
}

/// The `load` run this cross-checks: `[latency]`'s, on pushbench.
pub fn load_run<'a>(s: &'a Summary, c: &Crosscheck) -> Option<&'a Run> {
    s.latency_run(Server::Pushbench, c.transport)
}

impl Crosscheck {
    /// How far its median is from `load`'s, as a fraction of `load`'s.
    pub fn disagreement(&self, load: &Run) -> f64 {
        let theirs = load.latency_us.p50.max(1) as f64;
        (self.latency_us.p50 as f64 - theirs).abs() / theirs
    }
}

/// The cross-check of one `[latency]` run, bracketing it: [`Bracket::half`] before the run and
/// again after, on the same server, then [`Bracket::finish`].
#[derive(Debug)]
pub struct Bracket {
    transport: Transport,
    events: usize,
    rate: f64,
    hist: Histogram<u64>,
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
            hist: histogram(),
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
            if let Err(e) = record(url, self.transport, n, self.rate, &mut self.hist) {
                self.error = Some(e);
            }
        }
    }

    /// The cross-check of every event timed.
    pub fn finish(self) -> Result<Crosscheck, SuiteError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Crosscheck::of(self.transport, self.rate, &self.hist)),
        }
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

impl Crosscheck {
    fn of(transport: Transport, rate: f64, hist: &Histogram<u64>) -> Crosscheck {
        Crosscheck {
            transport,
            events: hist.len(),
            interval_us: (1e6 / rate) as u64,
            latency_us: Percentiles::of(hist),
        }
    }
}

/// Times `events` events of `transport` (after a warm-up of its own) against the server at
/// `url` (`http://HOST:PORT`), published `rate` times a second, into `hist`.
fn record(
    url: &str,
    transport: Transport,
    events: usize,
    rate: f64,
    hist: &mut Histogram<u64>,
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
    let mut publisher = Conn::connect(addr, READ_TIMEOUT).map_err(|e| err(&e))?;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    for k in 0..WARMUP + events {
        // Open loop: event k is due at start + (k + 1) × interval, whatever came before.
        let due = start + interval.saturating_mul(u32::try_from(k + 1).unwrap_or(u32::MAX));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let payload = format!("{k:0>width$}", width = PAYLOAD_BYTES);
        let request = format!(
            "POST /publish?topic={topic} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n{payload}",
            payload.len()
        );
        let t0 = Instant::now();
        publisher.send(request.as_bytes()).map_err(|e| err(&e))?;
        let received = loop {
            let (got, at) = stream.next_event().map_err(|e| err(&e))?;
            if got == payload {
                break at;
            }
        };
        let answer = publisher.read_head().map_err(|e| err(&e))?;
        publisher.read_sized_body(&answer).map_err(|e| err(&e))?;
        if answer.status != 200 {
            return Err(err(&format!("publishing answered {}", answer.status)));
        }
        if k >= WARMUP {
            let us = received.saturating_duration_since(t0).as_micros() as u64;
            hist.saturating_record(us.max(1));
        }
    }
    Ok(())
}

/// `[latency]`'s sentence on the cross-check: each technique's median beside `load`'s.
pub fn reading(s: &Summary) -> String {
    let parts: Vec<_> = s
        .crosscheck
        .iter()
        .map(|c| {
            let ms = |us: u64| fmt_value(us as f64 / 1000.0);
            let mut x = format!(
                "{} p50 {} ms (p99 {} ms)",
                c.transport.name(),
                ms(c.latency_us.p50),
                ms(c.latency_us.p99)
            );
            if let Some(r) = load_run(s, c) {
                x += &format!(
                    " against `load`'s {} ms, {:.0}% apart",
                    ms(r.latency_us.p50),
                    100.0 * c.disagreement(r)
                );
            }
            x
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "An independent client (blocking sockets, hand-written HTTP/1.1, no async runtime, \
         sharing no code with `load`'s clients) timed each event from its publish write to the \
         read that completed it, by the clock when that read returned (`load` times a delivery \
         by the kernel's arrival stamp instead, so the two also differ by one wake-up of a \
         blocked reader), against the same server process as `load`'s run, half its events \
         just before that run and half just after: {}. Runs more than {:.0}% apart are flagged \
         under Health.",
        parts.join("; "),
        TOLERANCE * 100.0
    )
}

/// Why `r` is flagged, when a cross-check of it disagrees by more than [`TOLERANCE`].
pub fn flag(s: &Summary, r: &Run) -> Option<String> {
    let c = s.crosscheck.iter().find(|c| {
        load_run(s, c).is_some_and(|l| std::ptr::eq(l, r)) && c.disagreement(r) > TOLERANCE
    })?;
    Some(format!(
        "the independent client's p50 ({} ms) is {:.0}% from this run's ({} ms)",
        fmt_value(c.latency_us.p50 as f64 / 1000.0),
        100.0 * c.disagreement(r),
        fmt_value(r.latency_us.p50 as f64 / 1000.0)
    ))
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
        let mut hist = histogram();
        record(url, transport, events, rate, &mut hist)?;
        Ok(Crosscheck::of(transport, rate, &hist))
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

//! `[floor]`: raw TCP ping-pong on loopback, the physical floor of a run. The echo side runs
//! on the server core and the pinging side on the load generator's, as in every load run.
//!
//! It is measured twice on one connection: back to back (each ping as soon as the last pong
//! arrived, so both cores stay awake) and paced at `[latency]`'s event rate (a sleep between
//! pings, so both cores go idle). On a virtual machine an idle vCPU wakes slowly, and a paced
//! round trip can take ten times a back-to-back one. An event published every 10 ms meets the
//! paced floor, so `[latency]` and the polling model are read against that one.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::report::Percentiles;
use serde::{Deserialize, Serialize};

use crate::numfmt::fmt_interval;
use crate::numfmt::fmt_value;
use crate::pin::{pin_this_thread, Pinning};
use crate::plan::Params;
use crate::SuiteError;

/// Bytes per ping: a small event's worth.
const PING_BYTES: usize = 64;

/// Back-to-back round trips before measuring (connection and caches settle).
const WARMUP: usize = 100;

/// Paced round trips before measuring: the first few after the back-to-back burst still find
/// the cores awake.
pub const PACED_WARMUP: usize = 5;

/// The floor of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    /// Back-to-back round trips measured.
    pub round_trips: u64,
    /// Bytes each way per round trip.
    pub bytes: usize,
    /// Back-to-back round-trip time in **nanoseconds**.
    pub rtt_ns: Percentiles,
    /// Paced round-trip time in **nanoseconds**, one ping every `paced_interval_us` (its
    /// `count` is the paced round trips). `None` in summaries made before it was measured.
    #[serde(default)]
    pub paced_rtt_ns: Option<Percentiles>,
    /// The pace of the paced round trips, µs between pings.
    #[serde(default)]
    pub paced_interval_us: Option<u64>,
}

impl Floor {
    /// The back-to-back p50, µs.
    pub fn back_to_back_p50_us(&self) -> f64 {
        self.rtt_ns.p50 as f64 / 1000.0
    }

    /// The paced p50, µs, when measured.
    pub fn paced_p50_us(&self) -> Option<f64> {
        self.paced_rtt_ns.as_ref().map(|p| p.p50 as f64 / 1000.0)
    }

    /// The round trip, p50 in µs, that something paced like `[latency]`'s events meets: the
    /// paced floor, or the back-to-back one in summaries that lack it.
    pub fn paced_or_back_to_back_p50_us(&self) -> f64 {
        self.paced_p50_us()
            .unwrap_or_else(|| self.back_to_back_p50_us())
    }

    /// The pace, in words (`10 ms`).
    pub fn pace(&self) -> Option<String> {
        self.paced_interval_us
            .map(|us| fmt_interval(us as f64 / 1e6))
    }

    /// The report's one-line account of both floors.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}-byte TCP round trip back to back p50 {:.1} µs, p99 {:.1} µs ({} round trips)",
            self.bytes,
            self.rtt_ns.p50 as f64 / 1000.0,
            self.rtt_ns.p99 as f64 / 1000.0,
            self.round_trips
        );
        if let (Some(p), Some(every)) = (&self.paced_rtt_ns, self.pace()) {
            let _ = write!(
                line,
                "; paced one every {every} like [latency]'s events, p50 {:.1} µs, p99 {:.1} µs \
                 ({} round trips)",
                p.p50 as f64 / 1000.0,
                p.p99 as f64 / 1000.0,
                p.count
            );
        }
        line + "."
    }

    /// `[floor]`'s reading: what pacing does to the round trip.
    pub fn reading(&self) -> String {
        let (Some(paced), Some(every)) = (self.paced_p50_us(), self.pace()) else {
            return String::new();
        };
        let b2b = self.back_to_back_p50_us();
        let ratio = paced / b2b.max(1e-9);
        let head = format!(
            "Paced one every {every}, the round trip takes {}× as long as back to back (p50 \
             {} µs against {} µs).",
            fmt_value(ratio),
            fmt_value(paced),
            fmt_value(b2b)
        );
        if ratio >= 1.5 {
            format!(
                "{head} Nothing on the wire changed: the difference is the time idle cores take \
                 to wake up, which every event published at [latency]'s pace pays before any \
                 server code runs."
            )
        } else {
            format!("{head} Idle cores wake quickly on this machine, so the two floors agree.")
        }
    }
}

/// How the paced round trips go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    /// Time between pings (their due times; a slow round trip does not shift the next).
    pub interval: Duration,
    /// Round trips measured (after [`PACED_WARMUP`]).
    pub round_trips: usize,
}

impl Pace {
    /// `[latency]`'s pace (one ping per event), with as many round trips as the scale's
    /// back-to-back count but no more than fit in `floor_paced_budget`. `None` when nothing
    /// fits (summaries from before the budget existed).
    pub fn of(params: &Params) -> Option<Pace> {
        if !(params.latency_rate > 0.0 && params.latency_rate.is_finite()) {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / params.latency_rate);
        let fit = params.floor_paced_budget.as_nanos() / interval.as_nanos().max(1);
        let round_trips = usize::try_from(fit)
            .unwrap_or(usize::MAX)
            .saturating_sub(PACED_WARMUP)
            .min(params.floor_round_trips);
        (round_trips > 0).then_some(Pace {
            interval,
            round_trips,
        })
    }
}

/// Measures `round_trips` back-to-back ping-pongs of [`PING_BYTES`] over one loopback TCP
/// connection with Nagle off, then the paced ones of `pace` on the same connection.
pub fn measure(
    round_trips: usize,
    pace: Option<Pace>,
    pinning: &Pinning,
) -> Result<Floor, SuiteError> {
    let io = |e: std::io::Error| SuiteError::Floor(e.to_string());
    let (mut sock, echo) = connect(pinning).map_err(io)?;
    let back_to_back = ping_pong(&mut sock, WARMUP, round_trips, None)?;
    let paced = match pace {
        Some(p) => Some(ping_pong(
            &mut sock,
            PACED_WARMUP,
            p.round_trips,
            Some(p.interval),
        )?),
        None => None,
    };
    drop(sock);
    echo.join()
        .map_err(|_| SuiteError::Floor("the echo thread panicked".into()))?
        .map_err(io)?;
    Ok(Floor {
        round_trips: back_to_back.len(),
        bytes: PING_BYTES,
        rtt_ns: Percentiles::of(&back_to_back),
        paced_rtt_ns: paced.as_ref().map(Percentiles::of),
        paced_interval_us: pace.map(|p| p.interval.as_micros() as u64),
    })
}

/// A connection to an echo thread on the server core; the thread ends when the connection
/// closes.
fn connect(pinning: &Pinning) -> std::io::Result<(TcpStream, JoinHandle<std::io::Result<()>>)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let server_core = pinning.pinned_server_core();
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        if let Some(core) = server_core {
            pin_this_thread(core);
        }
        let (mut sock, _) = listener.accept()?;
        sock.set_nodelay(true)?;
        let mut buf = [0u8; PING_BYTES];
        loop {
            match sock.read_exact(&mut buf) {
                Ok(()) => sock.write_all(&buf)?,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    });
    let sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    // A dead echo thread must end the measurement, not hang it.
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok((sock, echo))
}

/// `warmup + n` round trips on `sock`, the last `n` recorded (ns). With `interval`, ping `k`
/// is due at start + (k + 1) × interval, open loop like `[latency]`'s publisher, and the
/// pinger sleeps until then; the time runs from the write, not from the due time.
fn ping_pong(
    sock: &mut TcpStream,
    warmup: usize,
    n: usize,
    interval: Option<Duration>,
) -> Result<Histogram<u64>, SuiteError> {
    let io = |e: std::io::Error| SuiteError::Floor(e.to_string());
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| SuiteError::Floor(e.to_string()))?;
    let ping = [b'p'; PING_BYTES];
    let mut pong = [0u8; PING_BYTES];
    let start = Instant::now();
    for i in 0..warmup + n {
        if let Some(every) = interval {
            let due = start + every.saturating_mul(u32::try_from(i + 1).unwrap_or(u32::MAX));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let t0 = Instant::now();
        sock.write_all(&ping).map_err(io)?;
        sock.read_exact(&mut pong).map_err(io)?;
        if i >= warmup {
            hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
        }
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scale;

    #[test]
    fn measures_back_to_back_and_paced_round_trips() {
        let pace = Pace {
            interval: Duration::from_millis(2),
            round_trips: 20,
        };
        let t0 = Instant::now();
        let f = measure(50, Some(pace), &Pinning::default()).unwrap();
        assert_eq!(f.round_trips, 50);
        assert!(f.rtt_ns.min > 0 && f.rtt_ns.p50 >= f.rtt_ns.min);
        let paced = f.paced_rtt_ns.unwrap();
        assert_eq!(paced.count, 20);
        assert!(paced.min > 0 && paced.p50 >= paced.min);
        assert_eq!(f.paced_interval_us, Some(2_000));
        // 25 pings 2 ms apart: the pacing really slept.
        assert!(
            t0.elapsed() >= Duration::from_millis(50),
            "{:?}",
            t0.elapsed()
        );
        assert_eq!(f.paced_p50_us(), Some(paced.p50 as f64 / 1000.0));
    }

    #[test]
    fn the_pace_is_latencys_rate_within_the_budget() {
        let full = Pace::of(&Params::of(Scale::Full)).unwrap();
        assert_eq!(full.interval, Duration::from_millis(10));
        // At most about 5 s of pings at full scale, about 2 s at quick, well under 1 s at tiny.
        for (scale, most) in [(Scale::Full, 5.0), (Scale::Quick, 2.0), (Scale::Tiny, 0.5)] {
            let p = Pace::of(&Params::of(scale)).unwrap();
            let secs = p.interval.as_secs_f64() * (p.round_trips + PACED_WARMUP) as f64;
            assert!(secs <= most && p.round_trips >= 10, "{scale:?}: {p:?}");
        }
        let mut old = Params::of(Scale::Tiny);
        old.floor_paced_budget = Duration::ZERO;
        assert_eq!(Pace::of(&old), None);
    }

    #[test]
    fn old_summaries_without_the_paced_floor_still_load() {
        let old = r#"{"round_trips":3,"bytes":64,"rtt_ns":{"count":3,"min":1,"p50":2000,
            "p90":3,"p99":4,"p999":5,"max":6,"mean":2.0}}"#;
        let f: Floor = serde_json::from_str(old).unwrap();
        assert!(f.paced_rtt_ns.is_none() && f.paced_interval_us.is_none());
        assert_eq!(f.paced_or_back_to_back_p50_us(), 2.0);
    }
}

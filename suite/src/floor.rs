//! `[floor]`: raw TCP ping-pong on loopback, the physical floor of a run. The echo side runs
//! on the server core and the pinging side on the load generator's, as in every load run.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::report::Percentiles;
use serde::{Deserialize, Serialize};

use crate::pin::Pinning;
use crate::SuiteError;

/// Bytes per ping: a small event's worth.
const PING_BYTES: usize = 64;

/// Round trips before measuring (connection and caches settle).
const WARMUP: usize = 100;

/// The floor of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Floor {
    /// Round trips measured.
    pub round_trips: u64,
    /// Bytes each way per round trip.
    pub bytes: usize,
    /// Round-trip time in **nanoseconds**.
    pub rtt_ns: Percentiles,
}

/// Measures `round_trips` ping-pongs of [`PING_BYTES`] over one loopback TCP connection with
/// Nagle off.
pub fn measure(round_trips: usize, pinning: &Pinning) -> Result<Floor, SuiteError> {
    let io = |e: std::io::Error| SuiteError::Floor(e.to_string());
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let server_core = pinning.server_core.filter(|_| pinning.pinned);
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
    let mut sock = TcpStream::connect(addr).map_err(io)?;
    sock.set_nodelay(true).map_err(io)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)
        .map_err(|e| SuiteError::Floor(e.to_string()))?;
    let ping = [b'p'; PING_BYTES];
    let mut pong = [0u8; PING_BYTES];
    for i in 0..WARMUP + round_trips {
        let t0 = Instant::now();
        sock.write_all(&ping).map_err(io)?;
        sock.read_exact(&mut pong).map_err(io)?;
        if i >= WARMUP {
            hist.saturating_record((t0.elapsed().as_nanos() as u64).max(1));
        }
    }
    drop(sock);
    echo.join()
        .map_err(|_| SuiteError::Floor("the echo thread panicked".into()))?
        .map_err(io)?;
    Ok(Floor {
        round_trips: hist.len(),
        bytes: PING_BYTES,
        rtt_ns: Percentiles::of(&hist),
    })
}

/// Moves the calling thread (only) to `core`, via its thread id and `taskset -p`.
fn pin_this_thread(core: usize) {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    // `/proc/thread-self` points at `PID/task/TID`.
    if let Some(tid) = link.file_name().and_then(|t| t.to_str()) {
        let _ = std::process::Command::new("taskset")
            .args(["-p", "-c", &core.to_string(), tid])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_round_trips() {
        let f = measure(50, &Pinning::default()).unwrap();
        assert_eq!(f.round_trips, 50);
        assert!(f.rtt_ns.min > 0 && f.rtt_ns.p50 >= f.rtt_ns.min);
    }
}

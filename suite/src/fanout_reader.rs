//! The reader half of `[fanout]`'s physical limit ([`crate::fanout_floor`]): N loopback
//! connections, each read by its own task on one tokio runtime thread, every frame timed from
//! the due time the writer stamped into it.
//!
//! The reader is not what is measured, so a runtime is fine here (the load generator's
//! subscribers use one too); the writer is the plain blocking loop. It runs in a process of
//! its own (`pushbench fanout-floor-reader`): at 10,000 subscribers, both ends of every
//! connection in one process would be 20,000 sockets, past the open-files hard limit. Tests run
//! it on a thread instead.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::report::Percentiles;
use pushbench_loadgen::load::schedule::Clock;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::SuiteError;

/// Bytes per frame: about what one 64-byte event costs on the wire as SSE, WebSocket or a
/// stream line (84–89 bytes in `[fanout]` before protocol version 2; SSE's ids have carried the
/// server's epoch since, 9 bytes more, so an SSE frame is about 95 bytes now).
pub const FRAME_BYTES: usize = 85;

/// What the reader must do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderSpec {
    /// The writer's listening address.
    pub addr: SocketAddr,
    /// Connections to open.
    pub sockets: usize,
    /// Frames to read on each, after the warm-up.
    pub events: usize,
    /// Frames read first on each without being timed.
    pub warmup: usize,
    /// How long the reading may take once every connection is open, ms: a frame not read by
    /// then counts as missing.
    pub read_for_ms: u64,
}

/// What the reader found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReaderResult {
    /// Frames read, on all connections.
    pub delivered: u64,
    /// Frames not read in time, or out of sequence.
    pub missing: u64,
    /// Due time → read, ns, of every frame read.
    pub latency_ns: Percentiles,
}

/// What the reader tells the writer, one JSON line each on a child's stdout.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReaderMsg {
    /// Every connection is open and being read.
    Ready,
    /// Done reading.
    Done(ReaderResult),
    /// It could not go on.
    Failed(String),
}

/// Frame `seq`, due at `due_unix_ns`: both little-endian, then filler.
pub fn frame(seq: u64, due_unix_ns: u64) -> [u8; FRAME_BYTES] {
    let mut f = [b'.'; FRAME_BYTES];
    f[..8].copy_from_slice(&seq.to_le_bytes());
    f[8..16].copy_from_slice(&due_unix_ns.to_le_bytes());
    f
}

/// `(seq, due_unix_ns)` of a frame.
fn parse(f: &[u8; FRAME_BYTES]) -> (u64, u64) {
    let mut seq = [0u8; 8];
    let mut due = [0u8; 8];
    seq.copy_from_slice(&f[..8]);
    due.copy_from_slice(&f[8..16]);
    (u64::from_le_bytes(seq), u64::from_le_bytes(due))
}

/// Opens the connections, calls `ready`, and reads every frame (or gives up on it after
/// `read_for_ms`).
pub fn read(spec: &ReaderSpec, ready: impl FnOnce()) -> Result<ReaderResult, SuiteError> {
    let err = |e: &dyn std::fmt::Display| SuiteError::FanoutFloor(format!("reader: {e}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| err(&e))?;
    runtime.block_on(async {
        let mut socks = Vec::with_capacity(spec.sockets);
        for _ in 0..spec.sockets {
            let sock = TcpStream::connect(spec.addr).await.map_err(|e| err(&e))?;
            sock.set_nodelay(true).map_err(|e| err(&e))?;
            socks.push(sock);
        }
        // The same link between the monotonic and the Unix clock the load generator's worker
        // processes use: the writer stamps Unix ns, this process converts its reads.
        let clock = Clock::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(spec.read_for_ms);
        let tasks: Vec<_> = socks
            .into_iter()
            .map(|s| tokio::spawn(read_frames(s, spec.warmup, spec.events, clock, deadline)))
            .collect();
        ready();
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).map_err(|e| err(&e))?;
        let mut missing = 0;
        for task in tasks {
            let got = task.await.map_err(|e| err(&e))?;
            missing += (spec.events - got.len()) as u64;
            for ns in got {
                hist.saturating_record(ns.max(1));
            }
        }
        Ok(ReaderResult {
            delivered: hist.len(),
            missing,
            latency_ns: Percentiles::of(&hist),
        })
    })
}

/// Reads up to `warmup + events` frames from `sock` until `deadline`: each frame's due → read
/// time, ns, past the warm-up. Stops at the first frame out of sequence (the rest count as
/// missing).
async fn read_frames(
    mut sock: TcpStream,
    warmup: usize,
    events: usize,
    clock: Clock,
    deadline: tokio::time::Instant,
) -> Vec<u64> {
    let mut out = Vec::with_capacity(events);
    let mut buf = [0u8; FRAME_BYTES];
    for k in 0..(warmup + events) as u64 {
        let read = tokio::time::timeout_at(deadline, sock.read_exact(&mut buf)).await;
        if !matches!(read, Ok(Ok(_))) {
            break;
        }
        let received = clock.unix_ns(Instant::now());
        let (seq, due) = parse(&buf);
        if seq != k {
            break;
        }
        if k >= warmup as u64 {
            out.push(received.saturating_sub(due));
        }
    }
    out
}

/// `pushbench fanout-floor-reader --spec JSON`: raises the open-files limit, then reads as
/// `spec` says, with [`ReaderMsg`] lines on stdout.
pub fn run_child(spec: &str) -> Result<(), SuiteError> {
    let err = |e: &dyn std::fmt::Display| SuiteError::FanoutFloor(format!("reader: {e}"));
    let spec: ReaderSpec = serde_json::from_str(spec).map_err(|e| err(&e))?;
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(|e| err(&e))?;
    if limit < spec.sockets as u64 + 16 {
        return Err(err(&format!(
            "{} connections need more than the open-files limit, {limit}",
            spec.sockets
        )));
    }
    let send = |msg: &ReaderMsg| -> Result<(), SuiteError> {
        let line = serde_json::to_string(msg).map_err(|e| err(&e))?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| err(&e))
    };
    let mut ready_sent = Ok(());
    let result = read(&spec, || ready_sent = send(&ReaderMsg::Ready));
    ready_sent?;
    match result {
        Ok(r) => send(&ReaderMsg::Done(r)),
        Err(e) => {
            send(&ReaderMsg::Failed(e.to_string()))?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_sequence_and_due_time() {
        let f = frame(7, 1_234_567_890_123);
        assert_eq!(f.len(), FRAME_BYTES);
        assert_eq!(parse(&f), (7, 1_234_567_890_123));
    }

    #[test]
    fn a_writer_that_stops_early_leaves_frames_missing_within_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let spec = ReaderSpec {
            addr: listener.local_addr().unwrap(),
            sockets: 3,
            events: 3,
            warmup: 1,
            read_for_ms: 300,
        };
        let writer = std::thread::spawn(move || {
            let mut socks: Vec<_> = (0..3).map(|_| listener.accept().unwrap().0).collect();
            let clock = Clock::now();
            // The warm-up and one of three events, then on the last socket a frame out of
            // sequence.
            for k in 0..2 {
                for s in &mut socks {
                    std::io::Write::write_all(s, &frame(k, clock.unix_ns(Instant::now()))).unwrap();
                }
            }
            std::io::Write::write_all(&mut socks[2], &frame(9, 0)).unwrap();
            std::thread::sleep(Duration::from_millis(500));
        });
        let t0 = Instant::now();
        let r = read(&spec, || {}).unwrap();
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
        assert_eq!((r.delivered, r.missing), (3, 6));
        assert!(r.latency_ns.p50 > 0);
        writer.join().unwrap();
    }
}

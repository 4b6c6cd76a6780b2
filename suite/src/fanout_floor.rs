//! `[fanout]`'s physical limit: what fanning one event out to N loopback sockets costs with no
//! server at all. A writer thread on the server core runs a plain blocking loop of `write(2)`
//! (one 85-byte frame to each of N sockets, Nagle off) once per event; a reader on the load
//! generator's core ([`crate::fanout_reader`]) reads every socket. Each delivery is timed from
//! the start of its event's write loop, and the writer's CPU time is read around each loop.
//! Every server's fan-out p99 and CPU per delivery are read as multiples of these.

use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pushbench_loadgen::load::report::Percentiles;
use pushbench_loadgen::load::schedule::Clock;
use serde::{Deserialize, Serialize};

use crate::fanout_reader::{self, frame, ReaderMsg, ReaderSpec, FRAME_BYTES};
use crate::pin::{pin_this_thread, Pinning};
use crate::SuiteError;

/// How long the reader may take to open its connections.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// Events written first and not timed: the first one after connecting finds cold caches and
/// fresh sockets, which no server's steady fan-out meets.
const WARMUP: usize = 1;

/// Slack after the last event for the reader to finish and report.
const READ_SLACK: Duration = Duration::from_secs(10);

/// The physical limit at one size.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutFloor {
    /// Connections (subscribers).
    pub sockets: usize,
    /// Events written to every connection.
    pub events: u64,
    /// Time between events, ms.
    pub gap_ms: f64,
    /// Bytes per frame.
    pub frame_bytes: usize,
    /// Frames the reader got (sockets × events when nothing is missing).
    pub deliveries: u64,
    /// Frames the reader did not get in time.
    pub missing: u64,
    /// Start of the event's write loop → frame read, ns, over every delivery.
    pub latency_ns: Percentiles,
    /// Mean duration of one event's write loop (N writes), µs.
    pub write_loop_us: f64,
    /// The writer thread's CPU time in its write loops, ns.
    pub writer_cpu_ns: u64,
    /// The writer's CPU time per 1,000 writes, ms: the unit of the servers' CPU per 1,000
    /// deliveries.
    pub cpu_ms_per_1k: f64,
}

/// Where the reader half runs.
#[derive(Debug, Clone, Copy)]
pub enum ReaderAt<'a> {
    /// `EXE fanout-floor-reader` in its own process, with its own open-files limit: what the
    /// suite uses.
    Process(&'a Path),
    /// A thread of this process: enough sockets for tests, not for 10,000 subscribers.
    Thread,
}

/// Measures the physical limit for `sockets` connections: `events` events `gap` apart.
pub fn measure(
    reader: ReaderAt<'_>,
    sockets: usize,
    events: usize,
    gap: Duration,
    pinning: &Pinning,
) -> Result<FanoutFloor, SuiteError> {
    let io = |e: std::io::Error| SuiteError::FanoutFloor(e.to_string());
    // This process holds the writer's end of every connection (the reader's are in its own
    // process, or in this one for tests).
    let need = match reader {
        ReaderAt::Process(_) => sockets,
        ReaderAt::Thread => 2 * sockets,
    } as u64
        + 64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).map_err(io)?;
    if limit < need {
        return Err(SuiteError::FanoutFloor(format!(
            "{sockets} sockets need an open-files limit of {need}; it is {limit}"
        )));
    }
    let listener = TcpListener::bind("127.0.0.1:0").map_err(io)?;
    let writing = gap.saturating_mul(u32::try_from(WARMUP + events).unwrap_or(u32::MAX));
    let spec = ReaderSpec {
        addr: listener.local_addr().map_err(io)?,
        sockets,
        events,
        warmup: WARMUP,
        read_for_ms: (writing + READ_SLACK).as_millis() as u64,
    };
    let (rx, child) = start_reader(reader, &spec)?;
    let result = write_and_collect(&listener, &rx, sockets, events, gap, pinning);
    if let Some(mut child) = child {
        end_child(&mut child);
    }
    result
}

/// The measurement once the reader is starting: accept its connections, write every event,
/// and collect what it read.
fn write_and_collect(
    listener: &TcpListener,
    rx: &mpsc::Receiver<ReaderMsg>,
    sockets: usize,
    events: usize,
    gap: Duration,
    pinning: &Pinning,
) -> Result<FanoutFloor, SuiteError> {
    let conns = accept_all(listener, sockets, rx)?;
    match rx.recv_timeout(SETUP_TIMEOUT) {
        Ok(ReaderMsg::Ready) => {}
        other => return Err(reader_gone(other)),
    }
    let server_core = pinning.pinned_server_core();
    let writer = std::thread::spawn(move || write_events(conns, events, gap, server_core));
    let written = writer
        .join()
        .map_err(|_| SuiteError::FanoutFloor("the writer thread panicked".into()))??;
    let got = match rx.recv_timeout(READ_SLACK * 2) {
        Ok(ReaderMsg::Done(r)) => r,
        other => return Err(reader_gone(other)),
    };
    // Closed only now, so closing thousands of sockets costs the cores nothing while the
    // reader is still timing the last event.
    drop(written.conns);
    let writes = (sockets * events).max(1) as f64;
    Ok(FanoutFloor {
        sockets,
        events: events as u64,
        gap_ms: gap.as_secs_f64() * 1000.0,
        frame_bytes: FRAME_BYTES,
        deliveries: got.delivered,
        missing: got.missing,
        latency_ns: got.latency_ns,
        write_loop_us: written.loop_ns as f64 / events.max(1) as f64 / 1000.0,
        writer_cpu_ns: written.cpu_ns,
        cpu_ms_per_1k: written.cpu_ns as f64 / writes / 1000.0,
    })
}

/// The error for a reader that said something else, or nothing, when it should have answered.
fn reader_gone(got: Result<ReaderMsg, mpsc::RecvTimeoutError>) -> SuiteError {
    SuiteError::FanoutFloor(match got {
        Ok(ReaderMsg::Failed(e)) => e,
        Ok(other) => format!("the reader answered {other:?} out of turn"),
        Err(mpsc::RecvTimeoutError::Timeout) => "the reader did not answer in time".into(),
        Err(mpsc::RecvTimeoutError::Disconnected) => "the reader ended without an answer".into(),
    })
}

/// Starts the reader; its messages arrive on the receiver.
fn start_reader(
    at: ReaderAt<'_>,
    spec: &ReaderSpec,
) -> Result<(mpsc::Receiver<ReaderMsg>, Option<Child>), SuiteError> {
    let (tx, rx) = mpsc::channel();
    match at {
        ReaderAt::Thread => {
            let spec = spec.clone();
            std::thread::spawn(move || {
                let ready = tx.clone();
                let msg = match fanout_reader::read(&spec, move || {
                    let _ = ready.send(ReaderMsg::Ready);
                }) {
                    Ok(r) => ReaderMsg::Done(r),
                    Err(e) => ReaderMsg::Failed(e.to_string()),
                };
                let _ = tx.send(msg);
            });
            Ok((rx, None))
        }
        ReaderAt::Process(exe) => {
            let json =
                serde_json::to_string(spec).map_err(|e| SuiteError::FanoutFloor(e.to_string()))?;
            // It inherits this process's cores: the load generator's.
            let mut child = Command::new(exe)
                .args(["fanout-floor-reader", "--spec", &json])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| SuiteError::FanoutFloor(format!("starting the reader: {e}")))?;
            let stdout = child.stdout.take();
            std::thread::spawn(move || {
                let Some(stdout) = stdout else { return };
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Ok(msg) = serde_json::from_str::<ReaderMsg>(&line) {
                        if tx.send(msg).is_err() {
                            return;
                        }
                    }
                }
            });
            Ok((rx, Some(child)))
        }
    }
}

/// Waits briefly for the reader process to exit (it does once it has answered), then kills it.
fn end_child(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Accepts `n` connections, blocking and with Nagle off, giving up after [`SETUP_TIMEOUT`] or
/// when the reader reports a failure.
fn accept_all(
    listener: &TcpListener,
    n: usize,
    rx: &mpsc::Receiver<ReaderMsg>,
) -> Result<Vec<TcpStream>, SuiteError> {
    let io = |e: std::io::Error| SuiteError::FanoutFloor(format!("accepting: {e}"));
    // Non-blocking, so a reader that died cannot leave this waiting forever.
    listener.set_nonblocking(true).map_err(io)?;
    let deadline = Instant::now() + SETUP_TIMEOUT;
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        match listener.accept() {
            Ok((sock, _)) => {
                sock.set_nonblocking(false).map_err(io)?;
                sock.set_nodelay(true).map_err(io)?;
                conns.push(sock);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(SuiteError::FanoutFloor(format!(
                        "{} of {n} connections after {SETUP_TIMEOUT:?}",
                        conns.len()
                    )));
                }
                match rx.try_recv() {
                    Ok(msg) => return Err(reader_gone(Ok(msg))),
                    Err(mpsc::TryRecvError::Disconnected) => {
                        return Err(reader_gone(Err(mpsc::RecvTimeoutError::Disconnected)))
                    }
                    Err(mpsc::TryRecvError::Empty) => {}
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(io(e)),
        }
    }
    Ok(conns)
}

/// What the writer did.
struct Written {
    /// The connections, kept open until the reader is done.
    conns: Vec<TcpStream>,
    /// Wall time in write loops, ns.
    loop_ns: u64,
    /// CPU time in write loops, ns.
    cpu_ns: u64,
}

/// The writer: on `core` when given, event `k` due at start + (k + 1) × `gap`; each event is
/// one frame written to every connection in turn, stamped with the time its loop started.
/// [`WARMUP`] events go first, their time and CPU not counted.
fn write_events(
    mut conns: Vec<TcpStream>,
    events: usize,
    gap: Duration,
    core: Option<usize>,
) -> Result<Written, SuiteError> {
    let io = |e: std::io::Error| SuiteError::FanoutFloor(format!("writing: {e}"));
    if let Some(core) = core {
        pin_this_thread(core);
    }
    let cpu = ThreadCpu::open().map_err(io)?;
    let clock = Clock::now();
    let (mut loop_ns, mut cpu_ns) = (0u64, 0u64);
    let start = Instant::now();
    for k in 0..WARMUP + events {
        let due = start + gap.saturating_mul(u32::try_from(k + 1).unwrap_or(u32::MAX));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let t0 = Instant::now();
        let f = frame(k as u64, clock.unix_ns(t0));
        let before = cpu.now_ns().map_err(io)?;
        for c in &mut conns {
            c.write_all(&f).map_err(io)?;
        }
        let after = cpu.now_ns().map_err(io)?;
        if k >= WARMUP {
            loop_ns += t0.elapsed().as_nanos() as u64;
            cpu_ns += after.saturating_sub(before).saturating_sub(cpu.overhead_ns);
        }
    }
    Ok(Written {
        conns,
        loop_ns,
        cpu_ns,
    })
}

/// The calling thread's CPU time, from `/proc/thread-self/schedstat` (its first field: ns on a
/// CPU). The kernel updates that figure only at scheduler events, up to a tick late, so each
/// reading yields first: `sched_yield` brings it up to date. (The workspace forbids unsafe
/// code, which rules out `clock_gettime` through libc.)
struct ThreadCpu {
    file: std::fs::File,
    /// What one reading itself costs, subtracted from every bracket of two.
    overhead_ns: u64,
}

impl ThreadCpu {
    /// Opens this thread's schedstat (it must be read from the thread that opened it) and
    /// measures the cost of a reading.
    fn open() -> std::io::Result<ThreadCpu> {
        let mut cpu = ThreadCpu {
            file: std::fs::File::open("/proc/thread-self/schedstat")?,
            overhead_ns: 0,
        };
        let mut overhead = u64::MAX;
        for _ in 0..5 {
            let a = cpu.now_ns()?;
            let b = cpu.now_ns()?;
            overhead = overhead.min(b.saturating_sub(a));
        }
        cpu.overhead_ns = overhead;
        Ok(cpu)
    }

    fn now_ns(&self) -> std::io::Result<u64> {
        std::thread::yield_now();
        let mut buf = [0u8; 128];
        let n = self.file.read_at(&mut buf, 0)?;
        std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| std::io::Error::other("unreadable /proc/thread-self/schedstat"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_reaches_every_socket() {
        let t0 = Instant::now();
        let f = measure(
            ReaderAt::Thread,
            20,
            3,
            Duration::from_millis(20),
            &Pinning::default(),
        )
        .unwrap();
        assert_eq!((f.deliveries, f.missing), (60, 0));
        assert_eq!(f.latency_ns.count, 60);
        assert!(f.latency_ns.p50 > 0 && f.latency_ns.p99 >= f.latency_ns.p50);
        assert!(f.writer_cpu_ns > 0 && f.cpu_ms_per_1k > 0.0, "{f:?}");
        assert!(f.write_loop_us > 0.0);
        // The warm-up and three events 20 ms apart: paced, and over well within the slack.
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(80) && took < Duration::from_secs(5));
    }

    #[test]
    fn the_thread_cpu_clock_counts_work_not_sleep() {
        let cpu = ThreadCpu::open().unwrap();
        let a = cpu.now_ns().unwrap();
        std::thread::sleep(Duration::from_millis(30));
        let b = cpu.now_ns().unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let c = cpu.now_ns().unwrap();
        // Asleep: next to nothing. Spinning: most of the 30 ms (the machine is shared).
        assert!(b - a < 5_000_000, "asleep: {} ns", b - a);
        assert!(c - b > 10_000_000, "spinning: {} ns", c - b);
    }

    #[test]
    fn a_reader_that_exits_at_once_fails_the_measurement_instead_of_hanging_it() {
        let t0 = Instant::now();
        // `true` ignores its arguments and exits without a word.
        let err = measure(
            ReaderAt::Process(Path::new("true")),
            2,
            1,
            Duration::from_millis(1),
            &Pinning::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ended without an answer"), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}

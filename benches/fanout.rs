//! Fan-out: one event written to n subscribers, timed from just before it is published (for
//! the floor, just before the first write) until a reader thread has read it from every
//! socket.
//!
//! Names: `fanout/<path>/subscribers=<n>`:
//! - `write(2)`: no server. The bench thread writes the bytes pushbench's SSE server sends for
//!   one 64 B event (one chunk) to each of n loopback sockets in a plain loop. The floor.
//! - `sse`, `stream`: pushbench's server on its own thread (current-thread runtime), n lean
//!   subscribers, written by their topic's fan-out from the publishing side
//!   (`servers/src/fanout.rs`). The event is published on the server's hub directly, so no
//!   publish request is timed.
//! - `ws`: WebSocket subscribers, each written by its own task: the path the fan-out does not
//!   take, for contrast.
//!
//! The reader is one thread that reads every socket in turn, without blocking, until each has a
//! whole event, so the time includes the reading on the other core, as `[fanout]`'s physical
//! limit does. Read the rows of one run as ratios: `sse` ÷ `write(2)` is what the server adds to
//! the floor. The absolute times move with the machine.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Server, STEP};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pushbench_servers::{Hub, HubConfig, ServerConfig, Transport};

const SIZES: [usize; 2] = [100, 1_000];
const TOPIC: &str = "bench";
const PAYLOAD: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

const WS_UPGRADE: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\n\
                          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// How the last bytes of one event look on each path's wire.
fn event_end(path: &str) -> &'static [u8] {
    match path {
        // An SSE event ends with a blank line, then the chunk's CRLF.
        "write(2)" | "sse" => b"\n\n\r\n",
        // An NDJSON line, then the chunk's CRLF.
        "stream" => b"}\n\r\n",
        // A text frame ends with the JSON object's brace; the payload holds none.
        _ => b"}",
    }
}

/// One thread reading n sockets: each round, until every socket has delivered a whole event.
struct Reader {
    go: mpsc::Sender<()>,
    done: mpsc::Receiver<Result<(), String>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Reader {
    fn spawn(sockets: Vec<TcpStream>, end: &'static [u8]) -> Reader {
        let (go, rounds) = mpsc::channel::<()>();
        let (report, done) = mpsc::channel();
        let thread = thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while rounds.recv().is_ok() {
                let _ = report.send(read_round(&sockets, end, &mut buf));
            }
        });
        Reader {
            go,
            done,
            thread: Some(thread),
        }
    }

    /// Starts a round: the reader waits for one event on every socket.
    fn start(&self) {
        self.go.send(()).expect("reader alive");
    }

    fn wait(&self) {
        self.done
            .recv_timeout(STEP + STEP)
            .expect("reader answered")
            .expect("every socket delivered");
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let (go, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.go, go));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn read_round(sockets: &[TcpStream], end: &[u8], buf: &mut [u8]) -> Result<(), String> {
    let deadline = Instant::now() + STEP;
    let mut left: Vec<(usize, Vec<u8>)> = (0..sockets.len()).map(|i| (i, Vec::new())).collect();
    while !left.is_empty() {
        if Instant::now() > deadline {
            return Err(format!("{} sockets got nothing in {STEP:?}", left.len()));
        }
        left.retain_mut(|(i, tail)| match (&sockets[*i]).read(buf) {
            Ok(0) => false,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                let keep = tail.len().saturating_sub(end.len());
                tail.drain(..keep);
                tail.as_slice() != end
            }
            Err(_) => true,
        });
    }
    Ok(())
}

/// n loopback connections: the near ends to write, the far ends (non-blocking) to read.
fn socket_pairs(n: usize) -> (Vec<TcpStream>, Vec<TcpStream>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (mut near, mut far) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let client = TcpStream::connect(addr).expect("connect");
        let (server, _) = listener.accept().expect("accept");
        server.set_nodelay(true).expect("nodelay");
        client.set_nonblocking(true).expect("non-blocking");
        near.push(server);
        far.push(client);
    }
    (near, far)
}

/// Opens `path` as a subscriber and returns the socket after the response head, non-blocking.
fn subscribe(addr: SocketAddr, path: &str, extra: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STEP)).expect("read timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: b\r\n{extra}\r\n").expect("request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("response head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.set_nonblocking(true).expect("non-blocking");
    s
}

/// Reads and drops whatever has arrived (SSE's `retry:` line, after the head).
fn drain(sockets: &[TcpStream]) {
    thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 4096];
    for mut s in sockets {
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    }
}

fn floor(c: &mut Criterion, n: usize) {
    let (near, far) = socket_pairs(n);
    let reader = Reader::spawn(far, event_end("write(2)"));
    // An SSE event as the servers write it: `id: EPOCH-ID`, then the data.
    let frame = format!(
        "{:x}\r\nid: 00000001-1\ndata: {PAYLOAD}\n\n\r\n",
        PAYLOAD.len() + 23
    );
    let frame = frame.as_bytes();
    let mut g = c.benchmark_group("fanout");
    configure(&mut g);
    g.bench_function(
        BenchmarkId::new("write(2)", format!("subscribers={n}")),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    reader.start();
                    let start = Instant::now();
                    for mut s in &near {
                        s.write_all(frame).expect("write");
                    }
                    reader.wait();
                    total += start.elapsed();
                }
                total
            })
        },
    );
    g.finish();
}

fn server_path(c: &mut Criterion, transport: Transport, n: usize) {
    let hub = Hub::new(HubConfig::default());
    // No keep-alive lands inside a measurement.
    let config = ServerConfig {
        keepalive: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let server = Server::start_with(transport, hub.clone(), config);
    let (path, extra) = match transport {
        Transport::Ws => (format!("/ws?topic={TOPIC}"), WS_UPGRADE),
        t => (format!("{}?topic={TOPIC}", t.path()), ""),
    };
    let sockets: Vec<_> = (0..n)
        .map(|_| subscribe(server.addr, &path, extra))
        .collect();
    drain(&sockets);
    let name = transport.name();
    let reader = Reader::spawn(sockets, event_end(name));
    let mut g = c.benchmark_group("fanout");
    configure(&mut g);
    g.bench_function(BenchmarkId::new(name, format!("subscribers={n}")), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                reader.start();
                let start = Instant::now();
                hub.publish(TOPIC, PAYLOAD.as_bytes()).expect("publish");
                reader.wait();
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    drop(reader);
    let report = server.shutdown();
    assert_eq!(report.forced, 0, "{name}: connections cut at shutdown");
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn fanout(c: &mut Criterion) {
    for n in SIZES {
        floor(c, n);
        for transport in [Transport::Sse, Transport::Stream, Transport::Ws] {
            server_path(c, transport, n);
        }
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);

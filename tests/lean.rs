//! Streaming and SSE subscriptions are served without hyper when their head arrives whole
//! (servers/src/lean.rs). These tests hold that path to hyper's: the same bytes on the wire,
//! the same end at shutdown, and a peer that leaves is let go at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pushbench_servers::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WS_UPGRADE: &str =
    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// Opens `path` with its head in one write (served lean), or split over two writes 100 ms
/// apart (the first read finds it incomplete, so hyper serves it).
async fn subscribe(addr: std::net::SocketAddr, path: &str, split: bool) -> TcpStream {
    subscribe_with(addr, path, "Last-Event-ID: 1\r\n", split).await
}

async fn subscribe_with(
    addr: std::net::SocketAddr,
    path: &str,
    extra: &str,
    split: bool,
) -> TcpStream {
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.set_nodelay(true).unwrap();
    if split {
        let (a, b) = head.split_at(10);
        s.write_all(a.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(b.as_bytes()).await.unwrap();
    } else {
        s.write_all(head.as_bytes()).await.unwrap();
    }
    s
}

async fn read_to_end(mut s: TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut buf))
        .await
        .expect("the stream ended in time")
        .unwrap();
    buf
}

/// The head without its `date` line.
fn dateless(head: &str) -> Vec<String> {
    head.lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("date:"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn lean_and_hyper_answer_a_subscription_alike_and_end_it_alike() {
    for (transport, path) in [
        (Transport::Sse, "/sse?topic=l&after=1"),
        (Transport::Stream, "/stream?topic=l&after=1"),
    ] {
        let mut server = TestServer::start(&[transport]).await;
        for i in 0..3 {
            publish(server.addr, "l", &payload(i)).await;
        }
        let lean = subscribe(server.addr, path, false).await;
        let hyper = subscribe(server.addr, path, true).await;
        // Both answer with their head and the replayed events before the shutdown ends them.
        let started = Instant::now();
        while server.hub.stats().snapshot().deliveries < 4 && started.elapsed() < STEP {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let report = server.shutdown().await;
        assert_eq!(report.forced, 0, "{transport}");
        let (lean, hyper) = (read_to_end(lean).await, read_to_end(hyper).await);
        // A shutdown ends both bodies with the terminating chunk, so clients resume.
        assert!(lean.ends_with(b"\r\n0\r\n\r\n"), "{transport}: {lean:?}");
        assert!(hyper.ends_with(b"\r\n0\r\n\r\n"), "{transport}: {hyper:?}");
        let (lean, hyper) = (parse_reply(&lean), parse_reply(&hyper));
        assert_eq!(lean.status, 200, "{transport}");
        assert_eq!(dateless(&lean.head), dateless(&hyper.head), "{transport}");
        assert_eq!(lean.text(), hyper.text(), "{transport}");
        assert!(
            lean.text().contains(&payload(2)),
            "{transport}: {}",
            lean.text()
        );
    }
}

#[tokio::test]
async fn lean_and_hyper_upgrade_a_websocket_alike() {
    let mut server = TestServer::start(&[Transport::Ws]).await;
    publish(server.addr, "w", "first").await;
    let mut lean = subscribe_with(server.addr, "/ws?topic=w&after=0", WS_UPGRADE, false).await;
    let mut hyper = subscribe_with(server.addr, "/ws?topic=w&after=0", WS_UPGRADE, true).await;
    let (lean_head, hyper_head) = (read_head(&mut lean).await, read_head(&mut hyper).await);
    assert!(lean_head.starts_with("HTTP/1.1 101 "), "{lean_head}");
    assert_eq!(dateless(&lean_head), dateless(&hyper_head));
    // The same unmasked text frame follows on both: 0x81, the length, the event's JSON.
    let want = b"\x81\x17{\"id\":1,\"data\":\"first\"}";
    for s in [&mut lean, &mut hyper] {
        let mut frame = vec![0; want.len()];
        tokio::time::timeout(STEP, s.read_exact(&mut frame))
            .await
            .expect("a frame in time")
            .unwrap();
        assert_eq!(frame, want, "{}", String::from_utf8_lossy(&frame));
    }
    assert_eq!(server.shutdown().await.forced, 0);
}

#[tokio::test]
async fn a_subscriber_that_leaves_is_let_go_at_once() {
    for (transport, path) in [(Transport::Sse, "/sse"), (Transport::Stream, "/stream")] {
        // Keep-alives every 15 s (the default) would find the closed socket only then.
        let mut server = TestServer::start(&[transport]).await;
        let (socket, head) = open_stream(server.addr, path, "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let stats = server.hub.stats().clone();
        assert_eq!(stats.snapshot().subscribers_open, 1, "{transport}");
        drop(socket);
        let started = Instant::now();
        while stats.snapshot().subscribers_open > 0 && started.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let s = stats.snapshot();
        assert_eq!(s.subscribers_open, 0, "{transport}: {s:?}");
        assert_eq!(s.connections_open, 0, "{transport}: {s:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_refused_subscription_gets_the_json_error_it_always_got() {
    let server = TestServer::start(&[Transport::Sse, Transport::Stream]).await;
    publish(server.addr, "r", "x").await;
    for (path, extra, status) in [
        ("/sse?topic=r&after=9", "", 400),
        ("/stream?after=x", "", 400),
        ("/sse", "Last-Event-ID: nope\r\n", 400),
        ("/sse?topic=bad%20topic", "", 400),
    ] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n");
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0; 4096];
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        let r = parse_reply(&buf[..n]);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{path}: {}", r.text());
    }
}

//! Graceful shutdown ends every long-lived connection cleanly, well inside the deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use pushbench_servers::{HubConfig, ServerConfig, Transport};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn shutdown_ends_streams_held_polls_and_websockets() {
    let config = ServerConfig {
        shutdown_deadline: Duration::from_secs(5),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start_with(&Transport::ALL, HubConfig::default(), config).await;
    let a = server.addr;

    let (mut sse, _) = open_stream(a, "/sse", "").await;
    let (mut stream, _) = open_stream(a, "/stream", "").await;
    // A held long poll answers with a head only at the end, so open it raw.
    let longpoll = tokio::spawn(async move { get(a, "/longpoll?timeout_ms=60000").await });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{a}/ws"))
        .await
        .unwrap();
    // Let the long poll be parked before shutting down.
    for _ in 0..100 {
        if get(a, "/stats").await.json()["subscribers_open"] == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(get(a, "/stats").await.json()["subscribers_open"], 4);

    let started = Instant::now();
    let report = server.shutdown().await;
    let took = started.elapsed();
    assert_eq!(report.forced, 0, "every connection closed by itself");
    assert!(took < Duration::from_secs(3), "shutdown took {took:?}");

    // SSE and NDJSON: the chunked body is terminated properly (0-size chunk), then EOF.
    for s in [&mut sse, &mut stream] {
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, s.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(
            rest.ends_with(b"0\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The held poll got a normal, empty answer.
    let r = longpoll.await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["events"], serde_json::json!([]));
    // The WebSocket got a Close frame saying why.
    let mut close = None;
    while let Some(Ok(msg)) = tokio::time::timeout(STEP, ws.next()).await.unwrap() {
        if let Message::Close(frame) = msg {
            close = frame;
        }
    }
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
}

#[tokio::test]
async fn deadline_cuts_a_client_that_never_reads() {
    // A WebSocket client that never reads cannot complete the closing handshake; the deadline
    // still bounds the shutdown.
    let config = ServerConfig {
        shutdown_deadline: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let mut server = TestServer::start_with(&[Transport::Ws], HubConfig::default(), config).await;
    let a = server.addr;
    let (_ws, _) = tokio_tungstenite::connect_async(format!("ws://{a}/ws"))
        .await
        .unwrap();
    // Fill the socket so the server's Close frame cannot even be written.
    for i in 0..2000 {
        server
            .hub
            .publish("default", "x".repeat(60_000).as_bytes())
            .unwrap_or_else(|e| panic!("publish {i}: {e}"));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let _report = server.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// A subscriber that stops reading fills the socket; the write timeout then cuts it, so it
/// neither stays open forever nor holds up graceful shutdown.
#[tokio::test]
async fn write_timeout_cuts_a_subscriber_that_stops_reading() {
    let ws_upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                      Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for (transport, path, extra) in [
        (Transport::Sse, "/sse", ""),
        (Transport::Stream, "/stream", ""),
        (Transport::Ws, "/ws", ws_upgrade),
    ] {
        let hub = HubConfig {
            // Keep every event pending, so the subscriber has far more than the socket holds.
            replay_bytes: 64 * 1024 * 1024,
            ..HubConfig::default()
        };
        let config = ServerConfig {
            write_timeout: Duration::from_millis(300),
            ..ServerConfig::default()
        };
        let mut server = TestServer::start_with(&[transport], hub, config).await;
        let (_never_read, head) = open_stream(server.addr, path, extra).await;
        assert!(head.starts_with("HTTP/1.1 10") || head.starts_with("HTTP/1.1 200"));
        let stats = server.hub.stats().clone();
        assert_eq!(stats.snapshot().subscribers_open, 1, "{transport}");
        // 24 MB: far past what the kernel buffers of one loopback connection take.
        let big = "x".repeat(60_000);
        for _ in 0..400 {
            server.hub.publish("default", big.as_bytes()).unwrap();
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            let s = stats.snapshot();
            if s.subscribers_open == 0 && s.write_timeouts == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let s = stats.snapshot();
        assert_eq!(s.subscribers_open, 0, "{transport}: {s:?}");
        assert_eq!(s.write_timeouts, 1, "{transport}: {s:?}");
        assert_eq!(s.connections_open, 0, "{transport}: {s:?}");
        let report = server.shutdown().await;
        assert_eq!(report.forced, 0, "{transport}");
    }
}

//! Every bad input gets its documented status and a JSON error, and the server keeps serving.

mod common;

use common::*;
use pushbench_servers::{HubConfig, ServerConfig, SlowPolicy, Transport};
use tokio::io::AsyncReadExt;

fn assert_json_error(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{}\n{}", r.head, r.text());
    assert_eq!(
        r.header("content-type").as_deref(),
        Some("application/json")
    );
    let msg = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(!msg.is_empty(), "error message missing: {}", r.text());
}

#[tokio::test]
async fn bad_requests_get_json_errors_and_the_server_stays_up() {
    let mut server = TestServer::start(&Transport::ALL).await;
    let a = server.addr;

    assert_json_error(&get(a, "/nope").await, 404);
    assert_json_error(&get(a, "/publish").await, 405);
    assert_eq!(
        get(a, "/publish").await.header("allow").as_deref(),
        Some("POST, OPTIONS")
    );
    for path in [
        "/poll?after=x",
        "/poll?after=-1",
        "/poll?topic=has%20space",
        "/poll?topic=",
        "/longpoll?timeout_ms=soon",
        "/longpoll?timeout_ms=999999999",
        "/stream?after=1.5",
        "/sse?after=abc",
        "/poll?after=beef-1",     // an epoch is 8 lowercase hex digits
        "/poll?after=0000BEEF-1", // lowercase
        "/stream?after=0000beef-",
    ] {
        assert_json_error(&get(a, path).await, 400);
    }
    // A cursor of this very life ahead of the topic was never sent: refused. (Another life's,
    // or a bare id ahead, is a reset: tests/restart.rs.)
    let epoch = server.hub.epoch();
    assert_json_error(&get(a, &format!("/poll?after={epoch}-5")).await, 400);
    let r = raw(
        a,
        b"GET /sse HTTP/1.1\r\nHost: t\r\nLast-Event-ID: nope\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_json_error(&r, 400);
    // A plain GET on the WebSocket endpoint is not an upgrade.
    assert_json_error(&get(a, "/ws").await, 400);

    // Payloads: empty, two lines, not UTF-8.
    for body in [&b""[..], b"line one\nline two", b"cr\rhere", b"\xff\xfe"] {
        assert_json_error(&post(a, "/publish", body).await, 400);
    }
    // Too large, declared by Content-Length.
    let big = vec![b'x'; 64 * 1024 + 1];
    assert_json_error(&post(a, "/publish", &big).await, 413);
    // Too large, chunked with no length: caught while reading.
    let mut req = b"POST /publish HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", 30_000).as_bytes());
        req.extend_from_slice(&[b'y'; 30_000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    assert_json_error(&raw(a, &req).await, 413);
    // Exactly the limit is fine.
    assert_eq!(post(a, "/publish", &big[1..]).await.status, 200);

    // Headers: past our limit, JSON 431; past hyper's buffer, hyper's own 431.
    let header = |n: usize| {
        format!(
            "GET /poll HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
            "h".repeat(n)
        )
    };
    assert_json_error(&raw(a, header(9_000).as_bytes()).await, 431);
    assert_eq!(raw(a, header(100_000).as_bytes()).await.status, 431);

    // Still serving, and the refusals were counted.
    let id = publish(a, "default", "still here").await;
    assert!(id >= 2);
    let stats = get(a, "/stats").await.json();
    assert!(stats["bad_requests"].as_u64().unwrap() >= 17, "{stats}");
    assert_eq!(server.shutdown().await.forced, 0);
}

#[tokio::test]
async fn connection_cap_answers_503_then_recovers() {
    let config = ServerConfig {
        max_connections: 2,
        ..ServerConfig::default()
    };
    let mut server = TestServer::start_with(&[Transport::Sse], HubConfig::default(), config).await;
    let a = server.addr;
    let (s1, _) = open_stream(a, "/sse", "").await;
    let (s2, _) = open_stream(a, "/sse", "").await;
    let r = get(a, "/stats").await;
    assert_json_error(&r, 503);
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    drop((s1, s2));
    // The permits come back once the server notices the closed sockets.
    let mut status = 0;
    for _ in 0..100 {
        status = get(a, "/stats").await.status;
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    let stats = get(a, "/stats").await.json();
    assert!(stats["connections_rejected"].as_u64().unwrap() >= 1);
    server.shutdown().await;
}

#[tokio::test]
async fn too_many_topics_is_503() {
    let hub = HubConfig {
        max_topics: 2,
        ..HubConfig::default()
    };
    let mut server = TestServer::start_with(
        &[Transport::Poll, Transport::Stream],
        hub,
        ServerConfig::default(),
    )
    .await;
    let a = server.addr;
    publish(a, "one", "x").await;
    publish(a, "two", "x").await;
    assert_json_error(&post(a, "/publish?topic=three", b"x").await, 503);
    // Subscribing creates a topic, so it is refused too.
    assert_json_error(&get(a, "/stream?topic=four").await, 503);
    // Polling does not create one: a missing topic reads as empty, even at the cap.
    let r = get(a, "/poll?topic=four").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let epoch = server.hub.epoch().to_string();
    assert_eq!(
        r.json(),
        serde_json::json!({"events": [], "last_id": 0, "epoch": epoch})
    );
    assert_json_error(
        &get(a, &format!("/poll?topic=four&after={epoch}-1")).await,
        400,
    );
    assert_eq!(get(a, "/poll?topic=one").await.status, 200);
    assert_eq!(server.hub.topic_count(), 2);
    server.shutdown().await;
}

#[tokio::test]
async fn polls_for_unknown_topics_create_none() {
    let mut server = TestServer::start(&[Transport::Poll, Transport::LongPoll]).await;
    let a = server.addr;
    for i in 0..20 {
        assert_eq!(get(a, &format!("/poll?topic=p{i}")).await.status, 200);
        let r = get(a, &format!("/longpoll?topic=l{i}&after=0&timeout_ms=0")).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(server.hub.topic_count(), 0);
    assert_eq!(get(a, "/stats").await.json()["topics"], 0);
    server.shutdown().await;
}

/// Reads a stream until `want` appears, within [`STEP`].
async fn read_until(s: &mut tokio::net::TcpStream, want: &str) -> String {
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + STEP;
    while !String::from_utf8_lossy(&got).contains(want) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in {:?}", String::from_utf8_lossy(&got)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {want:?}: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A subscriber that falls behind is handled by the policy, over a real socket; a resume with
/// a backlog past the bound is not "falling behind" under either policy. The same through
/// hyper (`Connection: close`) and without it, where a caught-up subscriber is written to by
/// the topic's fan-out.
#[tokio::test]
async fn slow_subscriber_policies() {
    for (policy, extra) in [
        (SlowPolicy::Drop, "Connection: close\r\n"),
        (SlowPolicy::Disconnect, "Connection: close\r\n"),
        (SlowPolicy::Drop, ""),
        (SlowPolicy::Disconnect, ""),
    ] {
        let hub = HubConfig {
            max_lag: 4,
            slow_policy: policy,
            ..HubConfig::default()
        };
        let mut server =
            TestServer::start_with(&[Transport::Stream], hub, ServerConfig::default()).await;
        let a = server.addr;
        for i in 0..10 {
            publish(a, "t", &format!("e{i}")).await;
        }
        // Resuming from 0 finds 10 events, past the bound of 4: the subscriber starts 4 behind
        // the newest, with a gap for the rest, and is not disconnected.
        let (mut s, head) = open_stream(a, "/stream?topic=t&after=0", extra).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let text = read_until(&mut s, "\"id\":10").await;
        assert!(
            text.contains(r#"{"gap":{"from":1,"to":6}}"#),
            "{policy:?}: {text}"
        );
        assert!(text.contains(r#"{"id":7,"#), "{policy:?}: {text}");
        let stats = get(a, "/stats").await.json();
        assert_eq!(stats["drops"], 6, "{policy:?}");
        assert_eq!(stats["replay_misses"], 0, "{policy:?}");
        assert_eq!(stats["slow_disconnects"], 0, "{policy:?}");
        drop(s);

        // A live subscriber that then falls behind: 10 events published at once (no await
        // between them, so the server cannot deliver any first) put it 10 behind.
        let (mut s, head) = open_stream(a, "/stream?topic=t", extra).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        for i in 10..20 {
            server.hub.publish("t", format!("e{i}").as_bytes()).unwrap();
        }
        match policy {
            SlowPolicy::Drop => {
                let text = read_until(&mut s, "\"id\":20").await;
                assert!(text.contains(r#"{"gap":{"from":11,"to":16}}"#), "{text}");
                assert!(text.contains(r#"{"id":17,"#), "{text}");
                let stats = get(a, "/stats").await.json();
                assert_eq!(stats["drops"], 12);
                assert_eq!(stats["slow_disconnects"], 0);
            }
            SlowPolicy::Disconnect => {
                let mut got = Vec::new();
                tokio::time::timeout(STEP, s.read_to_end(&mut got))
                    .await
                    .expect("the slow subscriber's stream ends")
                    .unwrap();
                let text = String::from_utf8_lossy(&got);
                assert!(!text.contains("\"id\""), "{text}");
                let stats = get(a, "/stats").await.json();
                assert_eq!(stats["slow_disconnects"], 1);
                assert_eq!(stats["drops"], 6);
            }
        }
        server.shutdown().await;
    }
}

/// A WebSocket handshake must be HTTP/1.1 with a well-formed key.
#[tokio::test]
async fn bad_websocket_handshakes_are_400() {
    let mut server = TestServer::start(&[Transport::Ws]).await;
    let a = server.addr;
    let handshake = |version: &str, key: &str| {
        format!(
            "GET /ws {version}\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
    };
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_json_error(&raw(a, handshake("HTTP/1.0", good).as_bytes()).await, 400);
    for key in [
        "",
        "short",
        "dGhlIHNhbXBsZSBub25jZQ",    // no padding
        "dGhlIHNhbXBsZSBub25jZQ==x", // too long
        "dGhlIHNhbXBsZSBub25jZ!==",  // not base64
        "AAAAAAAAAAAAAAAAAAAAAAAA",  // 24 characters, but 18 bytes
        "dGhlIHNhbXBsZSBub25jZR==",  // non-zero trailing bits
    ] {
        let r = raw(
            a,
            handshake("HTTP/1.1", key)
                .replace(
                    "Upgrade: websocket",
                    "Upgrade: websocket\r\nConnection: close",
                )
                .as_bytes(),
        )
        .await;
        assert_json_error(&r, 400);
    }
    // The good key still upgrades, and the RFC 6455 sample key gets the sample answer.
    let (_s, head) = open_stream(
        a,
        "/ws",
        &format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {good}\r\n"
        ),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    assert_eq!(get(a, "/stats").await.status, 200);
    server.shutdown().await;
}

/// Refusals past the connection cap are capped too: past 64 in progress, a refused socket is
/// closed at once instead of being held for its 503.
#[tokio::test]
async fn refusals_past_their_own_cap_are_closed_at_once() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let mut server = TestServer::start_with(&[Transport::Sse], HubConfig::default(), config).await;
    let a = server.addr;
    let (held, _) = open_stream(a, "/sse", "").await;
    // 64 refused clients that send nothing: each is held, waiting for a request to answer.
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(tokio::net::TcpStream::connect(a).await.unwrap());
    }
    let stats = server.hub.stats().clone();
    for _ in 0..200 {
        if stats.snapshot().connections_rejected >= 64 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(stats.snapshot().connections_rejected, 64);
    // The 65th is closed unanswered, well before a held refusal's 2 s linger.
    let mut extra = tokio::net::TcpStream::connect(a).await.unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(STEP, extra.read_to_end(&mut got))
        .await
        .expect("closed");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stats.snapshot().connections_rejected, 65);
    // A held refusal still answers 503 when asked.
    let mut first = idle.swap_remove(0);
    tokio::io::AsyncWriteExt::write_all(
        &mut first,
        b"GET /stats HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, first.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_json_error(&parse_reply(&buf), 503);
    drop((held, idle));
    assert_eq!(server.shutdown().await.forced, 0);
}

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
        "/poll?after=5", // ahead of the topic's last id (0)
    ] {
        assert_json_error(&get(a, path).await, 400);
    }
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
    let mut server = TestServer::start_with(&[Transport::Poll], hub, ServerConfig::default()).await;
    let a = server.addr;
    publish(a, "one", "x").await;
    publish(a, "two", "x").await;
    assert_json_error(&post(a, "/publish?topic=three", b"x").await, 503);
    assert_json_error(&get(a, "/poll?topic=four").await, 503);
    assert_eq!(get(a, "/poll?topic=one").await.status, 200);
    server.shutdown().await;
}

/// A subscriber that falls behind is handled by the policy, over a real socket.
#[tokio::test]
async fn slow_subscriber_policies() {
    for policy in [SlowPolicy::Drop, SlowPolicy::Disconnect] {
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
        // Resuming from 0 puts 10 events in this subscriber's queue, past its bound of 4.
        let (mut s, head) =
            open_stream(a, "/stream?topic=t&after=0", "Connection: close\r\n").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        match policy {
            SlowPolicy::Drop => {
                while !String::from_utf8_lossy(&got).contains("\"id\":10") {
                    let n = tokio::time::timeout(STEP, s.read(&mut buf))
                        .await
                        .unwrap()
                        .unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                let text = String::from_utf8_lossy(&got);
                assert!(text.contains(r#"{"gap":{"from":1,"to":6}}"#), "{text}");
                assert!(text.contains(r#"{"id":7,"#), "{text}");
                let stats = get(a, "/stats").await.json();
                assert_eq!(stats["drops"], 6);
            }
            SlowPolicy::Disconnect => {
                tokio::time::timeout(STEP, s.read_to_end(&mut got))
                    .await
                    .unwrap()
                    .unwrap();
                let text = String::from_utf8_lossy(&got);
                assert!(!text.contains("\"id\""), "{text}");
                let stats = get(a, "/stats").await.json();
                assert_eq!(stats["slow_disconnects"], 1);
            }
        }
        server.shutdown().await;
    }
}

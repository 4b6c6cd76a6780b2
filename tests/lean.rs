//! Streaming and SSE subscriptions are served without hyper when their head arrives whole
//! (servers/src/lean.rs). These tests hold that path to hyper's: the same bytes on the wire,
//! the same end at shutdown, and a peer that leaves is let go at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use pushbench_servers::{HubConfig, ServerConfig, Transport};
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
    // The same unmasked text frames follow on both: 0x81, the length, the JSON of the hello
    // (30 bytes), then of the event.
    let hello = format!("{{\"epoch\":\"{}\",\"after\":0}}", server.hub.epoch());
    let mut want = vec![0x81, 30];
    want.extend_from_slice(hello.as_bytes());
    want.extend_from_slice(b"\x81\x17{\"id\":1,\"data\":\"first\"}");
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
    let ahead = format!("/sse?topic=r&after={}-9", server.hub.epoch());
    for (path, extra, status) in [
        (ahead.as_str(), "", 400),
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

/// Reads one answer with a `content-length` body, leaving the connection open.
async fn read_answer(s: &mut TcpStream) -> Reply {
    let head = read_head(s).await;
    let mut reply = parse_reply(head.as_bytes());
    let len: usize = reply
        .header("content-length")
        .expect("a content-length")
        .parse()
        .unwrap();
    reply.body = vec![0; len];
    tokio::time::timeout(STEP, s.read_exact(&mut reply.body))
        .await
        .expect("a body in time")
        .unwrap();
    reply
}

/// Waits until `what` of the server's counters holds.
async fn until(server: &TestServer, what: impl Fn(&pushbench_servers::stats::Snapshot) -> bool) {
    let started = Instant::now();
    while !what(&server.hub.stats().snapshot()) && started.elapsed() < STEP {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn long_polls_on_one_connection_are_held_and_answered_like_hyper_does() {
    let mut server = TestServer::start(&[Transport::LongPoll]).await;
    publish(server.addr, "p", "zero").await;
    let poll = |after: u64| format!("/longpoll?topic=p&after={after}&timeout_ms=60000");
    let mut lean = subscribe_with(server.addr, &poll(1), "", false).await;
    let mut hyper = subscribe_with(server.addr, &poll(1), "", true).await;
    for round in 0..3u64 {
        // Both polls are held (nothing after the cursor yet) until the publish.
        until(&server, |s| s.subscribers_open == 2).await;
        assert_eq!(server.hub.stats().snapshot().subscribers_open, 2);
        let id = publish(server.addr, "p", &payload(round as usize)).await;
        let (a, b) = (read_answer(&mut lean).await, read_answer(&mut hyper).await);
        assert_eq!(a.status, 200, "{}", a.text());
        assert_eq!(dateless(&a.head), dateless(&b.head), "round {round}");
        assert_eq!(a.body, b.body, "round {round}");
        assert_eq!(a.json()["events"][0]["data"], payload(round as usize));
        assert_eq!(a.json()["last_id"], id);
        // The next poll goes on the same connection; one whose events are there already is
        // answered at once.
        for s in [&mut lean, &mut hyper] {
            let req = format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", poll(id - 1));
            s.write_all(req.as_bytes()).await.unwrap();
            let again = read_answer(s).await;
            assert_eq!(again.json()["events"][0]["id"], id, "{}", again.text());
            let req = format!("GET {} HTTP/1.1\r\nHost: t\r\n\r\n", poll(id));
            s.write_all(req.as_bytes()).await.unwrap();
        }
    }
    // At shutdown a held poll is answered (empty), and its connection closes after it.
    until(&server, |s| s.subscribers_open == 2).await;
    let report = server.shutdown().await;
    assert_eq!(report.forced, 0);
    let (lean, hyper) = (read_to_end(lean).await, read_to_end(hyper).await);
    let (lean, hyper) = (parse_reply(&lean), parse_reply(&hyper));
    // hyper says `connection: close` only when its graceful shutdown comes before the answer;
    // the lean path always says it.
    assert_eq!(lean.header("connection").as_deref(), Some("close"));
    let keep = |head: &str| {
        let mut lines = dateless(head);
        lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
        lines
    };
    assert_eq!(keep(&lean.head), keep(&hyper.head));
    assert_eq!(lean.json()["events"], serde_json::json!([]));
    assert_eq!(lean.body, hyper.body);
}

#[tokio::test]
async fn a_held_long_poll_keeps_a_pipelined_request_and_lets_a_leaver_go() {
    let mut server = TestServer::start(&[Transport::LongPoll]).await;
    let held = "GET /longpoll?topic=q&timeout_ms=60000 HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut s = subscribe_with(server.addr, "/longpoll?topic=q&timeout_ms=60000", "", false).await;
    until(&server, |st| st.subscribers_open == 1).await;
    // A second request sent while the first is held is answered after it, in order.
    s.write_all(b"GET /longpoll?topic=q&after=1&timeout_ms=0 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    publish(server.addr, "q", "one").await;
    let first = read_answer(&mut s).await;
    assert_eq!(first.json()["events"][0]["data"], "one", "{}", first.text());
    let second = read_answer(&mut s).await;
    assert_eq!(
        second.json()["events"],
        serde_json::json!([]),
        "{}",
        second.text()
    );
    assert_eq!(second.json()["last_id"], 1);
    // A client that leaves while held is let go at once, not at its timeout.
    s.write_all(held.as_bytes()).await.unwrap();
    until(&server, |st| st.subscribers_open == 1).await;
    assert_eq!(server.hub.stats().snapshot().subscribers_open, 1);
    drop(s);
    until(&server, |st| st.connections_open == 0).await;
    let st = server.hub.stats().snapshot();
    assert_eq!((st.subscribers_open, st.connections_open), (0, 0), "{st:?}");
    assert_eq!(server.shutdown().await.forced, 0);
}

/// A caught-up subscriber is written to by its topic's fan-out; when its socket fills, it is
/// handed back to its own task with what the socket did not take, and nothing is lost,
/// duplicated or reordered on the way back. For streaming and for WebSocket frames alike.
#[tokio::test]
async fn a_subscriber_whose_socket_fills_is_handed_back_and_loses_nothing() {
    for (transport, request) in [
        (
            Transport::Stream,
            "GET /stream?topic=f HTTP/1.1\r\nHost: t\r\n\r\n".to_owned(),
        ),
        (
            Transport::Ws,
            format!("GET /ws?topic=f HTTP/1.1\r\nHost: t\r\n{WS_UPGRADE}\r\n"),
        ),
    ] {
        let hub = pushbench_servers::HubConfig {
            replay_events: 100_000,
            replay_bytes: 1 << 30,
            max_lag: 100_000,
            ..Default::default()
        };
        let config = pushbench_servers::ServerConfig::default();
        let mut server = TestServer::start_with(&[transport], hub, config).await;
        // A small receive buffer, and nobody reading yet: the server's side fills.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(server.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 "), "{head}");
        let n = 1000;
        let payload = "x".repeat(8 * 1024);
        for _ in 0..n {
            server.hub.publish("f", payload.as_bytes()).unwrap();
            tokio::task::yield_now().await;
        }
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        let needle = format!("{{\"id\":{n},");
        while !String::from_utf8_lossy(&got[got.len().saturating_sub(16 * 1024)..])
            .contains(&needle)
        {
            let read = tokio::time::timeout(STEP, s.read(&mut buf))
                .await
                .expect("the events in time")
                .unwrap();
            assert!(read > 0, "{transport}: the stream ended early");
            got.extend_from_slice(&buf[..read]);
        }
        let text = String::from_utf8_lossy(&got);
        let ids: Vec<u64> = text
            .split("{\"id\":")
            .skip(1)
            .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "{transport}");
        let stats = server.hub.stats().snapshot();
        assert!(
            stats.handbacks >= 1,
            "{transport}: the socket never filled: {stats:?}"
        );
        assert_eq!(stats.deliveries, n, "{transport}");
        assert_eq!((stats.gaps, stats.drops), (0, 0), "{transport}: {stats:?}");
        server.shutdown().await;
    }
}

/// While the fan-out writes a WebSocket's events, the session still answers its client: a ping
/// gets its pong, a text frame is published, and shutdown closes with 1001.
#[tokio::test]
async fn a_websocket_written_by_the_fanout_still_answers_its_client() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let mut server = TestServer::start(&[Transport::Ws]).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}/ws?topic=u", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    let hello = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        hello.to_text().unwrap().starts_with("{\"epoch\":"),
        "{hello}"
    );
    // Caught up, the subscriber is direct: this event is written by the fan-out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.hub.publish("u", b"first").unwrap();
    let first = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.to_text().unwrap().contains("\"first\""), "{first}");
    ws.send(Message::Ping("hi".into())).await.unwrap();
    let pong = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong("hi".into()));
    ws.send(Message::text("up")).await.unwrap();
    let echoed = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        echoed
            .to_text()
            .unwrap()
            .contains("{\"id\":2,\"data\":\"up\"}"),
        "{echoed}"
    );
    assert!(server.hub.stats().snapshot().handbacks == 0);
    let report = server.shutdown().await;
    assert_eq!(report.forced, 0);
    let close = tokio::time::timeout(STEP, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("{other:?}"),
    }
}

/// The client's next frame, within [`STEP`].
async fn next(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
) -> tokio_tungstenite::tungstenite::Message {
    use futures_util::StreamExt;
    tokio::time::timeout(STEP, ws.next())
        .await
        .expect("an answer in time")
        .expect("open")
        .expect("a frame")
}

/// A direct WebSocket puts its framing state away while it waits and makes it again for each
/// input, so everything a client may send must still be answered across those changes: a
/// fragmented message with a ping between its fragments, the server's own keep-alive pings
/// (written raw), and the client's Close, which gets a Close back (not a bare end, 1006).
#[tokio::test]
async fn a_websocket_answers_fragments_pings_and_close_across_idle_turns() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::Message;
    let config = ServerConfig {
        keepalive: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    let server = TestServer::start_with(&[Transport::Ws], HubConfig::default(), config).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://{}/ws?topic=f", server.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    // Idle past a few keep-alives: each is a ping the client's library answers.
    let mut pings = 0;
    while pings < 3 {
        if let Message::Ping(p) = next(&mut ws).await {
            assert!(p.is_empty());
            pings += 1;
        }
    }
    // A text message in three fragments, a ping between the first two, each sent on its own
    // so the server reads them on separate turns.
    let frag = |op, fin, data: &'static str| {
        Message::Frame(Frame::message(data.as_bytes().to_vec(), op, fin))
    };
    ws.send(frag(OpCode::Data(Data::Text), false, "fr"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    ws.send(Message::Ping("mid".into())).await.unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    ws.send(frag(OpCode::Data(Data::Continue), false, "agm"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(30)).await;
    ws.send(frag(OpCode::Data(Data::Continue), true, "ented"))
        .await
        .unwrap();
    let (mut pong, mut event) = (false, None);
    while !pong || event.is_none() {
        match next(&mut ws).await {
            Message::Pong(p) => pong = p.as_ref() == b"mid",
            Message::Text(t) => event = Some(t.to_string()),
            Message::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
    let event = event.unwrap();
    assert!(
        event.contains("{\"id\":1,\"data\":\"fragmented\"}"),
        "{event}"
    );
    // Direct again: a publish is written by the fan-out.
    server.hub.publish("f", b"later").unwrap();
    loop {
        match next(&mut ws).await {
            Message::Text(t) => break assert!(t.contains("\"later\""), "{t}"),
            Message::Ping(_) => {}
            other => panic!("{other:?}"),
        }
    }
    ws.send(Message::Close(None)).await.unwrap();
    loop {
        match tokio::time::timeout(STEP, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Close(_))) => break,
            Some(Ok(Message::Ping(_) | Message::Text(_))) => {}
            other => panic!("expected the server's Close, got {other:?}"),
        }
    }
    until(&server, |s| s.subscribers_open == 0).await;
}

/// What arrives on `s` within `window`.
async fn read_for(s: &mut TcpStream, window: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(window, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    got
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test]
async fn keep_alives_go_to_idle_streams_only() {
    // The keep-alive interval is long against the publishing pace below (one event every
    // 50 ms), so no scheduling hiccup of a loaded test machine leaves a busy topic idle that long.
    let period = Duration::from_millis(300);
    let config = ServerConfig {
        keepalive: period,
        ..ServerConfig::default()
    };
    let transports = [Transport::Sse, Transport::Stream, Transport::Ws];
    let mut server = TestServer::start_with(&transports, HubConfig::default(), config).await;
    let sse = (b": keep-alive\n\n".as_slice(), "/sse?topic=idle", "");
    let stream = (b"\r\n1\r\n\n\r\n".as_slice(), "/stream?topic=idle", "");
    let ws = (b"\x89\x00".as_slice(), "/ws?topic=idle", WS_UPGRADE);
    for (keepalive, path, extra) in [sse, stream, ws] {
        // Idle: a keep-alive each interval, from the topic's fan-out.
        let mut s = subscribe_with(server.addr, path, extra, false).await;
        let idle = read_for(&mut s, period * 4).await;
        assert!(count(&idle, keepalive) >= 2, "{path}: {idle:?}");
        // Busy: the stream carries events, and no keep-alive.
        let busy_path = path.replace("idle", "busy");
        let mut s = subscribe_with(server.addr, &busy_path, extra, false).await;
        let (read, _) = tokio::join!(read_for(&mut s, period * 4), async {
            for i in 0..(period * 4).as_millis() / 50 {
                server
                    .hub
                    .publish("busy", format!("e{i}").as_bytes())
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        assert!(count(&read, b"e20") == 1, "{busy_path}: {read:?}");
        assert_eq!(count(&read, keepalive), 0, "{busy_path}: {read:?}");
    }
    assert_eq!(server.shutdown().await.forced, 0);
}

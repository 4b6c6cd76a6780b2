//! The live browser demo's server, in process: it serves the page and every transport, its
//! control endpoint refuses bad input with JSON errors, and its drop-all switch cuts every kind
//! of connection while the server keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use futures_util::StreamExt;
use pushbench_servers::demo::{self, Settings, TOPIC};
use pushbench_servers::{Hub, HubConfig, ServerConfig, ShutdownReport};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// The demo served in-process on `127.0.0.1:0`.
struct DemoServer {
    addr: SocketAddr,
    hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ShutdownReport>>,
}

impl DemoServer {
    async fn start(settings: Settings) -> DemoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let hub = Hub::new(HubConfig::default());
        let task = tokio::spawn(demo::serve(
            listener,
            hub.clone(),
            ServerConfig::default(),
            settings,
            async {
                let _ = rx.await;
            },
        ));
        DemoServer {
            addr,
            hub,
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn shutdown(&mut self) -> ShutdownReport {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(STEP, self.task.take().unwrap())
            .await
            .expect("demo did not shut down in time")
            .unwrap()
    }
}

/// The publisher paused, so a test decides every id.
fn paused() -> Settings {
    Settings::new(0.0, 64, 1000).unwrap()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn page_and_assets_are_served_and_the_publisher_stamps_events() {
    let mut server = DemoServer::start(Settings::new(50.0, 100, 1000).unwrap()).await;
    let a = server.addr;
    let page = get(a, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").as_deref(),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    for t in ["poll", "longpoll", "stream", "sse", "ws"] {
        assert!(
            html.contains(&format!("data-transport=\"{t}\"")),
            "panel {t}"
        );
    }
    assert!(html.contains("data-action=\"drop-all\""));
    for (path, kind) in [
        ("/demo/demo.js", "text/javascript"),
        ("/demo/style.css", "text/css"),
    ] {
        let r = get(a, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            r.header("content-type").unwrap().starts_with(kind),
            "{path}"
        );
        assert!(!r.body.is_empty());
    }
    // Every transport is served on the same port (the page's clients use them all).
    assert_eq!(
        get(a, "/stats").await.json()["transports"],
        serde_json::json!(["poll", "longpoll", "stream", "sse", "ws"])
    );

    // The publisher's payloads have the size asked for and carry their publish time.
    let started = Instant::now();
    let event = loop {
        let r = get(a, &format!("/poll?topic={TOPIC}&after=0")).await.json();
        if let Some(e) = r["events"].get(0) {
            break e.clone();
        }
        assert!(started.elapsed() < STEP, "no event published");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let data = event["data"].as_str().unwrap();
    assert_eq!(data.len(), 100);
    let sent = serde_json::from_str::<Value>(data).unwrap()["sent"]
        .as_u64()
        .unwrap();
    assert!(now_ms().abs_diff(sent) < 10_000, "sent {sent}");
    let config = get(a, "/demo/config").await.json();
    assert_eq!(config["topic"], TOPIC);
    assert!(config["last_id"].as_u64().unwrap() >= 1);
    server.shutdown().await;
}

#[tokio::test]
async fn control_endpoint_refuses_bad_input_with_json_errors() {
    let mut server = DemoServer::start(paused()).await;
    let a = server.addr;
    let before = get(a, "/demo/config").await.json();
    let epoch = server.hub.epoch().to_string();
    assert_eq!(
        before,
        serde_json::json!({"topic": TOPIC, "last_id": 0, "epoch": epoch, "rate": 0.0,
                           "payload_bytes": 64, "poll_interval_ms": 1000})
    );
    let too_big = format!("{{\"rate\":1{}}}", " ".repeat(5000));
    let cases: [(&[u8], u16, &str); 12] = [
        (b"", 400, "expected a JSON object"),
        (b"rate=10", 400, "expected a JSON object"),
        (br#"{"rate":"fast"}"#, 400, "invalid type"),
        (br#"{"speed":1}"#, 400, "unknown field"),
        (br#"[1,2]"#, 400, "expected a JSON object"),
        (br#"{"rate":-1}"#, 400, "rate must be"),
        (br#"{"rate":100.5}"#, 400, "rate must be"),
        (
            br#"{"payload_bytes":31}"#,
            400,
            "payload_bytes must be from 32",
        ),
        (br#"{"payload_bytes":16385}"#, 400, "payload_bytes must be"),
        (
            br#"{"poll_interval_ms":49}"#,
            400,
            "poll_interval_ms must be",
        ),
        (
            br#"{"poll_interval_ms":10001}"#,
            400,
            "poll_interval_ms must be",
        ),
        (too_big.as_bytes(), 413, "larger than 4096 bytes"),
    ];
    for (body, status, reason) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let r = post(a, "/demo/config", body).await;
        assert_eq!(r.status, status, "{shown}: {}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json"),
            "{shown}"
        );
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(error.contains(reason), "{shown}: {error}");
    }
    let r = raw(
        a,
        b"PUT /demo/config HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("GET, POST, OPTIONS"));
    assert!(r.json()["error"].is_string());
    let r = get(a, "/demo/drop-all").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow").as_deref(), Some("POST, OPTIONS"));
    assert_eq!(post(a, "/", b"x").await.status, 405);
    let r = get(a, "/demo/nothing-here").await;
    assert_eq!(r.status, 404);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("/demo/nothing-here"));
    let stats = get(a, "/stats").await.json();
    assert!(stats["bad_requests"].as_u64().unwrap() >= 16, "{stats}");

    // Nothing was changed by the refusals; a good change is applied and answered.
    assert_eq!(get(a, "/demo/config").await.json(), before);
    let r = post(
        a,
        "/demo/config",
        br#"{"payload_bytes":200,"poll_interval_ms":250}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let after = r.json();
    assert_eq!(after["payload_bytes"], 200);
    assert_eq!(after["poll_interval_ms"], 250);
    assert_eq!(after["rate"], 0.0);
    assert_eq!(get(a, "/demo/config").await.json(), after);
    server.shutdown().await;
}

/// Reads until the peer closes, keeping what arrived even if the close was a reset.
async fn read_until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(STEP, s.read_to_end(&mut buf))
        .await
        .expect("connection still open");
    buf
}

/// Sends a keep-alive request and reads exactly its (Content-Length) response.
async fn keep_alive_get(s: &mut TcpStream, path: &str) -> Reply {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(STEP, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before the response");
        buf.extend_from_slice(&chunk[..n]);
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let reply = parse_reply(&buf);
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        if buf.len() >= end + 4 + len {
            return reply;
        }
    }
}

async fn wait_subscribers(a: SocketAddr, n: u64) {
    let started = Instant::now();
    loop {
        let open = get(a, "/stats").await.json()["subscribers_open"].clone();
        if open == n {
            return;
        }
        assert!(
            started.elapsed() < STEP,
            "subscribers_open is {open}, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn drop_all_cuts_every_connection_and_the_server_keeps_serving() {
    let mut server = DemoServer::start(paused()).await;
    let a = server.addr;
    assert_eq!(publish(a, TOPIC, "before the drop").await, 1);

    let (mut sse, _) = open_stream(a, &format!("/sse?topic={TOPIC}"), "").await;
    let (mut stream, _) = open_stream(a, &format!("/stream?topic={TOPIC}"), "").await;
    let mut held = TcpStream::connect(a).await.unwrap();
    held.write_all(
        format!("GET /longpoll?topic={TOPIC}&after=1 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{a}/ws?topic={TOPIC}"))
        .await
        .unwrap();
    let mut idle = TcpStream::connect(a).await.unwrap();
    assert_eq!(keep_alive_get(&mut idle, "/demo/config").await.status, 200);
    wait_subscribers(a, 4).await;

    // The requester gets its whole answer; everyone else is cut after it.
    let r = post(a, "/demo/drop-all", b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("connection").as_deref(), Some("close"));
    let cut = r.json()["connections"].as_u64().unwrap();
    assert!(cut >= 5, "{cut} connections open besides the requester");

    // Streams end without the terminating chunk: cut, as by a network failure, not closed.
    for (name, s) in [("sse", &mut sse), ("stream", &mut stream)] {
        let rest = read_until_closed(s).await;
        assert!(
            !rest.ends_with(b"0\r\n\r\n"),
            "{name} ended cleanly: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The held long poll gets no answer at all, and the idle connection is closed.
    assert_eq!(read_until_closed(&mut held).await, b"");
    assert_eq!(read_until_closed(&mut idle).await, b"");
    // The WebSocket ends without a Close frame (a browser reports code 1006).
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(frame))) => panic!("clean close {frame:?}, expected a cut"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    wait_subscribers(a, 0).await;

    // The server keeps serving, and a client resumes where it was.
    assert_eq!(publish(a, TOPIC, "after the drop").await, 2);
    let epoch = server.hub.epoch();
    let (mut resumed, head) = open_stream(
        a,
        &format!("/sse?topic={TOPIC}"),
        &format!("Last-Event-ID: {epoch}-1\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(&format!("id: {epoch}-2\ndata: after the drop")) {
        let n = tokio::time::timeout(STEP, resumed.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "{:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(!String::from_utf8_lossy(&got).contains("before the drop"));

    // A second drop works the same way, and connections opened after the last drop still
    // shut down cleanly.
    assert_eq!(post(a, "/demo/drop-all", b"").await.status, 200);
    assert!(!read_until_closed(&mut resumed)
        .await
        .ends_with(b"0\r\n\r\n"));
    let (mut last, _) = open_stream(a, &format!("/stream?topic={TOPIC}"), "").await;
    let report = server.shutdown().await;
    assert_eq!(report.forced, 0);
    assert!(read_until_closed(&mut last).await.ends_with(b"0\r\n\r\n"));
}

/// A control `POST` with `headers` (each line ending in CRLF) to the demo at `a`.
async fn control(a: SocketAddr, path: &str, headers: &str, body: &[u8]) -> Reply {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {a}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(a, &req).await
}

#[tokio::test]
async fn controls_answer_only_the_demo_pages_own_origin() {
    let mut server = DemoServer::start(paused()).await;
    let a = server.addr;
    let (mut sse, _) = open_stream(a, &format!("/sse?topic={TOPIC}"), "").await;
    wait_subscribers(a, 1).await;
    let before = get(a, "/demo/config").await.json();
    let change = br#"{"rate":5}"#;
    // Another page's simple POSTs (no preflight) and a browser's own word that the request is
    // cross-site are refused, with a JSON error and no CORS header.
    let foreign = [
        "Origin: http://evil.example\r\n".to_owned(),
        "Origin: null\r\n".to_owned(),
        format!("Origin: https://{a}\r\n"),
        format!("Origin: http://{a}.evil.example\r\n"),
        format!("Origin: http://{a}\r\nSec-Fetch-Site: cross-site\r\n"),
        "Sec-Fetch-Site: same-site\r\n".to_owned(),
    ];
    for headers in &foreign {
        for (path, body) in [("/demo/drop-all", &b""[..]), ("/demo/config", change)] {
            let r = control(a, path, headers, body).await;
            assert_eq!(r.status, 403, "{path} {headers:?}: {}", r.text());
            assert!(r.json()["error"].as_str().unwrap().contains("own origin"));
            assert_eq!(r.header("access-control-allow-origin"), None, "{path}");
        }
    }
    // Nothing happened: the subscriber is still there and the settings are unchanged.
    assert_eq!(get(a, "/stats").await.json()["subscribers_open"], 1);
    assert_eq!(get(a, "/demo/config").await.json(), before);
    // A preflight for a control gets no CORS header either, so a cross-origin JSON POST never
    // leaves the browser; the protocol's endpoints stay open to every origin.
    let preflight = |path: &str| {
        format!("OPTIONS {path} HTTP/1.1\r\nHost: {a}\r\nOrigin: http://evil.example\r\nConnection: close\r\n\r\n")
    };
    let r = raw(a, preflight("/demo/drop-all").as_bytes()).await;
    assert_eq!(r.header("access-control-allow-origin"), None);
    let r = raw(a, preflight("/publish").as_bytes()).await;
    assert_eq!(
        r.header("access-control-allow-origin").as_deref(),
        Some("*")
    );

    // The page itself (its origin is this server) and non-browser tools are served.
    let own = format!("Origin: http://{a}\r\nSec-Fetch-Site: same-origin\r\n");
    let r = control(a, "/demo/config", &own, change).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["rate"], 5.0);
    let r = control(a, "/demo/config", "", br#"{"rate":0}"#).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = control(a, "/demo/drop-all", &own, b"").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let _ = read_until_closed(&mut sse).await;
    server.shutdown().await;
}

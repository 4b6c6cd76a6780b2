//! The live browser demo: its control endpoint refuses bad input, its drop-all switch cuts every
//! kind of connection while the server keeps serving, and, end to end in headless Chromium,
//! every panel receives consecutive ids before and after the drop-all button.

mod cdp;
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
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

const BIN: &str = env!("CARGO_BIN_EXE_pushbench");

/// The demo served in-process on `127.0.0.1:0`.
struct DemoServer {
    addr: SocketAddr,
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
            hub,
            ServerConfig::default(),
            settings,
            async {
                let _ = rx.await;
            },
        ));
        DemoServer {
            addr,
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
    assert_eq!(
        before,
        serde_json::json!({"topic": TOPIC, "last_id": 0, "rate": 0.0, "payload_bytes": 64,
                           "poll_interval_ms": 1000})
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
    let (mut resumed, head) =
        open_stream(a, &format!("/sse?topic={TOPIC}"), "Last-Event-ID: 1\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains("id: 2\ndata: after the drop") {
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

#[test]
fn bad_settings_on_the_command_line_fail_with_one_line() {
    for (args, reason) in [
        (["--rate", "1000"], "rate must be"),
        (["--payload-bytes", "5"], "payload_bytes must be from 32"),
        (["--poll-interval-ms", "10"], "poll_interval_ms must be"),
    ] {
        let out = Command::new(BIN)
            .args(["demo", "--addr", "127.0.0.1:0"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: nothing is served");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("error: ") && err.contains(reason), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: the real binary, the real page, Debian's Chromium.

/// Events each panel must receive, consecutively, before the drop and again after it.
const EVENTS: u64 = 10;
/// The longest any wait for the page may take.
const PAGE_WAIT: Duration = Duration::from_secs(30);
const WIDTH: u32 = 1500;
const HEIGHT: u32 = 1000;

/// `pushbench demo` as a child process, killed when dropped.
struct DemoProcess {
    child: Child,
    url: String,
    addr: SocketAddr,
}

impl DemoProcess {
    fn spawn() -> DemoProcess {
        let mut child = Command::new(BIN)
            .args(["demo", "--addr", "127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("binary runs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .trim()
            .strip_prefix("demo on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        let addr = url
            .strip_prefix("http://")
            .and_then(|s| s.strip_suffix('/'))
            .unwrap_or_else(|| panic!("not a page address: {url}"))
            .parse()
            .unwrap();
        DemoProcess { child, url, addr }
    }

    /// SIGTERM, then the process must exit 0 within the shutdown deadline.
    fn stop(mut self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(7),
                "demo still running after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for DemoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One panel as its data attributes describe it.
#[derive(Debug, Clone, PartialEq)]
struct PanelState {
    transport: String,
    received: u64,
    first_id: u64,
    last_id: u64,
    gaps: u64,
    dups: u64,
    requests: u64,
    reconnects: u64,
    state: String,
}

impl PanelState {
    /// Every id from the first to the last arrived, once.
    fn consecutive(&self) -> bool {
        self.gaps == 0 && self.dups == 0 && self.received + self.first_id == self.last_id + 1
    }
}

const READ_PANELS: &str = r#"[...document.querySelectorAll("[data-transport]")].map((e) => ({
    transport: e.dataset.transport, received: e.dataset.received, first: e.dataset.firstId,
    last: e.dataset.lastId, gaps: e.dataset.gaps, dups: e.dataset.dups,
    requests: e.dataset.requests, reconnects: e.dataset.reconnects, state: e.dataset.state,
}))"#;

/// The panels, or `None` while the page has not set them up.
fn parse_panels(value: &Value) -> Option<Vec<PanelState>> {
    let num = |p: &Value, k: &str| p[k].as_str()?.parse::<u64>().ok();
    let panels = value
        .as_array()?
        .iter()
        .map(|p| {
            Some(PanelState {
                transport: p["transport"].as_str()?.to_owned(),
                received: num(p, "received")?,
                first_id: num(p, "first")?,
                last_id: num(p, "last")?,
                gaps: num(p, "gaps")?,
                dups: num(p, "dups")?,
                requests: num(p, "requests")?,
                reconnects: num(p, "reconnects")?,
                state: p["state"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect::<Option<Vec<_>>>()?;
    (panels.len() == 5).then_some(panels)
}

fn describe(panels: &[PanelState]) -> String {
    panels
        .iter()
        .map(|p| {
            format!(
                "  {:<9} received {:>4}  ids {}..={}  gaps {}  dups {}  requests {}  reconnects {}  {}",
                p.transport,
                p.received,
                p.first_id,
                p.last_id,
                p.gaps,
                p.dups,
                p.requests,
                p.reconnects,
                p.state
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads the panels until `done` holds for them, or fails after [`PAGE_WAIT`] with every
/// panel's state.
async fn wait_panels(
    browser: &mut cdp::Browser,
    page: &cdp::Page,
    what: &str,
    done: impl Fn(&[PanelState]) -> bool,
) -> Vec<PanelState> {
    let started = Instant::now();
    let mut last = None;
    loop {
        if let Some(panels) = parse_panels(&browser.eval(page, READ_PANELS).await) {
            if done(&panels) {
                return panels;
            }
            last = Some(panels);
        }
        if started.elapsed() > PAGE_WAIT {
            let notice = browser
                .eval(page, "document.getElementById('notice').textContent")
                .await;
            panic!(
                "{what}: not reached within {PAGE_WAIT:?}. Panels:\n{}\nnotice: {notice}\nchromium:\n{}",
                last.as_deref().map_or("(never set up)".to_owned(), describe),
                browser.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the page's status line contains `text`.
async fn wait_notice(browser: &mut cdp::Browser, page: &cdp::Page, text: &str) -> String {
    let started = Instant::now();
    loop {
        let notice = browser
            .eval(page, "document.getElementById('notice').textContent")
            .await;
        let notice = notice.as_str().unwrap_or_default().to_owned();
        if notice.contains(text) {
            return notice;
        }
        assert!(
            started.elapsed() < PAGE_WAIT,
            "the page never said {text:?}; it says {notice:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Types `value` into a control and leaves the field, as a user would.
async fn set_control(browser: &mut cdp::Browser, page: &cdp::Page, name: &str, value: &str) {
    let js = format!(
        r#"(() => {{ const i = document.querySelector('input[name="{name}"]');
            i.value = "{value}"; i.dispatchEvent(new Event("change")); return true; }})()"#
    );
    assert_eq!(browser.eval(page, &js).await, Value::Bool(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_receives_consecutive_ids_before_and_after_drop_all() {
    let chromium = cdp::chromium_path();
    if !chromium.exists() {
        let why = format!(
            "{} is not installed (Debian package chromium; .ci/run installs it)",
            chromium.display()
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping the browser demo test: {why}");
        }
        return;
    }
    let started = Instant::now();
    let server = DemoProcess::spawn();
    let mut browser = cdp::Browser::launch(&chromium, WIDTH, HEIGHT).await;
    let page = browser.new_page(WIDTH, HEIGHT).await;
    browser.navigate(&page, &server.url).await;
    wait_panels(&mut browser, &page, "page set up", |_| true).await;

    // The controls go through the server's control endpoint: a good value is applied, a bad one
    // is refused with the server's reason and the field goes back to the value in force.
    set_control(&mut browser, &page, "rate", "10").await;
    wait_notice(&mut browser, &page, "rate is now 10").await;
    assert_eq!(get(server.addr, "/demo/config").await.json()["rate"], 10.0);
    set_control(&mut browser, &page, "payload_bytes", "5").await;
    wait_notice(&mut browser, &page, "payload_bytes must be from 32").await;
    let field = browser
        .eval(
            &page,
            "document.querySelector('input[name=payload_bytes]').value",
        )
        .await;
    assert_eq!(field, "64");

    let before = wait_panels(&mut browser, &page, "before the drop", |panels| {
        panels
            .iter()
            .all(|p| p.received >= EVENTS && p.consecutive())
    })
    .await;

    let clicked = browser
        .eval(
            &page,
            "document.querySelector('[data-action=drop-all]').click(); true",
        )
        .await;
    assert_eq!(clicked, Value::Bool(true));
    wait_notice(&mut browser, &page, "the server cut").await;

    // Every panel goes on with the next ids: nothing lost, nothing twice. The ones holding a
    // connection all the time must have reconnected (EventSource by itself, the others in code).
    let after = wait_panels(&mut browser, &page, "after the drop", |panels| {
        panels.iter().zip(&before).all(|(p, b)| {
            let always_connected = matches!(p.transport.as_str(), "stream" | "sse" | "ws");
            p.consecutive()
                && p.first_id == b.first_id
                && p.received >= b.received + EVENTS
                && (!always_connected || p.reconnects > b.reconnects)
        })
    })
    .await;
    for p in &after {
        assert_eq!(p.state, "connected", "{}", describe(&after));
    }

    // The whole page, for the README.
    let height = browser
        .eval(
            &page,
            "Math.ceil(document.querySelector('footer').getBoundingClientRect().bottom + 20)",
        )
        .await
        .as_u64()
        .unwrap_or(u64::from(HEIGHT));
    browser
        .set_viewport(&page, WIDTH, height.clamp(400, 4000) as u32)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let png = browser.screenshot(&page).await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("demo-screenshot.png");
    std::fs::write(&shot, &png).unwrap();
    // `PUSHBENCH_DEMO_SCREENSHOT=docs/demo.png` refreshes the README's copy.
    if let Some(copy) = std::env::var_os("PUSHBENCH_DEMO_SCREENSHOT") {
        std::fs::write(copy, &png).unwrap();
    }

    drop(browser);
    server.stop();
    println!(
        "demo in Chromium: ok in {:.1} s; screenshot {}\n{}",
        started.elapsed().as_secs_f64(),
        shot.display(),
        describe(&after)
    );
}

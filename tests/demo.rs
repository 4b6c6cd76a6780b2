//! `pushbench demo`, the real binary: bad settings fail with one line, and, end to end in
//! Debian's headless Chromium, every panel of the page receives consecutive ids before and after
//! the drop-all button, and goes on through a restart of the server, told of it by a reset. The demo server's own behaviour is tested in `tests/demo_server.rs`.

mod cdp;
mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_pushbench");

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
        Self::spawn_on("127.0.0.1:0")
    }

    /// On `addr`: `127.0.0.1:0` picks a port; a restart asks for the same one again.
    fn spawn_on(addr: &str) -> DemoProcess {
        let (child, rest) =
            common::spawn_announcing(&["demo", "--addr", addr], "demo on ", Stdio::inherit());
        let url = rest;
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
    resets: u64,
    epoch: String,
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
    requests: e.dataset.requests, reconnects: e.dataset.reconnects, resets: e.dataset.resets,
    epoch: e.dataset.epoch, state: e.dataset.state,
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
                resets: num(p, "resets")?,
                epoch: p["epoch"].as_str()?.to_owned(),
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
                "  {:<9} received {:>4}  ids {}..={}  gaps {}  dups {}  requests {}  reconnects {}  epoch {} resets {}  {}",
                p.transport,
                p.received,
                p.first_id,
                p.last_id,
                p.gaps,
                p.dups,
                p.requests,
                p.reconnects,
                p.epoch,
                p.resets,
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

    // A restart: the server is killed and started again on the same address, a new life whose
    // ids start at 1 again. Every panel resumes with its EPOCH-ID cursor, is told of the reset,
    // and goes on with the new life's events from its first: none twice, none skipped.
    let addr = server.addr;
    drop(server); // SIGKILL, as a crash
    let server = DemoProcess::spawn_on(&addr.to_string());
    let config = get(server.addr, "/demo/config").await.json();
    let epoch = config["epoch"].as_str().unwrap().to_owned();
    // It publishes at its default rate (2 events/s), so the new life's first 10 events take 5 s.
    let restarted = wait_panels(&mut browser, &page, "after the restart", |panels| {
        panels.iter().all(|p| {
            p.epoch == epoch
                && p.resets == 1
                && p.gaps == 0
                && p.dups == 0
                && p.last_id >= EVENTS
                && p.state == "connected"
        })
    })
    .await;

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

    browser.close().await;
    server.stop();
    println!(
        "demo in Chromium: ok in {:.1} s; screenshot {}\n{}",
        started.elapsed().as_secs_f64(),
        shot.display(),
        describe(&restarted)
    );
}

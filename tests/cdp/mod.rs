//! Headless Chromium driven over the Chrome DevTools Protocol, with nothing but a WebSocket
//! client: launch, open a page, evaluate JavaScript, take a screenshot. Every step is bounded in
//! time, and the browser is killed when the [`Browser`] is dropped, on failure too.

#![allow(dead_code)] // only tests/demo.rs drives a browser

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
const CALL: Duration = Duration::from_secs(15);
/// How long the browser may take to start listening.
const LAUNCH: Duration = Duration::from_secs(30);

/// Where Debian's package puts the browser; `CHROMIUM` overrides it.
pub fn chromium_path() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// A running headless Chromium and one DevTools connection to it.
pub struct Browser {
    child: Child,
    /// The throw-away profile; it also holds the browser's log.
    profile: PathBuf,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// One tab, reached through its flattened DevTools session.
#[derive(Debug, Clone)]
pub struct Page {
    session: String,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and a `width`×`height` window, and
    /// connects to its DevTools endpoint.
    pub async fn launch(chromium: &Path, width: u32, height: u32) -> Browser {
        let profile = std::env::temp_dir().join(format!(
            "pushbench-chromium-{}-{}",
            std::process::id(),
            next_profile()
        ));
        // A fresh profile each time: a leftover one could hold an old DevToolsActivePort.
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(profile.join("chromium.log")).unwrap();
        // The background-networking flags keep the browser from calling out: this machine has
        // no network but loopback.
        let child = Command::new(chromium)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromium.display()));
        let mut guard = Launching {
            child: Some(child),
            profile: profile.clone(),
        };
        let endpoint = guard.devtools_endpoint();
        let (socket, _) = tokio::time::timeout(CALL, tokio_tungstenite::connect_async(&endpoint))
            .await
            .unwrap_or_else(|_| panic!("DevTools endpoint {endpoint} did not answer"))
            .unwrap_or_else(|e| panic!("cannot connect to {endpoint}: {e}"));
        Browser {
            child: guard.child.take().unwrap(),
            profile,
            socket,
            next_id: 1,
        }
    }

    /// Opens a new tab on `about:blank` and attaches to it.
    pub async fn new_page(&mut self, width: u32, height: u32) -> Page {
        let target = self
            .call(None, "Target.createTarget", json!({ "url": "about:blank" }))
            .await;
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = self
            .call(
                None,
                "Target.attachToTarget",
                json!({ "targetId": target_id, "flatten": true }),
            )
            .await;
        let page = Page {
            session: attached["sessionId"].as_str().unwrap().to_owned(),
        };
        self.page_call(&page, "Page.enable", json!({})).await;
        self.set_viewport(&page, width, height).await;
        page
    }

    /// Sizes the page's viewport, in CSS pixels at a device scale factor of 1.
    pub async fn set_viewport(&mut self, page: &Page, width: u32, height: u32) {
        self.page_call(
            page,
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": false }),
        )
        .await;
    }

    /// Loads `url` in the page.
    pub async fn navigate(&mut self, page: &Page, url: &str) {
        let r = self
            .page_call(page, "Page.navigate", json!({ "url": url }))
            .await;
        assert!(r.get("errorText").is_none(), "navigating to {url}: {r}");
    }

    /// Evaluates `expression` in the page and returns its value (awaited if it is a promise).
    /// A JavaScript exception fails the test, with the exception's text.
    pub async fn eval(&mut self, page: &Page, expression: &str) -> Value {
        let r = self
            .page_call(
                page,
                "Runtime.evaluate",
                json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        if let Some(ex) = r.get("exceptionDetails") {
            panic!("JavaScript threw: {ex}\nin: {expression}");
        }
        r["result"]["value"].clone()
    }

    /// A PNG of the page's viewport.
    pub async fn screenshot(&mut self, page: &Page) -> Vec<u8> {
        let r = self
            .page_call(page, "Page.captureScreenshot", json!({ "format": "png" }))
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().expect("screenshot data"))
            .expect("screenshot is base64")
    }

    pub async fn page_call(&mut self, page: &Page, method: &str, params: Value) -> Value {
        let session = page.session.clone();
        self.call(Some(&session), method, params).await
    }

    /// Sends one command and waits for its answer, skipping the events in between.
    pub async fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let deadline = tokio::time::Instant::now() + CALL;
        tokio::time::timeout_at(deadline, self.socket.send(Message::text(msg.to_string())))
            .await
            .unwrap_or_else(|_| panic!("{method}: sending timed out"))
            .unwrap_or_else(|e| panic!("{method}: {e}"));
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .unwrap_or_else(|_| panic!("{method}: no answer within {CALL:?}"))
                .unwrap_or_else(|| panic!("{method}: the browser closed the DevTools socket"))
                .unwrap_or_else(|e| panic!("{method}: {e}"));
            let Message::Text(text) = frame else {
                continue;
            };
            let reply: Value = serde_json::from_str(&text).unwrap();
            if reply["id"] != id {
                continue; // an event, or an answer to nothing we wait for
            }
            if let Some(err) = reply.get("error") {
                panic!("{method} failed: {err}");
            }
            return reply["result"].clone();
        }
    }

    /// Asks the browser to quit, so it ends its helper processes itself, and waits for it a
    /// moment; whatever is left is killed on drop.
    pub async fn close(mut self) {
        let quit = json!({ "id": self.next_id, "method": "Browser.close" });
        let _ = tokio::time::timeout(CALL, self.socket.send(Message::text(quit.to_string()))).await;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last lines the browser wrote to stderr, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.profile)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        remove_profile(&self.profile);
    }
}

/// Removes a profile, retrying for a moment: the browser's helper processes outlive the main
/// one by a few milliseconds and may still write into it.
fn remove_profile(profile: &Path) {
    for _ in 0..40 {
        match std::fs::remove_dir_all(profile) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                std::thread::sleep(Duration::from_millis(50));
            }
            _ => return,
        }
    }
}

/// The browser until its DevTools endpoint is up: killed if the launch fails.
struct Launching {
    child: Option<Child>,
    profile: PathBuf,
}

impl Launching {
    /// Waits for `DevToolsActivePort` (port, then the browser's path) in the profile.
    fn devtools_endpoint(&mut self) -> String {
        let file = self.profile.join("DevToolsActivePort");
        let started = Instant::now();
        loop {
            if let Ok(text) = std::fs::read_to_string(&file) {
                let mut lines = text.lines();
                if let (Some(port), Some(path)) = (lines.next(), lines.next()) {
                    return format!("ws://127.0.0.1:{port}{path}");
                }
            }
            let child = self.child.as_mut().unwrap();
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "chromium exited ({status}) before opening DevTools:\n{}",
                    log_tail(&self.profile)
                );
            }
            assert!(
                started.elapsed() < LAUNCH,
                "chromium did not open DevTools within {LAUNCH:?}:\n{}",
                log_tail(&self.profile)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Launching {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            remove_profile(&self.profile);
        }
    }
}

fn log_tail(profile: &Path) -> String {
    let log = std::fs::read_to_string(profile.join("chromium.log")).unwrap_or_default();
    let lines: Vec<_> = log.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Distinguishes the profiles of browsers launched by one test process.
fn next_profile() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

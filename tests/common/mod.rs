//! Test helpers: an in-process server on `127.0.0.1:0`, and raw HTTP/1.1 over TCP so tests see
//! exactly what a client on the wire would.

#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::time::Duration;

use pushbench_servers::{serve, Hub, HubConfig, ServerConfig, ShutdownReport, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Every network step of a test is bounded by this, so a bug shows as a failure, not a hang.
pub const STEP: Duration = Duration::from_secs(10);

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<ShutdownReport>>,
}

impl TestServer {
    pub async fn start(transports: &[Transport]) -> TestServer {
        Self::start_with(transports, HubConfig::default(), ServerConfig::default()).await
    }

    pub async fn start_with(
        transports: &[Transport],
        hub_config: HubConfig,
        config: ServerConfig,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, transports, hub_config, config).await
    }

    /// A new life of this server on the same address, as a restart makes it: the old one
    /// shuts down, and a fresh hub (a new epoch, ids from 1) serves `transports`.
    pub async fn restart(&mut self, transports: &[Transport]) {
        self.shutdown().await;
        // The port was the old listener's; nothing else on this machine asks for it.
        let listener = TcpListener::bind(self.addr).await.unwrap();
        *self = Self::start_on(
            listener,
            transports,
            HubConfig::default(),
            ServerConfig::default(),
        )
        .await;
    }

    async fn start_on(
        listener: TcpListener,
        transports: &[Transport],
        hub_config: HubConfig,
        config: ServerConfig,
    ) -> TestServer {
        let transports = transports.to_vec();
        Self::spawn(
            listener,
            hub_config,
            move |listener, hub, stop| async move {
                serve(listener, hub, config, &transports, stop).await
            },
        )
        .await
    }

    /// The FCM-style gateway on `127.0.0.1:0`.
    pub async fn start_gateway(
        gateway: pushbench_servers::gateway::GatewayConfig,
        config: ServerConfig,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::spawn(
            listener,
            HubConfig::default(),
            move |listener, hub, stop| {
                pushbench_servers::gateway::serve(listener, hub, config, gateway, stop)
            },
        )
        .await
    }

    /// Runs `server(listener, hub, shutdown)` on a task.
    async fn spawn<F, Fut>(listener: TcpListener, hub_config: HubConfig, server: F) -> TestServer
    where
        F: FnOnce(
            TcpListener,
            Hub,
            std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
        ) -> Fut,
        Fut: std::future::Future<Output = ShutdownReport> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let hub = Hub::new(hub_config);
        let (tx, rx) = oneshot::channel::<()>();
        let stop = Box::pin(async {
            let _ = rx.await;
        });
        let task = tokio::spawn(server(listener, hub.clone(), stop));
        TestServer {
            addr,
            hub,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Starts graceful shutdown and waits for the server to finish it.
    pub async fn shutdown(&mut self) -> ShutdownReport {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(STEP, self.task.take().unwrap())
            .await
            .expect("server did not shut down in time")
            .unwrap()
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
}

/// Sends `request` (a complete HTTP/1.1 request) and reads the response until the server
/// closes the connection.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(STEP, s.read_to_end(&mut buf))
        .await
        .expect("response did not end in time")
        .unwrap();
    parse_reply(&buf)
}

pub fn parse_reply(buf: &[u8]) -> Reply {
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(buf)));
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status code");
    let mut body = buf[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply { status, head, body }
}

fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
            .expect("chunk size");
        raw = &raw[eol + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
    out
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
}

pub async fn post(addr: SocketAddr, path: &str, body: &[u8]) -> Reply {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    raw(addr, &req).await
}

/// Publishes and returns the id.
pub async fn publish(addr: SocketAddr, topic: &str, payload: &str) -> u64 {
    let r = post(addr, &format!("/publish?topic={topic}"), payload.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["id"].as_u64().unwrap()
}

/// Opens a request whose response stays open, and returns the socket after the head.
pub async fn open_stream(addr: SocketAddr, path: &str, extra_headers: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra_headers}\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

/// Reads a response head byte by byte, so nothing after it is consumed.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(STEP, s.read(&mut byte))
            .await
            .expect("head in time")
            .unwrap();
        assert!(n == 1, "connection closed before the response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Payloads that exercise escaping in every format.
pub fn payload(i: usize) -> String {
    match i % 4 {
        0 => format!("plain-{i}"),
        1 => format!("quote \" backslash \\ tab \t #{i}"),
        2 => format!("unicode ü 漢字 😀 {i}"),
        _ => format!("{{\"json\":\"inside\",\"n\":{i}}} <tags> & data: id: {i}"),
    }
}

/// Starts the pushbench binary with `args` and reads its first stdout line, which must start with
/// `prefix` (`listening on http://`, `demo on http://`); returns the child and the rest of the line.
pub fn spawn_announcing(
    args: &[&str],
    prefix: &str,
    stderr: std::process::Stdio,
) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pushbench"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("binary runs");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let rest = first
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_owned();
    (child, rest)
}

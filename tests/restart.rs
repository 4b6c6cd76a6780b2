//! A server killed and started again between publishes, as issue 14 found it, watched by clients
//! that share no code with pushbench: curl, Python's `websockets` (scripts/ws-resume-client.py)
//! and Chromium's `EventSource`. Each must be told of the reset and receive every event of the
//! new life: after the first restart the new life has published fewer events (3) than the
//! clients had (5), so a bare cursor is ahead of it; after the second it has published more (10),
//! so a bare cursor would silently skip ids 1 to 3. The load generator's own clients are tested
//! across a restart in tests/transports.rs.

mod cdp;
mod common;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const TOPIC: &str = "r";
/// Events published in each life: before the first restart, then after each.
const LIVES: [usize; 3] = [5, 3, 10];
/// The longest any client may take to see what it must.
const WAIT: Duration = Duration::from_secs(30);

/// `pushbench serve all` as a child process, killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Starts on `addr` (`127.0.0.1:0` the first time, the same port after).
    fn start(addr: &str) -> Server {
        let (child, addr) = common::spawn_announcing(
            &["serve", "all", "--addr", addr],
            "listening on http://",
            Stdio::inherit(),
        );
        Server {
            child,
            addr: addr.parse().unwrap(),
        }
    }

    /// SIGKILL: no graceful shutdown, every connection cut at once, as a crash does.
    fn kill(mut self) -> SocketAddr {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process whose stdout lines are gathered as they come.
struct Lines {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Lines {
    fn spawn(command: &mut Command) -> Lines {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("{command:?}: {e}"));
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Lines { child, lines }
    }

    fn json(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap();
        (lines.iter())
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
            .collect()
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a client saw, in one shape for all three: a reset to an epoch, or an event's id and
/// payload.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Reset(String),
    Event(u64, String),
}

/// What every client must have seen after `lives` lives: each life's events, every life after
/// the first announced by a reset to its epoch.
fn expected(epochs: &[String]) -> Vec<Seen> {
    let mut want = Vec::new();
    for (life, (&n, epoch)) in LIVES.iter().zip(epochs).enumerate() {
        if life > 0 {
            want.push(Seen::Reset(epoch.clone()));
        }
        want.extend((1..=n).map(|i| Seen::Event(i as u64, data(life, i))));
    }
    want
}

fn data(life: usize, i: usize) -> String {
    format!("life {life} event {i}")
}

/// NDJSON lines or WebSocket frames, as `Seen`; hellos are not signals.
fn seen_in_json(items: &[Value]) -> Vec<Seen> {
    let mut seen = Vec::new();
    for v in items {
        if v["reset"] == Value::Bool(true) {
            seen.push(Seen::Reset(v["epoch"].as_str().unwrap().to_owned()));
        } else if let Some(id) = v["id"].as_u64() {
            seen.push(Seen::Event(id, v["data"].as_str().unwrap().to_owned()));
        }
    }
    seen
}

/// The cursor curl resumes with: the last epoch named and the last event's id after it.
fn cursor_of(items: &[Value]) -> String {
    let (mut epoch, mut id) = (String::new(), 0);
    for v in items {
        if let Some(e) = v["epoch"].as_str() {
            epoch = e.to_owned();
            if v["reset"] == Value::Bool(true) {
                id = 0;
            }
        } else if let Some(n) = v["id"].as_u64() {
            id = n;
        }
    }
    format!("{epoch}-{id}")
}

/// curl reading an NDJSON stream, from `after`: one process per life of the server, since curl
/// does not reconnect; the test resumes it with the cursor the last one ended at, as a script
/// would.
fn curl_stream(addr: SocketAddr, after: &str) -> Lines {
    Lines::spawn(Command::new("curl").args([
        "-sN",
        "--max-time",
        "60",
        &format!("http://{addr}/stream?topic={TOPIC}&after={after}"),
    ]))
}

const WATCH_SSE: &str = r#"(() => {
    window.seen = [];
    const es = new EventSource("/sse?topic=r&after=0");
    es.onmessage = (e) => seen.push({ id: e.lastEventId, data: e.data });
    es.addEventListener("reset", (e) => seen.push({ reset: JSON.parse(e.data).epoch, id: e.lastEventId }));
    return true;
})()"#;

/// What the page's `EventSource` saw. Its ids are `EPOCH-ID`; a reset's is `EPOCH-0`.
async fn seen_in_browser(browser: &mut cdp::Browser, page: &cdp::Page) -> Vec<Seen> {
    let v = browser.eval(page, "JSON.stringify(window.seen)").await;
    let items: Vec<Value> = serde_json::from_str(v.as_str().unwrap_or("[]")).unwrap();
    (items.iter())
        .map(|v| {
            let id = v["id"].as_str().unwrap();
            if let Some(epoch) = v["reset"].as_str() {
                assert_eq!(id, format!("{epoch}-0"), "a reset moves the last event id");
                return Seen::Reset(epoch.to_owned());
            }
            let (_, n) = id.split_once('-').expect("an EPOCH-ID");
            Seen::Event(n.parse().unwrap(), v["data"].as_str().unwrap().to_owned())
        })
        .collect()
}

async fn publish_life(addr: SocketAddr, life: usize) -> String {
    let mut epoch = String::new();
    for i in 1..=LIVES[life] {
        let r = post(
            addr,
            &format!("/publish?topic={TOPIC}"),
            data(life, i).as_bytes(),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json()["id"], i as u64);
        epoch = r.json()["epoch"].as_str().unwrap().to_owned();
    }
    epoch
}

/// Waits until `check` holds, or fails after [`WAIT`] with what `describe` says.
async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if started.elapsed() > WAIT => panic!("{what}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn prefix_check(name: &str, seen: &[Seen], want: &[Seen]) -> Result<(), String> {
    if seen.len() >= want.len() {
        assert_eq!(&seen[..want.len()], want, "{name}");
        assert_eq!(seen.len(), want.len(), "{name}: more than was published");
        return Ok(());
    }
    Err(format!("{name} saw {seen:?}, wants {want:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_python_and_chromium_are_told_of_each_restart_and_miss_nothing() {
    let chromium = cdp::chromium_path();
    let python_ok = Command::new("python3")
        .args(["-c", "import websockets"])
        .status()
        .is_ok_and(|s| s.success());
    if !chromium.exists() || !python_ok {
        let why =
            "chromium, or Python's websockets for python3, is missing (.ci/run installs both)";
        assert!(std::env::var_os("CI").is_none(), "{why}");
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipping the restart test: {why}");
        }
        return;
    }
    let mut server = Server::start("127.0.0.1:0");
    let addr = server.addr;
    let mut epochs = vec![publish_life(addr, 0).await];

    let total: usize = LIVES.iter().sum();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ws-resume-client.py");
    let python = Lines::spawn(Command::new("python3").args([
        script,
        &format!("http://{addr}"),
        TOPIC,
        &total.to_string(),
        "90",
    ]));
    let mut curls = vec![curl_stream(addr, "0")];
    let mut browser = cdp::Browser::launch(&chromium, 800, 600).await;
    let page = browser.new_page(800, 600).await;
    // A page of the server's own origin, so the EventSource is same-origin.
    browser
        .navigate(&page, &format!("http://{addr}/stats"))
        .await;
    assert_eq!(browser.eval(&page, WATCH_SSE).await, Value::Bool(true));

    for life in 0..LIVES.len() {
        if life > 0 {
            let addr = server.kill();
            server = Server::start(&addr.to_string());
            epochs.push(publish_life(addr, life).await);
            assert_ne!(epochs[life], epochs[life - 1], "a new life, a new epoch");
            // curl does not reconnect: the script does, with the cursor the last run ended at.
            let last = curls.last().unwrap().json();
            curls.push(curl_stream(addr, &cursor_of(&last)));
        }
        let want = expected(&epochs);
        wait_for(&format!("life {life}: curl"), || {
            let seen: Vec<Seen> = curls.iter().flat_map(|c| seen_in_json(&c.json())).collect();
            std::future::ready(prefix_check("curl", &seen, &want))
        })
        .await;
        wait_for(&format!("life {life}: python websockets"), || {
            std::future::ready(prefix_check("python", &seen_in_json(&python.json()), &want))
        })
        .await;
        let started = Instant::now();
        loop {
            let seen = seen_in_browser(&mut browser, &page).await;
            match prefix_check("chromium EventSource", &seen, &want) {
                Ok(()) => break,
                Err(why) if started.elapsed() > WAIT => {
                    panic!("life {life}: {why}\nchromium:\n{}", browser.log_tail())
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
    browser.close().await;
    drop(server);
}

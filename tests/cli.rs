//! The real `pushbench` binary: `serve` prints its address first, serves, and stops cleanly on
//! SIGTERM and SIGINT; bad command lines fail with one line and a non-zero exit.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_pushbench");

fn spawn_serve(args: &[&str]) -> (Child, SocketAddr) {
    let args: Vec<&str> = std::iter::once("serve")
        .chain(args.iter().copied())
        .collect();
    let (child, addr) = common::spawn_announcing(&args, "listening on http://", Stdio::piped());
    (child, addr.parse().unwrap())
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > within {
            let _ = child.kill();
            panic!("server still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn serve_prints_address_serves_and_stops_on_signals() {
    for sig in ["-TERM", "-INT"] {
        let (mut child, addr) = spawn_serve(&["sse", "--addr", "127.0.0.1:0"]);
        let (mut stream, head) = open_stream(addr, "/sse?topic=cli", "").await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(publish(addr, "cli", "over the wire").await, 1);
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).contains("data: over the wire") {
            let n = tokio::time::timeout(STEP, stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        signal(&child, sig);
        // The open stream ends cleanly (terminating chunk, then EOF) and the process exits 0,
        // well inside the 5 s shutdown deadline.
        let mut rest = Vec::new();
        tokio::time::timeout(STEP, stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert!(
            rest.ends_with(b"0\r\n\r\n"),
            "{:?}",
            String::from_utf8_lossy(&rest)
        );
        let status = wait_exit(&mut child, Duration::from_secs(4));
        assert!(status.success(), "{sig}: {status:?}");
    }
}

fn run_fail(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn bad_command_lines_fail_with_a_clear_message() {
    let err = run_fail(&["serve", "pigeon"]);
    assert!(err.contains("unknown transport"), "{err}");
    let err = run_fail(&["serve", "sse", "--addr", "nowhere"]);
    assert!(err.contains("--addr"), "{err}");
    let err = run_fail(&["serve", "sse", "--keepalive", "often"]);
    assert!(err.contains("30s"), "{err}");
    let err = run_fail(&["serve", "sse", "--slow-policy", "ignore"]);
    assert!(err.contains("drop or disconnect"), "{err}");
    let err = run_fail(&["serve", "gateway", "--device-queue", "0"]);
    assert!(err.contains("--device-queue"), "{err}");
    let err = run_fail(&["serve", "sse", "--device-queue", "5"]);
    assert!(err.contains("`serve gateway` only"), "{err}");
    let err = run_fail(&["serve", "gateway", "--auth-token", ""]);
    assert!(err.contains("--auth-token"), "{err}");
    let err = run_fail(&["serve", "gateway", "--registration-token", ""]);
    assert!(
        err.contains("--registration-token must not be empty"),
        "{err}"
    );
    let err = run_fail(&["serve", "sse", "--registration-token", "x"]);
    assert!(err.contains("`serve gateway` only"), "{err}");
    // `load` against a closed port: these fail before connecting.
    let load_fail = |args: &[&str]| {
        let base = ["load", "--target", "http://127.0.0.1:9", "-q"];
        run_fail(&[&base[..], args].concat())
    };
    let gateway = ["-t", "ws", "--target-profile", "gateway"];
    let err = load_fail(&["-t", "sse", "--target-profile", "gateway"]);
    assert!(err.contains("--transport ws"), "{err}");
    let err = load_fail(&["-t", "ws", "--ttl", "1s"]);
    assert!(err.contains("need --target-profile gateway"), "{err}");
    let err = load_fail(&[&gateway[..], &["--offline-fraction", "2"]].concat());
    assert!(err.contains("--offline-fraction"), "{err}");
    let err = load_fail(&[&gateway[..], &["--send-to", "all"]].concat());
    assert!(err.contains("topic or token"), "{err}");

    // A port already taken: one line naming the address, exit 1.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(BIN)
        .args(["serve", "sse", "--addr", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot listen on"), "{err}");
}

#[tokio::test]
async fn load_with_worker_processes_merges_their_results() {
    let (mut server, addr) = spawn_serve(&["sse", "--addr", "127.0.0.1:0"]);
    let dir = std::env::temp_dir().join(format!("pushbench-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("workers.json");
    let hlog = dir.join("workers.hlog");
    let out = Command::new(BIN)
        .args(["load", "-t", "sse", "--target", &format!("http://{addr}")])
        .args([
            "-c",
            "40",
            "-r",
            "20",
            "-d",
            "2s",
            "--warmup",
            "500ms",
            "--workers",
            "2",
        ])
        .args([
            "-q",
            "--json",
            json.to_str().unwrap(),
            "--hlog",
            hlog.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    signal(&server, "-TERM");
    wait_exit(&mut server, Duration::from_secs(6));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("latency (due → received)"), "{stdout}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(r["loadgen"]["threads"], 2, "two worker processes");
    assert_eq!(r["clients_connected"], 40);
    assert_eq!(r["expected"], 40 * 40);
    assert_eq!(r["delivered"], r["expected"]);
    assert_eq!(r["lost"], 0);
    let log = std::fs::read_to_string(&hlog).unwrap();
    assert!(log.contains("#[StartTime:") && log.lines().any(|l| l.starts_with("Tag=latency,")));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The gateway as a new user meets it: the binary serves it, and `pushbench load` drives it
/// through two worker processes, unicast, with the bearer token in the environment only.
#[test]
fn load_through_the_gateway_binary_with_worker_processes() {
    let (mut child, addr) = spawn_serve(&[
        "gateway",
        "--auth-token",
        "hush-hush",
        "--registration-token",
        "reg-secret",
    ]);
    // Without --addr, a server listens on loopback only.
    assert!(addr.ip().is_loopback(), "{addr}");
    let dir = std::env::temp_dir().join(format!("pushbench-cli-gw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let json = dir.join("gw.json");
    let out = Command::new(BIN)
        .args(["load", "-t", "ws", "--target", &format!("http://{addr}")])
        .args([
            "--target-profile",
            "gateway",
            "--send-to",
            "token",
            "--workers",
            "2",
        ])
        .args([
            "-c", "6", "-r", "20", "-d", "1s", "--warmup", "300ms", "-q", "--json",
        ])
        .arg(&json)
        .env("PUSHBENCH_AUTH_TOKEN", "hush-hush")
        .env("PUSHBENCH_REGISTRATION_TOKEN", "reg-secret")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&json).unwrap();
    assert!(
        !text.contains("hush-hush") && !text.contains("reg-secret"),
        "a token leaked into the report"
    );
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["clients_connected"], 6, "{stdout}");
    assert_eq!(r["delivered"], r["expected"], "{stdout}");
    assert_eq!(r["expected"], 6 * 20, "{stdout}");
    assert_eq!(r["config"]["gateway"]["send_to"], "token");
    assert!(stdout.contains("gateway   targeted"), "{stdout}");
    // A wrong token fails the run at once, with the gateway's reason.
    let out = Command::new(BIN)
        .args(["load", "-t", "ws", "--target", &format!("http://{addr}")])
        .args(["--target-profile", "gateway", "-c", "2", "-d", "1s", "-q"])
        .env("PUSHBENCH_AUTH_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
    signal(&child, "-TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(4)).success());
    let _ = std::fs::remove_dir_all(&dir);
}

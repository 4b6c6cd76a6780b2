//! Pushpin, a production GRIP proxy, in front of `pushbench serve grip`, started by
//! `scripts/pushpin.sh` on a free loopback port: the reference clients in the `pushpin`
//! dialect, and `pushbench load --target-profile pushpin` on its own.
//!
//! Skipped, with a notice, when Pushpin is not installed; under CI (`CI` set), whose script
//! installs it, a missing Pushpin fails instead, so the test cannot pass by not running.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pushbench_loadgen::{Client, ClientConfig, Counters, Item, Profile, Publisher, Target};
use pushbench_servers::Transport;

const N: usize = 20;
/// Every network step is bounded by this, so a bug shows as a failure, not a hang.
const STEP: Duration = Duration::from_secs(10);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/pushpin.sh")
}

/// Whether Pushpin and the services it starts are installed; under CI they must be.
fn pushpin_installed() -> bool {
    let found = ["pushpin", "condure", "zurl"].iter().all(|c| {
        Command::new("sh")
            .args(["-c", &format!("command -v {c}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    assert!(
        found || std::env::var_os("CI").is_none(),
        "CI installs Pushpin (.ci/run), but pushpin, condure or zurl is missing"
    );
    if !found {
        println!("SKIPPED: Pushpin is not installed (apt-get install -y pushpin)");
    }
    found
}

/// A running Pushpin and its origin; stopped (and its prefix removed) when dropped, even after
/// a failed assert.
struct Pushpin {
    prefix: PathBuf,
    url: String,
    publish: String,
    pid: u32,
}

impl Pushpin {
    fn start(name: &str) -> Pushpin {
        let prefix =
            std::env::temp_dir().join(format!("pushbench-pushpin-{name}-{}", std::process::id()));
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .env("PUSHPIN_PREFIX", &prefix)
            .env("PUSHBENCH", env!("CARGO_BIN_EXE_pushbench"))
            .output()
            .expect("run scripts/pushpin.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut p = Pushpin {
            prefix,
            url: String::new(),
            publish: String::new(),
            pid: 0,
        };
        assert!(
            out.status.success(),
            "scripts/pushpin.sh start failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            if let Some(url) = line.strip_prefix("listening on ") {
                p.url = url.to_owned();
            } else if let Some(url) = line.strip_prefix("publish on ") {
                p.publish = url.to_owned();
            } else if let Some(pid) = line.strip_prefix("pid ") {
                p.pid = pid.parse().expect("numeric pid");
            }
        }
        assert!(p.url.starts_with("http://127.0.0.1:"), "{stdout}");
        assert!(p.publish.starts_with("http://127.0.0.1:"), "{stdout}");
        assert_ne!(p.url, p.publish, "{stdout}");
        p
    }
}

impl Drop for Pushpin {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("PUSHPIN_PREFIX", &self.prefix)
            .output();
    }
}

async fn next(client: &mut Client) -> Item {
    tokio::time::timeout(STEP, client.next())
        .await
        .expect("item in time")
        .expect("client error")
}

/// Subscribes through Pushpin from now, publishes `N` events to the origin back to back, and
/// checks exactly those arrive, in order, with the origin's ids: events published before the
/// subscription must not, and none may go missing between a long poll's answer and its next
/// hold (Pushpin's `prev-id` recovery).
async fn deliver(pushpin: &Target, origin: &Target, transport: Transport) {
    let topic = format!("pushpin-{}", transport.name());
    let counters = Counters::new_shared();
    let mut publisher = Publisher::connect(origin, counters.clone()).await.unwrap();
    for i in 0..3 {
        publisher
            .publish(&topic, format!("before {i}").as_bytes())
            .await
            .unwrap();
    }
    let config = ClientConfig {
        poll_interval: Duration::from_millis(20),
        reconnect: false,
        ..ClientConfig::new(transport, topic.clone())
    };
    let mut client = tokio::time::timeout(STEP, Client::connect(pushpin, config, counters.clone()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{transport}: connect: {e}"));
    let mut sent = Vec::new();
    for i in 1..=N {
        let payload = format!("{transport} event {i} ü");
        let id = publisher.publish(&topic, payload.as_bytes()).await.unwrap();
        // The origin numbers events, as every pushbench server does.
        assert_eq!(id, 3 + i as u64, "{transport}");
        sent.push(payload);
    }
    let mut got = Vec::new();
    while got.len() < N {
        match next(&mut client).await {
            Item::Event(d) => {
                assert_eq!(d.id, 3 + got.len() as u64 + 1, "{transport}");
                got.push(String::from_utf8(d.payload.to_vec()).unwrap());
            }
            other => panic!("{transport}: expected an event, got {other:?}"),
        }
    }
    assert_eq!(got, sent, "{transport}");
    let extra = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(extra.is_err(), "{transport}: unexpected {extra:?}");
}

#[tokio::test]
async fn every_transport_through_pushpin() {
    if !pushpin_installed() {
        return;
    }
    let pp = Pushpin::start("clients");
    let pushpin = Target::resolve(&pp.url)
        .await
        .unwrap()
        .with_profile(Profile::Pushpin);
    let origin = Target::resolve(&pp.publish)
        .await
        .unwrap()
        .with_profile(Profile::Pushpin);
    for transport in Transport::ALL {
        deliver(&pushpin, &origin, transport).await;
    }
    // The pid to sample is Pushpin's runner, with its services and the origin below it.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", pp.pid)).unwrap();
    assert_eq!(comm.trim(), "pushpin");
    let children = std::fs::read_dir(format!("/proc/{}/task", pp.pid))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
                .collect::<Vec<_>>()
        })
        .map(|c| c.trim().to_owned())
        .collect::<Vec<_>>();
    for want in ["condure", "pushpin-handler", "pushbench"] {
        assert!(
            children.iter().any(|c| c.starts_with(want)),
            "{want} not under the runner: {children:?}"
        );
    }
}

#[test]
fn load_against_pushpin_on_its_own() {
    if !pushpin_installed() {
        return;
    }
    let pp = Pushpin::start("load");
    let out = std::env::temp_dir().join(format!(
        "pushbench-pushpin-load-{}.json",
        std::process::id()
    ));
    let run = Command::new(env!("CARGO_BIN_EXE_pushbench"))
        .args(["load", "-t", "sse", "--target", &pp.url])
        .args([
            "--target-profile",
            "pushpin",
            "--publish-target",
            &pp.publish,
        ])
        .args(["--server-pid", &pp.pid.to_string()])
        .args(["-c", "50", "-r", "20", "-d", "2s", "-q", "--json"])
        .arg(&out)
        .output()
        .expect("run pushbench load");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let _ = std::fs::remove_file(&out);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["out_of_order"], 0, "{report}");
    assert!(report["delivered"].as_u64().unwrap() >= 50 * 40, "{report}");
    // The server's CPU is the whole tree's: Pushpin's services and the origin together.
    assert!(
        report["server"]["cpu_ms_per_1k_events"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0,
        "{report}"
    );
    // Without --publish-target the profile is refused, in one line.
    let refused = Command::new(env!("CARGO_BIN_EXE_pushbench"))
        .args([
            "load",
            "-t",
            "sse",
            "--target",
            &pp.url,
            "--target-profile",
            "pushpin",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("--publish-target"), "{err}");
}

//! The reference clients and the publisher in Nchan's dialect, against a real Nchan (nginx with
//! libnginx-mod-nchan) started by `scripts/nchan.sh` on a free loopback port.
//!
//! Skipped, with a notice, when nginx or the nchan module is not installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pushbench_loadgen::{
    Client, ClientConfig, ClientError, Counters, Item, Profile, Publisher, Target,
};
use pushbench_servers::Transport;

const N: usize = 20;
/// Every network step is bounded by this, so a bug shows as a failure, not a hang.
const STEP: Duration = Duration::from_secs(10);

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/nchan.sh")
}

/// Whether nginx and the nchan module are installed (as `scripts/nchan.sh` would find them).
fn nchan_installed() -> bool {
    let nginx = Command::new("nginx")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    let module = std::env::var_os("NCHAN_MODULE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/nginx/modules/ngx_nchan_module.so".into());
    nginx && module.is_file()
}

/// A running Nchan; stopped (and its prefix removed) when dropped, even after a failed assert.
struct Nchan {
    prefix: PathBuf,
    url: String,
    worker_pid: u32,
}

impl Nchan {
    fn start() -> Nchan {
        // A port nothing uses right now, handed to nginx.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let prefix = std::env::temp_dir().join(format!(
            "pushbench-nchan-test-{}-{port}",
            std::process::id()
        ));
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .env("NCHAN_PREFIX", &prefix)
            .output()
            .expect("run scripts/nchan.sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        // From here on the guard stops whatever did start.
        let mut nchan = Nchan {
            prefix,
            url: String::new(),
            worker_pid: 0,
        };
        assert!(
            out.status.success(),
            "scripts/nchan.sh start failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for line in stdout.lines() {
            if let Some(url) = line.strip_prefix("listening on ") {
                nchan.url = url.to_owned();
            } else if let Some(pid) = line.strip_prefix("worker_pid ") {
                nchan.worker_pid = pid.parse().expect("numeric worker pid");
            }
        }
        assert_eq!(nchan.url, format!("http://127.0.0.1:{port}"), "{stdout}");
        assert!(nchan.worker_pid > 0, "{stdout}");
        nchan
    }
}

impl Drop for Nchan {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .env("NCHAN_PREFIX", &self.prefix)
            .output();
    }
}

async fn next(client: &mut Client) -> Item {
    tokio::time::timeout(STEP, client.next())
        .await
        .expect("item in time")
        .expect("client error")
}

/// Subscribes from now, publishes `N` events, and checks exactly those arrive, in order; events
/// published before the subscription must not.
async fn deliver(target: &Target, transport: Transport) {
    let topic = format!("nchan-{}", transport.name());
    let counters = Counters::new_shared();
    let mut publisher = Publisher::connect(target, counters.clone()).await.unwrap();
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
    let mut client = tokio::time::timeout(STEP, Client::connect(target, config, counters.clone()))
        .await
        .expect("connect in time")
        .unwrap_or_else(|e| panic!("{transport}: connect: {e}"));
    let mut sent = Vec::new();
    for i in 1..=N {
        let payload = format!("{transport} event {i} ü");
        let id = publisher.publish(&topic, payload.as_bytes()).await.unwrap();
        // Nchan gives no integer id: the publisher counts its accepted publishes.
        assert_eq!(id, 3 + i as u64, "{transport}");
        sent.push(payload);
    }
    let mut got = Vec::new();
    while got.len() < N {
        match next(&mut client).await {
            Item::Event(d) => {
                // Ids are the client's own count of deliveries.
                assert_eq!(d.id, got.len() as u64 + 1, "{transport}");
                got.push(String::from_utf8(d.payload.to_vec()).unwrap());
            }
            gap => panic!("{transport}: Nchan sends no gaps, got {gap:?}"),
        }
    }
    assert_eq!(got, sent, "{transport}");
    assert_eq!(client.cursor(), N as u64, "{transport}");
    // Nothing more: no duplicate, no event from before the subscription.
    let extra = tokio::time::timeout(Duration::from_millis(300), client.next()).await;
    assert!(extra.is_err(), "{transport}: unexpected {extra:?}");
    let s = counters.snapshot();
    assert_eq!(s.errors, 0, "{transport}: {s:?}");
    if transport == Transport::Ws {
        assert!(matches!(
            client.send_upstream("x").await,
            Err(ClientError::Unsupported(Transport::Ws))
        ));
    }
}

#[tokio::test]
async fn every_transport_against_nchan() {
    if !nchan_installed() {
        println!(
            "SKIPPED: nginx or the nchan module is not installed \
             (apt-get install -y nginx-light libnginx-mod-nchan)"
        );
        return;
    }
    let nchan = Nchan::start();
    let target = Target::resolve(&nchan.url)
        .await
        .unwrap()
        .with_profile(Profile::Nchan);
    for transport in [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::Ws,
    ] {
        deliver(&target, transport).await;
    }
    // The worker is the process to measure; it is alive and nginx's.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", nchan.worker_pid)).unwrap();
    assert_eq!(comm.trim(), "nginx");
}

#[tokio::test]
async fn start_after_zero_is_the_oldest_kept_and_other_starts_are_refused() {
    if !nchan_installed() {
        println!("SKIPPED: nginx or the nchan module is not installed");
        return;
    }
    let nchan = Nchan::start();
    let target = Target::resolve(&nchan.url)
        .await
        .unwrap()
        .with_profile(Profile::Nchan);
    let counters = Counters::new_shared();
    let mut publisher = Publisher::connect(&target, counters.clone()).await.unwrap();
    for i in 1..=3 {
        publisher
            .publish("replay", format!("kept {i}").as_bytes())
            .await
            .unwrap();
    }
    for transport in [
        Transport::Poll,
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::Ws,
    ] {
        let config = ClientConfig {
            after: Some(0),
            poll_interval: Duration::from_millis(20),
            reconnect: false,
            ..ClientConfig::new(transport, "replay")
        };
        let mut client = Client::connect(&target, config.clone(), counters.clone())
            .await
            .unwrap_or_else(|e| panic!("{transport}: {e}"));
        let mut got = Vec::new();
        while got.len() < 3 {
            match next(&mut client).await {
                Item::Event(d) => got.push(String::from_utf8(d.payload.to_vec()).unwrap()),
                gap => panic!("{gap:?}"),
            }
        }
        assert_eq!(got, ["kept 1", "kept 2", "kept 3"], "{transport}");
        let refused = Client::connect(
            &target,
            ClientConfig {
                after: Some(2),
                ..config
            },
            counters.clone(),
        )
        .await;
        assert!(
            matches!(refused, Err(ClientError::Protocol(_))),
            "{transport}: {refused:?}"
        );
    }
}

//! The load generator end to end against each real server (small N): the numbers it reports
//! must add up.

mod common;

use std::time::Duration;

use common::*;
use indicatif::ProgressBar;
use pushbench_loadgen::load::{self, LoadConfig, LoadReport};
use pushbench_servers::event::Event;
use pushbench_servers::protocol::Epoch;
use pushbench_servers::Transport;

const CLIENTS: usize = 20;
const RATE: f64 = 20.0;
const PAYLOAD: usize = 64;

async fn run_load(transport: Transport, target: String) -> LoadReport {
    run(small(transport, target)).await
}

/// The small run every test here makes: 20 subscribers, 20 events/s, a 2 s window.
fn small(transport: Transport, target: String) -> LoadConfig {
    LoadConfig {
        clients: CLIENTS,
        rate: RATE,
        duration: Duration::from_secs(2),
        warmup: Duration::from_millis(500),
        drain: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        payload: PAYLOAD,
        threads: 1,
        ..LoadConfig::new(transport, target)
    }
}

/// Runs `config` to completion, bounded in time.
async fn run(config: LoadConfig) -> LoadReport {
    tokio::time::timeout(
        Duration::from_secs(30),
        load::run(config, &ProgressBar::hidden(), std::future::pending()),
    )
    .await
    .expect("the run ends on its own")
    .expect("the run succeeds")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_numbers_add_up_for_every_transport() {
    for transport in Transport::ALL {
        let mut server = TestServer::start(&[transport]).await;
        let r = run_load(transport, server.url()).await;
        let ctx = format!("{transport}:\n{}", r.summary());

        // Every subscriber got every window event exactly once, in order.
        let window_events = (RATE * 2.0) as u64;
        assert_eq!(r.clients_connected, CLIENTS as u64, "{ctx}");
        assert_eq!(r.publish.window_published, window_events, "{ctx}");
        assert_eq!(r.expected, CLIENTS as u64 * window_events, "{ctx}");
        assert_eq!(r.delivered, r.expected, "{ctx}");
        // Every window read was timed by the kernel's arrival stamp.
        assert_eq!(r.unstamped_reads, 0, "{ctx}");
        assert!(
            r.stamped_reads > 0 && r.late_reads <= r.stamped_reads,
            "{ctx}"
        );
        assert_eq!(
            (r.lost, r.duplicates, r.out_of_order, r.gaps),
            (0, 0, 0, 0),
            "{ctx}"
        );
        assert_eq!(r.latency_us.count, r.delivered, "{ctx}");

        // Latencies are positive and ordered.
        let l = r.latency_us;
        assert!(l.min >= 1 && l.p50 <= l.p99 && l.p99 <= l.max, "{ctx}");
        assert_eq!(r.clock_anomalies, 0, "{ctx}");
        // Polling every 100 ms: the mean delay is near half the interval, never above it plus
        // a generous margin; streaming is far below it.
        if transport == Transport::Poll {
            assert!(l.mean > 20_000.0 && l.max < 400_000, "{ctx}");
        } else {
            assert!(l.p50 < 50_000, "{ctx}");
        }

        // Bytes per event are plausible against the encoded frame.
        // Ids in this run have two digits, like this sample's.
        let sample = Event::encode(Epoch::from_bits(1), 50, &"x".repeat(PAYLOAD));
        let frame = match transport {
            Transport::Sse => sample.sse().len(),
            Transport::Stream => sample.ndjson().len(),
            _ => sample.json().len(),
        } as f64;
        let down = r.bytes_down_per_event;
        let up = r.bytes_up_per_event;
        match transport {
            // Pure push: the frame plus a few bytes of chunk or frame header.
            Transport::Stream | Transport::Sse | Transport::Ws => {
                assert!(down >= frame && down <= frame + 16.0, "{ctx}");
                assert!(r.requests_per_event == 0.0 && up == 0.0, "{ctx}");
            }
            // Polling pays a request and response head per poll; long polling one per event.
            Transport::Poll | Transport::LongPoll => {
                assert!(down > frame && down < frame + 600.0, "{ctx}");
                assert!(up > 0.0 && r.requests_per_event > 0.0, "{ctx}");
            }
        }
        if transport == Transport::Poll {
            // A poll every 100 ms against an event every 50 ms: about one request per two
            // events (each client polls at its own random phase, so few polls come back empty).
            let expected = (1.0 / 0.1) / RATE;
            assert!(
                (r.requests_per_event - expected).abs() < expected * 0.4,
                "{ctx}"
            );
        }

        // The server was found and measured; the load generator reported on itself.
        assert!(r.server.pid.is_some(), "{ctx}");
        assert!(
            r.server.cpu_ms_per_1k_events.is_some_and(|v| v > 0.0),
            "{ctx}"
        );
        assert!(r.loadgen.cores >= 1 && !r.timeseries.is_empty(), "{ctx}");
        assert!(!r.histogram.data.is_empty(), "{ctx}");
        assert_matches_schema(&r);
        assert_eq!(server.shutdown().await.forced, 0, "{ctx}");
    }
}

/// The JSON a run writes matches the documented schema (docs/load.schema.json).
fn assert_matches_schema(report: &LoadReport) {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/load.schema.json")).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema is a valid JSON Schema");
    let value = serde_json::to_value(report).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "report does not match the schema:\n{}",
        errors.join("\n")
    );
}

#[test]
fn schema_rejects_a_report_missing_a_field() {
    let schema: serde_json::Value =
        serde_json::from_str(include_str!("../docs/load.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut doc = serde_json::json!({"schema": "pushbench-load/1"});
    assert!(!validator.is_valid(&doc));
    doc["unexpected"] = 1.into();
    assert!(!validator.is_valid(&doc));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_target_is_a_clear_error() {
    // Bind then drop: the port is (almost certainly) closed now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = LoadConfig {
        clients: 3,
        duration: Duration::from_secs(1),
        ..LoadConfig::new(Transport::Sse, format!("http://127.0.0.1:{port}"))
    };
    let err = load::run(config, &ProgressBar::hidden(), std::future::pending())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("no subscriber could connect"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupt_gives_partial_results() {
    let mut server = TestServer::start(&[Transport::Sse]).await;
    let config = LoadConfig {
        clients: 5,
        rate: 50.0,
        duration: Duration::from_secs(60),
        warmup: Duration::ZERO,
        ..LoadConfig::new(Transport::Sse, server.url())
    };
    let started = std::time::Instant::now();
    let r = load::run(config, &ProgressBar::hidden(), async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
    })
    .await
    .unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(r.interrupted);
    assert!(
        r.delivered > 0 && r.delivered <= r.expected + 5 * 5,
        "{}",
        r.summary()
    );
    server.shutdown().await;
}

/// A run against the gateway with `gateway` options (20 devices, 20 events/s, 2 s).
async fn run_gateway(
    target: String,
    gateway: pushbench_loadgen::gateway::GatewayOptions,
) -> LoadReport {
    run(LoadConfig {
        target_profile: pushbench_loadgen::Profile::Gateway,
        gateway: Some(gateway),
        ..small(Transport::Ws, target)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_runs_deliver_everything_and_account_for_offline_devices() {
    use pushbench_loadgen::gateway::{GatewayOptions, Offline, SendTo};
    use pushbench_servers::gateway::GatewayConfig;
    // Both credentials: the app server's for sends, the devices' for registering.
    let auth = GatewayConfig {
        auth_token: Some("tok".into()),
        registration_token: Some("reg".into()),
        ..GatewayConfig::default()
    };
    let mut server =
        TestServer::start_gateway(auth, pushbench_servers::ServerConfig::default()).await;
    let window_events = (RATE * 2.0) as u64;
    let options = GatewayOptions {
        auth_token: Some("tok".into()),
        registration_token: Some("reg".into()),
        ..GatewayOptions::default()
    };
    // Topic fan-out and unicast: every device gets every window event once, in order. Topic
    // devices acknowledge each message, token devices one stream ack per 10.
    for (send_to, ack_every) in [(SendTo::Topic, 1), (SendTo::Token, 10)] {
        let r = run_gateway(
            server.url(),
            GatewayOptions {
                send_to,
                ack_every,
                ..options.clone()
            },
        )
        .await;
        let ctx = format!("{send_to:?}:\n{}", r.summary());
        assert_eq!(r.clients_connected, CLIENTS as u64, "{ctx}");
        assert_eq!(r.publish.window_published, window_events, "{ctx}");
        assert_eq!(r.delivered, CLIENTS as u64 * window_events, "{ctx}");
        assert_eq!((r.lost, r.duplicates, r.out_of_order), (0, 0, 0), "{ctx}");
        let g = r.gateway.as_ref().expect("a gateway section");
        assert_eq!(g.offline_clients, 0, "{ctx}");
        // What the devices had not yet acknowledged at the end (fewer than `ack_every` each)
        // stays queued; nothing is acknowledged that was not written.
        let unacked = CLIENTS as i64 * (i64::from(ack_every) - 1);
        assert!(g.server["acked"] >= r.delivered as i64 - unacked, "{ctx}");
        assert_eq!(g.server["unknown_acks"], 0, "{ctx}");
        assert_eq!(g.server["expired"] + g.server["collapsed"], 0, "{ctx}");
        assert_matches_schema(&r);
    }
    // A quarter of the devices leave for 600 ms with a 250 ms TTL: what they miss is exactly
    // what the gateway says expired, and what was held arrives late, on return.
    let offline = Offline {
        fraction: 0.25,
        at: Duration::from_millis(500),
        duration: Duration::from_millis(600),
    };
    let r = run_gateway(
        server.url(),
        GatewayOptions {
            offline: Some(offline),
            ttl: Some(Duration::from_millis(250)),
            ..options.clone()
        },
    )
    .await;
    let ctx = r.summary();
    let g = r.gateway.as_ref().unwrap();
    assert_eq!(g.offline_clients, CLIENTS as u64 / 4, "{ctx}");
    assert_eq!(g.held_expected, 12 * g.offline_clients, "{ctx}");
    assert!(
        g.held_delivered > 0 && g.held_delivered < g.held_expected,
        "{ctx}"
    );
    assert!(g.held_latency_us.max < 700_000, "{ctx}");
    assert!(g.held_latency_us.p50 > 50_000, "{ctx}");
    assert_eq!(r.lost as i64, g.server["expired"], "{ctx}");
    assert_eq!(r.lost, g.held_expected - g.held_delivered, "{ctx}");
    assert_eq!(r.duplicates + r.out_of_order, 0, "{ctx}");
    assert_matches_schema(&r);
    // Every run's devices unregistered at its end.
    let stats = get(server.addr, "/stats").await.json();
    assert_eq!(stats["gateway"]["devices"], 0, "{stats}");
    assert_eq!(server.shutdown().await.forced, 0);
}

/// The readiness loop (`load/hot.rs`) and a task per subscriber are two ways to drive the same
/// clients: both must deliver every event exactly once, in order, and see the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_loop_and_tasks_account_alike() {
    for transport in Transport::ALL {
        let mut server = TestServer::start(&[transport]).await;
        let mut reports = Vec::new();
        for task_per_subscriber in [false, true] {
            let config = LoadConfig {
                task_per_subscriber,
                ..small(transport, server.url())
            };
            let r = run(config).await;
            let ctx = format!(
                "{transport}, task per subscriber {task_per_subscriber}:\n{}",
                r.summary()
            );
            assert_eq!(r.delivered, r.expected, "{ctx}");
            assert!(r.expected > 0, "{ctx}");
            assert_eq!(
                (r.lost, r.duplicates, r.out_of_order, r.gaps, r.errors.len()),
                (0, 0, 0, 0, 0),
                "{ctx}"
            );
            assert_eq!(r.latency_us.count, r.delivered, "{ctx}");
            assert!(r.config.task_per_subscriber == task_per_subscriber, "{ctx}");
            reports.push(r);
        }
        // The same frames were read either way (ids grow by a digit or not alike in both);
        // polls, whose phases are random, come as often either way.
        let (hot, tasks) = (&reports[0], &reports[1]);
        if !transport.is_streaming() {
            let (h, t) = (hot.requests_per_event, tasks.requests_per_event);
            assert!(
                (h - t).abs() < 0.3 * t,
                "{transport}: {h} vs {t} requests per event"
            );
        } else {
            let (h, t) = (hot.bytes_down_per_event, tasks.bytes_down_per_event);
            assert!(
                (h - t).abs() < 1.0,
                "{transport}: {h} vs {t} bytes per event"
            );
        }
        assert_eq!(server.shutdown().await.forced, 0, "{transport}");
    }
}

/// A TCP relay in front of a server that can hang up every subscription at once (a FIN, as a
/// server or proxy restarting would), leaving publish connections alone.
struct Relay {
    addr: std::net::SocketAddr,
    hang_up: tokio::sync::watch::Sender<u32>,
}

impl Relay {
    /// A relay whose hang-up ends every subscription at once or, `behind_an_event`, each right
    /// behind the next bytes the server sends it: those bytes and the close reach the client
    /// together, as when a server cuts connections just after writing an event.
    async fn start_hanging_up(upstream: std::net::SocketAddr, behind_an_event: bool) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hang_up, rx) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut rx = rx.clone();
                rx.mark_unchanged();
                tokio::spawn(async move {
                    let mut first = vec![0u8; 4096];
                    let n = client.read(&mut first).await.unwrap_or(0);
                    let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    if n == 0 || server.write_all(&first[..n]).await.is_err() {
                        return;
                    }
                    let subscription = first.starts_with(b"GET ");
                    if subscription && behind_an_event {
                        return cut_behind_next_read(client, server, rx).await;
                    }
                    let pipe = tokio::io::copy_bidirectional(&mut client, &mut server);
                    if subscription {
                        tokio::select! {
                            _ = pipe => {}
                            _ = rx.changed() => {}
                        }
                    } else {
                        let _ = pipe.await;
                    }
                });
            }
        });
        Relay { addr, hang_up }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Ends every subscription open now.
    fn hang_up(&self) {
        self.hang_up.send_modify(|n| *n += 1);
    }
}

/// Forwards `server`'s bytes to `client` (and the client's upstream) until `hang_up` fires,
/// then forwards the server's next read and closes the client's side right behind it.
async fn cut_behind_next_read(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mut hang_up: tokio::sync::watch::Receiver<u32>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    let mut buf = vec![0u8; 64 * 1024];
    let mut armed = false;
    loop {
        tokio::select! {
            read = server_read.read(&mut buf) => {
                let n = match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if client_write.write_all(&buf[..n]).await.is_err() || armed {
                    break;
                }
            }
            changed = hang_up.changed(), if !armed => {
                if changed.is_err() {
                    break;
                }
                armed = true;
            }
        }
    }
    // Dropping the write half sends the FIN at once, right behind the bytes just written.
    drop(client_write);
    upstream.abort();
}

/// A 3 s run of [`small`] through a [`Relay`] that hangs up every subscription 2 s in (within
/// the window: 20 clients connect in well under a second), right behind the next bytes the
/// server sends when `behind_an_event`. Gives the report and the connections the server's
/// shutdown had to cut.
async fn through_a_hang_up(transport: Transport, behind_an_event: bool) -> (LoadReport, usize) {
    let mut server = TestServer::start(&[transport]).await;
    let relay = Relay::start_hanging_up(server.addr, behind_an_event).await;
    let config = LoadConfig {
        duration: Duration::from_secs(3),
        ..small(transport, relay.url())
    };
    let running = tokio::spawn(run(config));
    tokio::time::sleep(Duration::from_millis(2000)).await;
    relay.hang_up();
    let r = running.await.unwrap();
    (r, server.shutdown().await.forced)
}

/// A close that reaches the readiness loop together with the event before it is seen: the
/// subscription reconnects and resumes. The loop once trusted the short read that took the
/// event as "drained", never read the end, and left the subscriber in CLOSE_WAIT for the rest
/// of the run with every later event counted lost (found by `[faults]`' mass drop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_right_behind_an_event_is_seen_and_the_subscriber_resumes() {
    for transport in [Transport::Stream, Transport::Sse, Transport::Ws] {
        let (r, forced) = through_a_hang_up(transport, true).await;
        let ctx = format!("{transport}:\n{}", r.summary());
        assert!(r.expected > 0, "{ctx}");
        assert_eq!((r.lost, r.duplicates, r.clients_lost), (0, 0, 0), "{ctx}");
        assert!(r.reconnects >= CLIENTS as u64, "{ctx}");
        assert_eq!(forced, 0, "{transport}");
    }
}

/// Subscriptions in the readiness loop whose connections end mid-run go back to a task, which
/// reconnects and resumes: nothing is lost, and the loop and the worker do not hand them back
/// and forth (as they once did, forever, on a connection that had ended).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_hung_up_in_the_readiness_loop_reconnect_and_lose_nothing() {
    for transport in [Transport::Sse, Transport::Stream, Transport::Poll] {
        let (r, forced) = through_a_hang_up(transport, false).await;
        let ctx = format!("{transport}:\n{}", r.summary());
        assert_eq!(r.delivered, r.expected, "{ctx}");
        assert!(r.expected > 0, "{ctx}");
        assert_eq!((r.lost, r.duplicates, r.clients_lost), (0, 0, 0), "{ctx}");
        assert!(r.reconnects >= CLIENTS as u64, "{ctx}");
        assert_eq!(forced, 0, "{transport}");
    }
}

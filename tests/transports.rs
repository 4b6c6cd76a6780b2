//! Every transport delivers exactly what was published, in order, to its reference client, and
//! resumes after an id.

mod common;

use std::time::Duration;

use common::*;
use pushbench_loadgen::{Client, ClientConfig, Counters, Item, Publisher, Target};
use pushbench_servers::{HubConfig, ServerConfig, Transport};

const N: usize = 60;

fn config(transport: Transport, after: Option<u64>) -> ClientConfig {
    ClientConfig {
        after,
        poll_interval: Duration::from_millis(20),
        reconnect: false,
        ..ClientConfig::new(transport, "e2e")
    }
}

async fn next(client: &mut Client) -> Item {
    tokio::time::timeout(STEP, client.next())
        .await
        .expect("item in time")
        .expect("client error")
}

/// Reads events until `last` arrives and returns (id, payload) pairs, gaps as (0, "gap A-B").
async fn collect_until(client: &mut Client, last: u64) -> Vec<(u64, String)> {
    let mut got = Vec::new();
    loop {
        match next(client).await {
            Item::Event(d) => {
                got.push((d.id, String::from_utf8(d.payload.to_vec()).unwrap()));
                if d.id >= last {
                    return got;
                }
            }
            Item::Gap { from, to } => got.push((0, format!("gap {from}-{to}"))),
            Item::Reset { .. } => got.push((0, "reset".into())),
        }
    }
}

async fn publish_all(target: &Target, range: std::ops::RangeInclusive<usize>) {
    let mut publisher = Publisher::connect(target, Counters::new_shared())
        .await
        .unwrap();
    for i in range {
        let id = publisher
            .publish("e2e", payload(i).as_bytes())
            .await
            .unwrap();
        assert_eq!(id, i as u64);
    }
}

#[tokio::test]
async fn every_transport_delivers_exactly_what_was_published() {
    for transport in Transport::ALL {
        let mut server = TestServer::start(&[transport]).await;
        let target = Target::from_addr(server.addr);
        let counters = Counters::new_shared();
        // Subscribed before the first publish, "from now": must see every event.
        let mut client = Client::connect(&target, config(transport, None), counters.clone())
            .await
            .unwrap();
        publish_all(&target, 1..=N).await;
        let got = collect_until(&mut client, N as u64).await;
        let want: Vec<_> = (1..=N).map(|i| (i as u64, payload(i))).collect();
        assert_eq!(got, want, "{transport}");
        let c = counters.snapshot();
        assert!(c.bytes_down > 0 && c.connects >= 1, "{transport}: {c:?}");
        drop(client);
        assert_eq!(server.shutdown().await.forced, 0, "{transport}");
    }
}

#[tokio::test]
async fn every_transport_resumes_after_an_id() {
    for transport in Transport::ALL {
        let mut server = TestServer::start(&[transport]).await;
        let target = Target::from_addr(server.addr);
        publish_all(&target, 1..=N).await;
        let mut client =
            Client::connect(&target, config(transport, Some(20)), Counters::new_shared())
                .await
                .unwrap();
        let got = collect_until(&mut client, N as u64).await;
        let want: Vec<_> = (21..=N).map(|i| (i as u64, payload(i))).collect();
        assert_eq!(got, want, "{transport}");
        // And it keeps going with live events after the backlog.
        publish_all(&target, N + 1..=N + 3).await;
        let live = collect_until(&mut client, N as u64 + 3).await;
        assert_eq!(live.len(), 3, "{transport}");
        drop(client);
        server.shutdown().await;
    }
}

/// A restart between publishes, as issue 14 found it: a client at id 5 of the last life must be
/// told of the reset and get every event of the new life, whether the new life has published
/// fewer events than the client had (3: its cursor is ahead) or more (10: its bare id would
/// have skipped 1 to 5 silently).
#[tokio::test]
async fn every_transport_resumes_across_a_restart_with_a_reset() {
    for transport in Transport::ALL {
        for published_after in [3, 10] {
            let mut server = TestServer::start(&[transport]).await;
            let target = Target::from_addr(server.addr);
            let mut client = Client::connect(
                &target,
                ClientConfig {
                    reconnect: true,
                    reconnect_delay: Duration::from_millis(50),
                    ..config(transport, Some(0))
                },
                Counters::new_shared(),
            )
            .await
            .unwrap();
            publish_all(&target, 1..=5).await;
            let got = collect_until(&mut client, 5).await;
            assert_eq!(got.len(), 5, "{transport}: {got:?}");
            server.restart(&[transport]).await;
            publish_all(&target, 1..=published_after).await;
            let got = collect_until(&mut client, published_after as u64).await;
            let mut want = vec![(0, "reset".to_owned())];
            want.extend((1..=published_after).map(|i| (i as u64, payload(i))));
            assert_eq!(got, want, "{transport}, {published_after} published after");
            drop(client);
            server.shutdown().await;
        }
    }
}

#[tokio::test]
async fn every_transport_signals_a_gap_past_the_replay_buffer() {
    let hub = HubConfig {
        replay_events: 8,
        ..HubConfig::default()
    };
    for transport in Transport::ALL {
        let mut server =
            TestServer::start_with(&[transport], hub.clone(), ServerConfig::default()).await;
        let target = Target::from_addr(server.addr);
        publish_all(&target, 1..=N).await;
        let mut client =
            Client::connect(&target, config(transport, Some(0)), Counters::new_shared())
                .await
                .unwrap();
        let got = collect_until(&mut client, N as u64).await;
        let first_kept = N as u64 - 7;
        let mut want = vec![(0, format!("gap 1-{}", first_kept - 1))];
        want.extend((first_kept..=N as u64).map(|i| (i, payload(i as usize))));
        assert_eq!(got, want, "{transport}");
        let stats = get(server.addr, "/stats").await.json();
        assert_eq!(stats["replay_misses"], first_kept - 1, "{transport}");
        drop(client);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn sse_resumes_from_last_event_id_header_over_after() {
    let mut server = TestServer::start(&[Transport::Sse]).await;
    let a = server.addr;
    for i in 1..=5 {
        publish(a, "t", &format!("e{i}")).await;
    }
    let e = server.hub.epoch();
    // The header wins over a stale `after`, as for a reconnecting EventSource, whether it names
    // the server's life (what a browser sends back) or is a bare id.
    for header in [format!("{e}-3"), "3".to_owned()] {
        let extra = format!("Last-Event-ID: {header}\r\n");
        let (mut s, head) = open_stream(a, "/sse?topic=t&after=1", &extra).await;
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        let text = read_until(&mut s, "data: e5").await;
        // The retry hint, then the hello: the cursor it starts after, in this life.
        let start = format!("retry: 1000\n\nid: {e}-3\n\n");
        assert!(text.starts_with(&start), "{text:?}");
        assert!(!text.contains("data: e3"), "{text:?}");
        assert!(
            text.contains(&format!("id: {e}-4\ndata: e4\n\n")),
            "{text:?}"
        );
    }
    // Without the header, `after=` applies.
    let (mut s, _) = open_stream(a, "/sse?topic=t&after=3", "").await;
    let text = read_until(&mut s, "data: e5").await;
    assert!(
        text.contains(&format!("id: {e}-4\n")) && !text.contains("data: e3"),
        "{text:?}"
    );
    server.shutdown().await;
}

async fn read_until(s: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(needle) {
        let n = tokio::time::timeout(STEP, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    // Strip chunked framing: keep only the lines that are not chunk sizes.
    String::from_utf8_lossy(&got)
        .split("\r\n")
        .filter(|part| !part.is_empty() && usize::from_str_radix(part, 16).is_err())
        .collect()
}

#[tokio::test]
async fn websocket_upstream_publishes_to_the_topic() {
    let mut server = TestServer::start(&[Transport::Ws]).await;
    let target = Target::from_addr(server.addr);
    let mut sender = Client::connect(&target, config(Transport::Ws, None), Counters::new_shared())
        .await
        .unwrap();
    let mut other = Client::connect(&target, config(Transport::Ws, None), Counters::new_shared())
        .await
        .unwrap();
    sender.send_upstream("from the device").await.unwrap();
    for client in [&mut sender, &mut other] {
        match next(client).await {
            Item::Event(d) => {
                assert_eq!(d.id, 1);
                assert_eq!(&d.payload[..], b"from the device");
            }
            other => panic!("{other:?}"),
        }
    }
    // A bad upstream frame is refused in band; the connection stays up.
    sender.send_upstream("").await.unwrap();
    let err = tokio::time::timeout(STEP, sender.next())
        .await
        .unwrap()
        .unwrap_err();
    assert!(
        err.server_message().unwrap_or_default().contains("empty"),
        "{err}"
    );
    sender.send_upstream("second").await.unwrap();
    assert!(matches!(next(&mut sender).await, Item::Event(d) if d.id == 2));
    let stats = get(server.addr, "/stats").await.json();
    assert_eq!(stats["events_published"], 2);
    drop((sender, other));
    server.shutdown().await;
}

#[tokio::test]
async fn many_subscribers_share_one_encoding() {
    // 200 SSE subscribers on one server each get every event: fan-out, not round-robin.
    let mut server = TestServer::start(&[Transport::Sse]).await;
    let target = Target::from_addr(server.addr);
    let counters = Counters::new_shared();
    let mut clients = Vec::new();
    for _ in 0..200 {
        clients.push(
            Client::connect(&target, config(Transport::Sse, None), counters.clone())
                .await
                .unwrap(),
        );
    }
    publish_all(&target, 1..=5).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| tokio::spawn(async move { collect_until(&mut c, 5).await.len() }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 5);
    }
    let stats = get(server.addr, "/stats").await.json();
    assert_eq!(stats["deliveries"], 1000);
    server.shutdown().await;
}

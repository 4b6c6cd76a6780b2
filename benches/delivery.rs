//! Delivery: end to end over loopback, from just before a publish to the last of n subscribers
//! reading the event, for every transport with 1 and 100 reference clients.
//!
//! Names: `delivery/<transport>/clients=<n>/payload=64`, except short polling, which is
//! `delivery/poll(10ms)/clients=<n>/payload=64`: its clients poll every **10 ms** (not the 1 s
//! default), so its latency is mostly the wait for the next poll, about half the interval on
//! average, and says more about the interval than about the server. Before each of its
//! publishes the bench pauses a random part of the interval (not timed), so publishes land at
//! random points of the poll cycle rather than always just after a poll. Long polling uses the
//! client defaults (30 s hold, re-issued as soon as an answer arrives).
//!
//! Each server runs on its own thread with a current-thread tokio runtime
//! (`pushbench_servers::serve` on `127.0.0.1:0`). The clients and the `Publisher` share the bench
//! thread's current-thread runtime, one task per client, so the machine's cores split as in
//! `pushbench load`: one for the server, one for the load. One iteration publishes one 64 B event
//! and waits until every client has it; the time counted runs from just before the publish to
//! the latest `Delivery::received` among the clients. With 100 clients on one thread, that
//! includes the clients reading their sockets one after another, as a real load generator would.

mod common;

use std::time::{Duration, Instant};

use common::{Server, STEP};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use pushbench_loadgen::{Client, ClientConfig, Counters, Item, Publisher, Target};
use pushbench_servers::Transport;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CLIENTS: [usize; 2] = [1, 100];
const PAYLOAD: usize = 64;
const TOPIC: &str = "bench";
/// Short polling's interval in this bench (the client default is 1 s).
const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A payload with some characters JSON must escape, as real text has.
fn payload(len: usize) -> String {
    let unit = "lorem \"ipsum\" dolor\\sit ";
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

/// What a client task reports: one event's id and receive time, or why it stopped.
type Report = Result<(u64, Instant), String>;

/// n connected clients, each read by its own task on the bench runtime.
struct Clients {
    tasks: Vec<JoinHandle<()>>,
    reports: mpsc::UnboundedReceiver<Report>,
}

impl Clients {
    async fn connect(target: &Target, transport: Transport, n: usize) -> Clients {
        let (tx, reports) = mpsc::unbounded_channel();
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let mut config = ClientConfig::new(transport, TOPIC);
            config.after = None;
            if transport == Transport::Poll {
                config.poll_interval = POLL_INTERVAL;
            }
            let mut client = tokio::time::timeout(
                STEP,
                Client::connect(target, config, Counters::new_shared()),
            )
            .await
            .expect("client connected in time")
            .expect("client connected");
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                // Ends when the bench drops the receiver or aborts the task.
                loop {
                    let report = match client.next().await {
                        Ok(Item::Event(d)) => Ok((d.id, d.received)),
                        Ok(Item::Gap { from, to }) => Err(format!("gap {from}-{to}")),
                        Ok(Item::Reset { epoch }) => Err(format!("reset to epoch {epoch}")),
                        Err(e) => Err(format!("client error: {e}")),
                    };
                    let failed = report.is_err();
                    if tx.send(report).is_err() || failed {
                        return;
                    }
                }
            }));
        }
        Clients { tasks, reports }
    }

    /// Waits until all n clients have event `id`, and returns the latest receive time.
    async fn wait_for(&mut self, id: u64, since: Instant) -> Instant {
        let mut last = since;
        for _ in 0..self.tasks.len() {
            let report = tokio::time::timeout(STEP, self.reports.recv())
                .await
                .unwrap_or_else(|_| panic!("event {id} delivered in time"))
                .expect("client tasks running");
            match report {
                Ok((got, received)) if got == id => last = last.max(received),
                Ok((got, _)) => panic!("expected event {id}, a client got {got}"),
                Err(e) => panic!("waiting for event {id}: {e}"),
            }
        }
        last
    }

    async fn close(self) {
        for task in &self.tasks {
            task.abort();
        }
        for task in self.tasks {
            let _ = tokio::time::timeout(STEP, task).await;
        }
    }
}

/// xorshift64: a reproducible pause length without a dependency.
struct Jitter(u64);

impl Jitter {
    /// The next value in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn label(transport: Transport) -> String {
    match transport {
        Transport::Poll => format!("poll({}ms)", POLL_INTERVAL.as_millis()),
        other => other.name().to_owned(),
    }
}

fn delivery(c: &mut Criterion) {
    let rt: Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("bench runtime");
    let text = payload(PAYLOAD);
    let mut jitter = Jitter(0x9E37_79B9_7F4A_7C15);
    let mut g = c.benchmark_group("delivery");
    // Ten benchmarks, short polling's at about 10 ms an iteration: small enough that the whole
    // run stays around a minute and a half.
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    for transport in Transport::ALL {
        for n in CLIENTS {
            let server = Server::start(transport);
            let target = Target::from_addr(server.addr);
            let (mut publisher, mut clients) = rt.block_on(async {
                let publisher =
                    tokio::time::timeout(STEP, Publisher::connect(&target, Counters::new_shared()))
                        .await
                        .expect("publisher connected in time")
                        .expect("publisher connected");
                (publisher, Clients::connect(&target, transport, n).await)
            });
            let bench_id =
                BenchmarkId::new(label(transport), format!("clients={n}/payload={PAYLOAD}"));
            g.bench_function(bench_id, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            if transport == Transport::Poll {
                                // Not timed: lands the publish at a random point of the poll
                                // cycle. Back to back, it would always follow a poll at once
                                // and wait a whole interval.
                                let pause = POLL_INTERVAL.mul_f64(jitter.next_unit());
                                tokio::time::sleep(pause).await;
                            }
                            let start = Instant::now();
                            let id = tokio::time::timeout(
                                STEP,
                                publisher.publish(TOPIC, text.as_bytes()),
                            )
                            .await
                            .expect("publish answered in time")
                            .expect("publish");
                            total += clients.wait_for(id, start).await - start;
                        }
                        total
                    })
                })
            });
            rt.block_on(clients.close());
            drop(publisher);
            let report = server.shutdown();
            assert_eq!(report.forced, 0, "{transport}: connections cut at shutdown");
        }
    }
    g.finish();
}

criterion_group!(benches, delivery);
criterion_main!(benches);

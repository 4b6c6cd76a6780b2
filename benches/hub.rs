//! Hub fan-out: what one publish costs before any socket write, with N subscribers on its topic.
//!
//! Names: `hub/publish/subscribers=<n>` for 1, 100 and 10,000 subscribers. One iteration is one
//! `Hub::publish` of a 64 B payload plus every subscriber taking it with `Subscription::next`,
//! all in one process on a current-thread tokio runtime (the subscriptions are ready at once, so
//! nothing waits). Throughput is in deliveries (one per subscriber), so criterion prints
//! deliveries per second.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushbench_servers::hub::{Item, Subscription};
use pushbench_servers::{Hub, HubConfig};

const SUBSCRIBERS: [usize; 3] = [1, 100, 10_000];
const PAYLOAD: usize = 64;
const TOPIC: &str = "bench";

/// Bounds one `iter_custom` call: the subscriptions are always ready, so a call that takes this
/// long is a bug, and fails rather than hangs.
const CALL_LIMIT: Duration = Duration::from_secs(120);

/// A payload with some characters JSON must escape, as real text has.
fn payload(len: usize) -> String {
    let unit = "lorem \"ipsum\" dolor\\sit ";
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
    let text = payload(PAYLOAD);
    let mut g = c.benchmark_group("hub/publish");
    for n in SUBSCRIBERS {
        let hub = Hub::new(HubConfig::default());
        let mut subs: Vec<Subscription> = (0..n)
            .map(|_| {
                let mut sub = hub.subscribe(TOPIC, None).expect("subscribe");
                // Every subscription's first item is its hello (the server's epoch).
                assert!(matches!(sub.try_next(), Ok(Some(Item::Hello(_)))));
                sub
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(
            BenchmarkId::from_parameter(format!("subscribers={n}")),
            |b| {
                b.iter_custom(|iters| {
                    let run = async {
                        let start = Instant::now();
                        for _ in 0..iters {
                            let id = hub.publish(TOPIC, text.as_bytes()).expect("publish");
                            for sub in subs.iter_mut() {
                                match sub.next().await {
                                    Ok(Item::Event(event)) => {
                                        black_box(&event);
                                    }
                                    other => panic!("event {id}: got {other:?}"),
                                }
                            }
                        }
                        start.elapsed()
                    };
                    // The timer must be created inside the runtime.
                    rt.block_on(async { tokio::time::timeout(CALL_LIMIT, run).await })
                        .expect("subscribers took the event in time")
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);

//! Recording: what the load generator spends on each delivery, so its own cost is known next to
//! the servers'. `recording/record` is the accounting alone (payload stamp, window, duplicate and
//! order check, latency into the HDR histogram, counters); `recording/parse_and_record/<t>` adds
//! parsing the transport's frame as the reference client does.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushbench_loadgen::envelope::{parse_batch, parse_envelope, Envelope};
use pushbench_loadgen::load::payload::{self, Stamp};
use pushbench_loadgen::load::recorder::{Outcome, Recorder, Track};
use pushbench_loadgen::load::schedule::Clock;
use pushbench_loadgen::SseParser;
use pushbench_servers::event::Event;
use pushbench_servers::hub::Batch;
use pushbench_servers::poll;
use pushbench_servers::protocol::{Cursor, Epoch};

/// Distinct events per round: every recorded delivery is a first delivery, as in a real run.
const ROUND: u64 = 4096;
const PAYLOAD: usize = 64;

/// The events of one round, encoded as the servers send them.
struct Fixture {
    clock: Clock,
    events: Vec<Event>,
}

impl Fixture {
    fn new() -> Fixture {
        let clock = Clock::now();
        let due = clock.unix_ns(Instant::now());
        let mut text = String::new();
        let events = (0..ROUND)
            .map(|seq| {
                payload::encode(
                    Stamp {
                        seq,
                        due_unix_ns: due,
                        sent_after_due_ns: 0,
                    },
                    PAYLOAD,
                    &mut text,
                );
                Event::encode(Epoch::from_bits(1), seq + 1, &text)
            })
            .collect();
        Fixture { clock, events }
    }
}

/// Runs `step(i)` for i in 0.., resetting the per-client accounting every round.
fn rounds(
    rec: &mut Recorder,
    track: &mut Track,
    i: &mut u64,
    mut step: impl FnMut(&mut Recorder, &mut Track, usize) -> Outcome,
) {
    if i.is_multiple_of(ROUND) {
        *track = Track::new(ROUND);
    }
    let outcome = step(rec, track, (*i % ROUND) as usize);
    debug_assert_eq!(outcome, Outcome::First);
    *i += 1;
}

fn record(c: &mut Criterion) {
    let f = Fixture::new();
    let mut g = c.benchmark_group("recording");
    g.throughput(Throughput::Elements(1));
    let received = Instant::now();
    let window = (0, ROUND);

    g.bench_function(
        BenchmarkId::new("record", format!("payload={PAYLOAD}")),
        |b| {
            let payloads: Vec<Bytes> = f
                .events
                .iter()
                .map(|e| match parse_envelope(&e.json()) {
                    Ok(Envelope::Event(ev)) => ev.payload,
                    _ => unreachable!("our own encoding parses"),
                })
                .collect();
            let (mut rec, mut track, mut i) = (Recorder::default(), Track::new(ROUND), 0);
            b.iter(|| {
                rounds(&mut rec, &mut track, &mut i, |rec, track, k| {
                    rec.delivery(
                        track,
                        window,
                        &f.clock,
                        k as u64 + 1,
                        &payloads[k],
                        received,
                    )
                })
            })
        },
    );

    // NDJSON lines and WebSocket text frames carry the same object.
    for transport in ["stream", "ws"] {
        let lines: Vec<Bytes> = f.events.iter().map(|e| e.json()).collect();
        let id = BenchmarkId::new(
            format!("parse_and_record/{transport}"),
            format!("payload={PAYLOAD}"),
        );
        g.bench_function(id, |b| {
            let (mut rec, mut track, mut i) = (Recorder::default(), Track::new(ROUND), 0);
            b.iter(|| {
                rounds(&mut rec, &mut track, &mut i, |rec, track, k| {
                    let Ok(Envelope::Event(ev)) = parse_envelope(black_box(&lines[k])) else {
                        unreachable!("our own encoding parses")
                    };
                    rec.delivery(track, window, &f.clock, ev.id, &ev.payload, received)
                })
            })
        });
    }

    let sse: Vec<Bytes> = f.events.iter().map(|e| e.sse().clone()).collect();
    g.bench_function(
        BenchmarkId::new("parse_and_record/sse", format!("payload={PAYLOAD}")),
        |b| {
            let (mut rec, mut track, mut i) = (Recorder::default(), Track::new(ROUND), 0);
            let mut parser = SseParser::new();
            b.iter(|| {
                rounds(&mut rec, &mut track, &mut i, |rec, track, k| {
                    parser.feed(black_box(&sse[k]));
                    let ev = parser.next_event().expect("one event per frame");
                    let id = std::str::from_utf8(&ev.last_event_id)
                        .ok()
                        .and_then(|s| s.parse::<Cursor>().ok())
                        .expect("an EPOCH-ID cursor")
                        .id;
                    rec.delivery(track, window, &f.clock, id, &ev.data, received)
                })
            })
        },
    );

    // A poll answer holding one event (the common case at low rates).
    let batches: Vec<Bytes> = f
        .events
        .iter()
        .map(|e| {
            poll::encode_batch(&Batch {
                events: vec![std::sync::Arc::new(e.clone())],
                gap: None,
                last_id: e.id(),
                ..Batch::empty(Epoch::from_bits(1), false)
            })
        })
        .collect();
    g.bench_function(
        BenchmarkId::new("parse_and_record/poll", format!("payload={PAYLOAD}")),
        |b| {
            let (mut rec, mut track, mut i) = (Recorder::default(), Track::new(ROUND), 0);
            b.iter(|| {
                rounds(&mut rec, &mut track, &mut i, |rec, track, k| {
                    let batch = parse_batch(black_box(&batches[k])).expect("valid batch");
                    let ev = &batch.events[0];
                    rec.delivery(track, window, &f.clock, ev.id, &ev.payload, received)
                })
            })
        },
    );
    g.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);

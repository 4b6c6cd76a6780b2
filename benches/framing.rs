//! Framing: what one event costs to encode for each transport on the server, and to parse back
//! in the reference client, at 64 B, 1 KiB and 16 KiB payloads (throughput in payload bytes).
//!
//! Names: `framing/encode/<what>/payload=<bytes>` and `framing/parse/<transport>/payload=<bytes>`.
//! `encode/event` is the once-per-publish cost (every format at once); the per-transport encode
//! rows are what each subscriber or response adds on top.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pushbench_loadgen::envelope::{parse_batch, parse_envelope};
use pushbench_loadgen::SseParser;
use pushbench_servers::event::Event;
use pushbench_servers::hub::{Batch, Item};
use pushbench_servers::protocol::{Cursor, Epoch};
use pushbench_servers::{poll, sse, stream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;

const SIZES: [usize; 3] = [64, 1024, 16 * 1024];

/// A payload with some characters JSON must escape, as real text has.
fn payload(len: usize) -> String {
    let unit = "lorem \"ipsum\" dolor\\sit ";
    unit.repeat(len / unit.len() + 1)[..len].to_owned()
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing/encode");
    for size in SIZES {
        let text = payload(size);
        let event = Arc::new(Event::encode(Epoch::from_bits(1), 42, &text));
        let item = Item::Event(event.clone());
        let batch = Batch {
            events: vec![event.clone()],
            gap: None,
            last_id: 42,
            ..Batch::empty(Epoch::from_bits(1), false)
        };
        g.throughput(Throughput::Bytes(size as u64));
        let id = |what: &str| BenchmarkId::new(what, format!("payload={size}"));
        g.bench_function(id("event"), |b| {
            b.iter(|| Event::encode(Epoch::from_bits(1), black_box(42), black_box(&text)))
        });
        g.bench_function(id("poll"), |b| {
            b.iter(|| poll::encode_batch(black_box(&batch)))
        });
        g.bench_function(id("stream"), |b| {
            b.iter(|| stream::encode_item(black_box(&item)))
        });
        g.bench_function(id("sse"), |b| b.iter(|| sse::encode_item(black_box(&item))));
        g.bench_function(id("ws"), |b| {
            // What tungstenite does per subscriber: frame header plus a copy into its buffer.
            let mut out = Vec::with_capacity(size + 64);
            b.iter(|| {
                out.clear();
                let bytes: Bytes = event.ws_text().clone().into();
                Frame::message(bytes, OpCode::Data(Data::Text), true)
                    .format(&mut out)
                    .expect("formatting into a Vec cannot fail");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("framing/parse");
    for size in SIZES {
        let event = Arc::new(Event::encode(Epoch::from_bits(1), 42, &payload(size)));
        let batch = poll::encode_batch(&Batch {
            events: vec![event.clone()],
            gap: None,
            last_id: 42,
            ..Batch::empty(Epoch::from_bits(1), false)
        });
        let line = event.json();
        let sse_bytes = event.sse().clone();
        g.throughput(Throughput::Bytes(size as u64));
        let id = |what: &str| BenchmarkId::new(what, format!("payload={size}"));
        g.bench_function(id("poll"), |b| {
            b.iter(|| parse_batch(black_box(&batch)).expect("valid batch"))
        });
        // NDJSON lines and WebSocket text frames carry the same object.
        g.bench_function(id("stream"), |b| {
            b.iter(|| parse_envelope(black_box(&line)).expect("valid line"))
        });
        g.bench_function(id("ws"), |b| {
            b.iter(|| parse_envelope(black_box(&line)).expect("valid frame"))
        });
        g.bench_function(id("sse"), |b| {
            let mut parser = SseParser::new();
            b.iter(|| {
                parser.feed(black_box(&sse_bytes));
                let ev = parser.next_event().expect("one event");
                let id = std::str::from_utf8(&ev.last_event_id)
                    .expect("ascii id")
                    .parse::<Cursor>()
                    .expect("an EPOCH-ID cursor")
                    .id;
                black_box((id, ev.data))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, encode, parse);
criterion_main!(benches);

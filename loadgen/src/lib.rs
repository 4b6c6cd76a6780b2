//! Reference clients for every pushbench transport, built to run by the thousand.
//!
//! A [`Client`] subscribes to a topic with one technique (short polling, long polling, HTTP
//! streaming, Server-Sent Events or WebSocket) and yields exactly what the server sent, as
//! [`Item`]s: events with their receive time, and gap signals. A [`Publisher`] posts events.
//! Every byte either moves goes through a [`CountingStream`], so [`Counters`] measure what the
//! transports cost on the wire.
//!
//! The clients are lean on purpose: no JSON DOM, no copy of a payload that needs no
//! unescaping (it stays a slice of the received buffer), one task per client (hyper's
//! connection is driven inline rather than spawned).
//!
//! # Layout
//!
//! - `lib.rs`: this overview and the re-exports.
//! - `target.rs`: [`Target`], the server address parsed from `http://HOST:PORT` and resolved
//!   once, plus the `Host` header to send.
//! - `counters.rs`: [`Counters`], relaxed atomic totals per task, and [`CountingStream`], the
//!   socket wrapper that feeds the byte counts.
//! - `error.rs`: [`ClientError`], the one error type.
//! - `envelope.rs`: zero-DOM parsing of event, gap and error objects, poll batches and publish
//!   answers, borrowing payloads from the received buffer.
//! - `sse_parser.rs`: [`SseParser`], an incremental WHATWG `text/event-stream` parser.
//! - `http.rs`: a keep-alive HTTP/1.1 connection driven by its owner, and [`get`] for one-off
//!   requests.
//! - `profile.rs`: [`Profile`], which server a target is (pushbench, Nchan, Pushpin, the
//!   FCM-style gateway), and its `Dialect`: what the clients and the publisher ask of it
//!   (numbering, resume, where and how to publish) instead of which server it is. Its docs say
//!   how to add a peer.
//! - `gateway/mod.rs`: the gateway's app-server calls: device registration, topic
//!   subscription, sends; `gateway/options.rs`: what a run against it sends.
//! - `publisher.rs`: [`Publisher`], `POST /publish` on a keep-alive connection (Nchan:
//!   `POST /pub`; the gateway: its send API, through hyper).
//! - `client/mod.rs`: [`Client`], [`ClientConfig`], [`Item`], [`Delivery`], and the reconnect
//!   policy every transport shares; `client/backoff.rs`: [`client::Backoff`], how long to wait
//!   before each reconnect attempt (a fixed delay, or exponential backoff with full jitter).
//! - `client/poll.rs`: short polling on a fixed-rate schedule (when to poll).
//! - `client/longpoll.rs`: long polling, re-issued as soon as an answer arrives.
//! - `client/poller.rs`: how both poll: one exchange at a time on a keep-alive connection, kept
//!   as state so a task or the readiness loop can drive it, and the batch handling.
//! - `client/answer.rs`: requests written from a reused buffer, and whole answers parsed in place
//!   (`httparse`) off a keep-alive connection, with no HTTP client library.
//! - `client/post.rs`: the publisher's `POST`s, written by hand on such a connection, so a
//!   publish reaches its socket within a few µs of its due time.
//! - `client/stream.rs`: HTTP streaming, NDJSON lines split zero-copy from a `BytesMut`.
//! - `client/sse.rs`: Server-Sent Events, reconnecting like `EventSource` (`retry:`,
//!   `Last-Event-ID`).
//! - `client/ws.rs`: WebSocket, including upstream publishing.
//! - `client/device.rs`: a device of the FCM-style gateway: register, subscribe, one
//!   WebSocket, acknowledgements, going offline and back.
//! - `client/nchan.rs`: Nchan's start and resume ids (pinning "now", `Last-Modified`/`Etag`).
//! - `client/chunked.rs`: a chunked response read off the socket, one Nchan message per chunk,
//!   lent from the connection's buffer without a copy.
//! - `client/raw.rs`, `client/readbuf.rs`: one request and its response head on a raw socket,
//!   and the reused buffer its bytes are read into.
//! - `client/arrival.rs`: when bytes reached a socket, as the kernel stamped them
//!   (`SO_TIMESTAMPNS`): every delivery is timed by it, not by when it was read.
//! - `client/wsconn.rs`: a lean client WebSocket (RFC 6455) on that socket.
//! - `client/fuzz.rs` (tests only): fuzz targets of every parser of what servers send
//!   (docs/FUZZING.md).
//! - `client/subscription.rs`, `client/hot.rs`: what the load generator asks of a subscriber,
//!   and [`HotClient`], a subscription driven without I/O of its own (`buffered`: the
//!   client's `next` minus the reading; `wants_write`, `write_to`, `wake_at`: a poll's
//!   request when it is due).
//! - `load/`: the load generator (`pushbench load`): `config.rs` (what a run does),
//!   `schedule.rs` (when to publish: open loop), `publish.rs` (how: a pool of publish
//!   connections), `payload.rs` (the stamp each payload carries), `worker.rs` (subscriber
//!   threads: connecting, and a task per subscriber that is not in steady reading),
//!   `messages.rs` (a worker's plan, control messages and reports), `hot.rs`
//!   (the readiness loop: one `epoll` loop per worker driving every subscription of a push
//!   server in its steady state), `timers.rs` (its timers, for polls that come due),
//!   `account.rs` (what each item does to the
//!   counts, the same wherever it was read), `recorder.rs` (histograms and per-client loss
//!   accounting), `sampler.rs` (`/proc` CPU and memory), `env.rs` (machine and build),
//!   `report.rs` (the JSON schema, summary and interval log), `run.rs`, `handles.rs`,
//!   `collector.rs`, `assemble.rs` (orchestration, worker handles, the collector, the report),
//!   `saturation.rs` (whether the generator kept up: its CPU, its late reads, and for polling
//!   its late timers).

pub mod client;
pub mod counters;
pub mod envelope;
pub mod error;
pub mod gateway;
pub mod http;
pub mod load;
pub mod profile;
pub mod publisher;
pub mod sse_parser;
pub mod target;

pub use crate::http::get;
pub use client::{Client, ClientConfig, Delivery, Item};
pub use counters::{Counters, CountersSnapshot, CountingStream};
pub use error::ClientError;
pub use profile::Profile;
pub use publisher::Publisher;
pub use sse_parser::{EventId, SseEvent, SseParser};
pub use target::{Target, TargetError};

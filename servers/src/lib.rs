//! Minimal hyper 1.x servers, one per server-push technique, sharing one encode-once hub.
//!
//! Every server speaks the protocol in `docs/PROTOCOL.md`: `POST /publish`, one subscribe
//! endpoint (`/poll`, `/longpoll`, `/stream`, `/sse` or `/ws`), `GET /stats` and `GET /metrics`.
//! Servers take a bound listener and a shutdown future, so callers (and tests) choose the
//! address and decide when to stop.
//!
//! # Layout
//! - [`protocol`]: the wire protocol's names and rules (transports, paths, topic and payload
//!   validation), shared with the reference clients in `pushbench-loadgen`.
//! - [`epoch`]: a server's life ([`epoch::Epoch`]) and the `EPOCH-ID` cursor that survives a
//!   restart.
//! - [`event`]: one event encoded once per wire format, the gap signal and the hello.
//! - [`hub`]: topics, bounded replay buffers, fan-out, the slow-subscriber policy.
//! - [`config`]: every limit and its default.
//! - [`stats`]: counters for `/stats` (JSON) and `/metrics` (Prometheus).
//! - `http`: the response body type, JSON errors, query parsing.
//! - `app`: routing, and the shared endpoints (publish, stats, metrics).
//! - `body`: the endless response body of HTTP streaming and SSE.
//! - `framing`: how a long-lived subscription's transport puts items on the wire.
//! - `serve`: the accept loop: connection cap, HTTP settings, graceful shutdown.
//! - `head`: reads a connection's first request head before hyper, and hands hyper the bytes.
//! - `lean`: streaming, SSE and WebSocket subscriptions, and held long polls, served without
//!   hyper once their head is parsed; [`footprint`] says what each one's own state takes.
//! - `fanout`: one task per topic that writes each burst of events to every caught-up lean
//!   streaming or SSE subscriber itself, instead of waking one task per subscriber.
//! - `chunked`: chunked writes gathered into one `writev`, the rest kept for later.
//! - `write_timeout`: the socket wrapper that cuts a connection whose peer stops reading.
//! - `drop_switch`: cuts every open connection on demand (the demo's drop-all button, and
//!   [`ServerConfig::drop_all`], which `pushbench serve` fires on SIGUSR1).
//! - `fuzz` (tests only): fuzz targets of the parsers above (docs/FUZZING.md); the gateway's
//!   are in `gateway/fuzz.rs`.
//! - [`transport`]: one module per technique (`poll`, `longpoll`, `stream`, `sse`, `ws`), each
//!   with `run(listener, hub, shutdown)`.
//! - [`gateway`]: the FCM-style push gateway: the send API, devices, topics, groups,
//!   store-and-forward queues, and one WebSocket per device.
//! - [`demo`]: the live browser demo: every transport, a publisher on a timer, the embedded
//!   page, and its controls.

pub mod config;
pub mod demo;
pub mod epoch;
pub mod event;
pub mod gateway;
pub mod hub;
pub mod protocol;
pub mod stats;
pub mod transport;

mod app;
mod body;
mod chunked;
mod drop_switch;
mod fanout;
mod framing;
#[cfg(test)]
mod fuzz;
mod head;
mod http;
mod lean;
mod serve;
mod write_timeout;

pub use config::{HubConfig, ServerConfig, SlowPolicy};
pub use http::ApiError;
pub use hub::Hub;
pub use lean::footprint::{footprint, Footprint};
pub use protocol::Transport;
pub use serve::{serve, ShutdownReport};
pub use transport::{longpoll, poll, sse, stream, ws};

//! Minimal hyper 1.x servers, one per server-push technique, sharing one encode-once hub.
//!
//! Every server speaks the protocol in `docs/PROTOCOL.md`: `POST /publish`, one subscribe
//! endpoint (`/poll`, `/longpoll`, `/stream`, `/sse` or `/ws`), `GET /stats` and `GET /metrics`.
//! Servers take a bound listener and a shutdown future, so callers (and tests) choose the
//! address and decide when to stop.
//!
//! # Layout
//! - [`protocol`] and [`epoch`]: the `pushbench-protocol` crate re-exported: the wire
//!   protocol's names, rules and cursors, shared with the reference clients in
//!   `pushbench-loadgen` without their depending on this crate.
//! - [`event`]: one event encoded once per wire format, its WebSocket frame included.
//! - [`hub`]: topics, bounded replay buffers, fan-out, the slow-subscriber policy.
//! - [`config`]: every limit and its default.
//! - [`stats`]: counters for `/stats` (JSON) and `/metrics` (Prometheus).
//! - `http`: the response body type, JSON errors, query parsing, method checks.
//! - `state`: what every request and connection of one server shares (`App`, the connection's
//!   guard); every endpoint uses it, and it uses no endpoint.
//! - `router`: routing, and the shared endpoints (publish, stats, metrics).
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
//! - `transport`: one module per technique, its subscribe endpoint and its encoders.
//! - `entry`: each technique's complete server, public as [`poll`], [`longpoll`], [`stream`],
//!   [`sse`] and [`ws`], each with `run(listener, hub, shutdown)`. Dependencies point one way,
//!   down this list's reverse: `entry` starts `serve`, which routes (`router`) to the
//!   transports, the demo and the gateway, which all use `state`.
//! - [`gateway`]: the FCM-style push gateway: the send API, devices, topics, groups,
//!   store-and-forward queues, and one WebSocket per device.
//! - [`grip`]: a GRIP origin, so that Pushpin in front of it serves pushbench's protocol (the
//!   suite's second peer server).
//! - [`demo`]: the live browser demo: every transport, a publisher on a timer, the embedded
//!   page, and its controls.

pub mod config;
pub mod demo;
pub mod event;
pub mod gateway;
pub mod grip;
pub mod hub;
pub mod stats;

pub use pushbench_protocol as protocol;
pub use pushbench_protocol::epoch;

mod body;
mod chunked;
mod drop_switch;
mod entry;
mod fanout;
mod framing;
#[cfg(test)]
mod fuzz;
mod head;
mod http;
mod lean;
mod router;
mod serve;
mod state;
mod transport;
mod write_timeout;

pub use config::{HubConfig, ServerConfig, SlowPolicy};
pub use entry::{longpoll, poll, sse, stream, ws};
pub use http::ApiError;
pub use hub::Hub;
pub use lean::footprint::{footprint, Footprint};
pub use protocol::Transport;
pub use serve::{serve, ShutdownReport};

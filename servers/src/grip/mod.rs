//! A GRIP origin for Pushpin: pushbench's protocol, served through a proxy that holds the
//! connections.
//!
//! [Pushpin](https://pushpin.org) is a production reverse proxy that holds long-lived HTTP
//! streaming, SSE, long-poll and WebSocket connections for an origin, and fans out what the
//! origin publishes to it. The origin answers each subscribe request once, with GRIP
//! instructions (`Grip-Hold`, `Grip-Channel`), and publishes each event to Pushpin's HTTP
//! publish API, encoded once per format. This module is that origin, over the same hub as every
//! other pushbench server, so a client sees the same wire protocol (ids, hellos, batches)
//! whether it talks to `pushbench serve` or to Pushpin in front of `pushbench serve grip`:
//!
//! | request (through Pushpin) | the origin answers |
//! |---|---|
//! | `GET /stream` | the hello and any backlog, `Grip-Hold: stream`, channel `s:TOPIC` |
//! | `GET /sse` | the same as SSE, channel `e:TOPIC` |
//! | `GET /longpoll` | events at once if any; else `Grip-Hold: response`, channel `l:TOPIC` with `prev-id` |
//! | `GET /poll` | events at once (nothing is held) |
//! | `POST /ws` (WebSocket-over-HTTP) | `OPEN`, a subscribe to `w:TOPIC`, and the hello |
//! | `POST /publish` | stores the event, then publishes it to Pushpin, one item per channel |
//!
//! Each technique has its own channel because each has its own bytes on the wire. A long poll's
//! channel carries ids: a poll held after id N names `prev-id=N`, and each event names its id
//! and the one before, so Pushpin answers a held poll only with the event right after its
//! cursor, and asks the origin again for a poll held after an older id. One race is left: a
//! poll whose hold reaches Pushpin just as the next event passes can miss it (seen: 1 event
//! of 30,000 lost at 100 long pollers, in 5 runs of 3 s). A stream subscribes at the id its hello
//! names; an event published in the instant before Pushpin holds the stream is not recovered
//! (GRIP's `Grip-Link` recovery is not used), which the load generator counts as lost if it
//! happens.
//!
//! # Layout
//! - this file: [`GripConfig`], and starting the origin;
//! - `channel`: the channel of each topic and technique;
//! - `instruct`: the origin's answers to subscribe requests (the GRIP instructions);
//! - `wsevents`: the WebSocket-over-HTTP event format;
//! - `publish`: publishing each event to Pushpin, in order, on one keep-alive connection.

mod channel;
pub(crate) mod instruct;
pub(crate) mod publish;
mod wsevents;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::serve::{serve_app, ShutdownReport};
use crate::state::App;

use publish::GripPublisher;

/// Where the origin publishes.
#[derive(Debug, Clone)]
pub struct GripConfig {
    /// Pushpin's HTTP publish API (`push_in_http_addr:push_in_http_port`); the origin posts to
    /// `/publish/` there.
    pub publish: SocketAddr,
}

/// Serves the GRIP origin on `listener` until `shutdown` completes. Pushpin forwards clients'
/// requests here; nothing long-lived is held by the origin itself.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ServerConfig,
    grip: GripConfig,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let mut app = App::new(hub, config, &[], None);
    app.grip = Some(Arc::new(GripPublisher::new(grip.publish)));
    serve_app(listener, Arc::new(app), shutdown).await
}

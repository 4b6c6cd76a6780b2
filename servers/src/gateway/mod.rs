//! An FCM-style push gateway: the relay architecture of Firebase Cloud Messaging, with its
//! public HTTP v1 send API, so that a relay hop can be measured beside direct push.
//!
//! An app server sends `POST /v1/projects/{project}/messages:send`; the gateway validates it,
//! gives it an id, resolves its target (a registration token, a device group's notification
//! key, a topic, or a condition over topics) to devices, and puts the message, encoded once, in
//! each device's bounded store-and-forward queue. Each device holds one WebSocket that carries
//! its messages down and its acknowledgements and upstream messages up. docs/GATEWAY.md maps
//! every endpoint to FCM's and says what is not modelled.
//!
//! # Layout
//! - this file: [`serve`], the gateway as a server;
//! - `relay`: [`GatewayConfig`] and the shared state: sends, fan-out, and the TTL sweeper;
//! - `api`: the HTTP endpoints (send, devices, Instance ID topics, device groups, upstream);
//! - `session`: a device's WebSocket: delivery, acknowledgements, upstream;
//! - `direct`: who writes a connected device's messages: its session, or the send itself;
//! - `message`: the send request, its validation, and the frame devices receive;
//! - `condition`: the topic-condition language (`&&`, `||`, `!`, parentheses);
//! - `registry`: devices, topics, groups, and resolving a target to devices;
//! - `topic`: topic names as FCM accepts them;
//! - `token`: registration tokens and notification keys, made and recognised;
//! - `queue`: one device's store-and-forward queue (TTL, collapse keys, acks, bound);
//! - `quota`: the per-project send quota;
//! - `stats`: the gateway's counters;
//! - `error`: errors in FCM's JSON shape;
//! - `fuzz` (tests only): fuzz targets of the send request, conditions, TTLs and tokens.

pub(crate) mod api;
mod condition;
mod direct;
mod error;
#[cfg(test)]
mod fuzz;
mod message;
mod queue;
mod quota;
pub(crate) mod registry;
pub(crate) mod relay;
pub(crate) mod session;
mod stats;
mod token;
mod topic;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::serve::{serve_app, ShutdownReport};
use crate::state::App;

pub use condition::Condition;
pub use error::FcmError;
pub use message::{parse_ttl, Kind, Send, Target, MAX_MESSAGE_BYTES, MAX_TTL};
pub use relay::GatewayConfig;
pub use stats::{GatewaySnapshot, GatewayStats};

use relay::Gateway;

/// Serves the gateway on `listener` until `shutdown` completes. Device connections end with
/// a WebSocket close (1001), the upstream streams end, and whatever is left after
/// [`ServerConfig::shutdown_deadline`] is cut.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ServerConfig,
    gateway: GatewayConfig,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    if gateway.auth_token.is_none() {
        tracing::warn!("gateway started without --auth-token: any app server may send");
    }
    if gateway.registration_token.is_none() {
        tracing::warn!(
            "gateway started without --registration-token: anyone may register devices, up to \
             --max-devices"
        );
    }
    let gw = Arc::new(Gateway::new(gateway));
    let mut app = App::new(hub, config, &[], None);
    app.gateway = Some(gw.clone());
    let app = Arc::new(app);
    let sweeper = tokio::spawn(gw.sweep(app.shutdown.clone()));
    let report = serve_app(listener, app, shutdown).await;
    let _ = sweeper.await;
    report
}

//! The live browser demo: one server with every transport, a built-in publisher, and a page
//! whose panels are the browser's own clients of each technique, side by side.
//!
//! Besides the protocol's endpoints, the demo answers:
//! - `GET /`, `GET /demo/demo.js`, `GET /demo/style.css`: the page, embedded in the binary;
//! - `GET /demo/config`: the settings, the topic and its newest id, as JSON;
//! - `POST /demo/config`: a JSON object changing any of the settings ([`Settings`]);
//! - `POST /demo/drop-all`: cuts every open connection once its own answer is sent, so the page
//!   shows which clients resume by themselves and which must do it in code.
//!
//! The two controls (`/demo/config` and `/demo/drop-all`) answer only the demo page's own
//! origin (`same_origin` below), and their answers carry no CORS header: the protocol's endpoints
//! are open to every page on purpose, but any page open in the same browser could otherwise
//! press "drop all" or change the rate.
//!
//! # Layout
//! - this file: starting the demo;
//! - `routes`: the page and the controls;
//! - `state`: what its routes and its publisher share;
//! - `settings`: the knobs, their limits, and the control body;
//! - `publisher`: the timer that publishes to [`TOPIC`];
//! - `page/`: `index.html`, `style.css`, `demo.js`; no build step, nothing from a CDN.

mod publisher;
pub(crate) mod routes;
mod settings;
pub(crate) mod state;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::hub::Hub;
use crate::protocol::Transport;
use crate::serve::{serve_app, ShutdownReport};
use crate::state::App;

pub use settings::{
    Settings, SettingsError, MAX_PAYLOAD_BYTES, MAX_POLL_INTERVAL_MS, MAX_RATE, MIN_PAYLOAD_BYTES,
    MIN_POLL_INTERVAL_MS, TOPIC,
};

use state::Demo;

/// Serves the demo on `listener` until `shutdown` completes: the page, every transport, and a
/// publisher sending to [`TOPIC`], starting with `settings` (the page can change them).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    config: ServerConfig,
    settings: Settings,
    shutdown: impl Future<Output = ()>,
) -> ShutdownReport {
    let (tx, rx) = watch::channel(settings);
    let demo = Arc::new(Demo { settings: tx });
    let app = Arc::new(App::new(hub.clone(), config, &Transport::ALL, Some(demo)));
    let publisher = publisher::run(hub, TOPIC, rx, app.shutdown.clone());
    let (report, ()) = tokio::join!(serve_app(listener, app, shutdown), publisher);
    report
}

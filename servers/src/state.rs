//! What every request and connection of one server shares: the hub, the limits, shutdown, the
//! connection's guard; apart from the router (`router`), so that every endpoint can use it
//! without depending on the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{header, HeaderValue, Response};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::demo::state::Demo;
use crate::drop_switch::DropSwitch;
use crate::fanout::Fanout;
use crate::gateway::relay::Gateway;
use crate::grip::publish::GripPublisher;
use crate::http::Body;
use crate::hub::Hub;
use crate::protocol::Transport;
use crate::stats::GaugeGuard;

/// What every request of one server shares.
#[derive(Debug)]
pub(crate) struct App {
    pub hub: Hub,
    pub config: ServerConfig,
    /// The subscribe endpoints this server answers; others are 404.
    pub transports: Vec<Transport>,
    /// Cancelled when graceful shutdown starts: streams end, held polls answer, sockets close.
    pub shutdown: CancellationToken,
    /// Cancelled when the shutdown deadline passes: whatever is still open is cut.
    pub hard_stop: CancellationToken,
    /// Every connection task and every upgraded WebSocket, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cuts every open connection on demand (the demo's drop-all button).
    pub drops: DropSwitch,
    /// Writes events to caught-up lean subscribers from the publishing side.
    pub fanout: Fanout,
    /// The browser demo's page, controls and publisher, when this server is the demo.
    pub demo: Option<Arc<Demo>>,
    /// The push gateway's devices and queues, when this server is the gateway: then every
    /// path but `/stats` and `/metrics` is the gateway's.
    pub gateway: Option<Arc<Gateway>>,
    /// Pushpin's publish API, when this server is a GRIP origin behind Pushpin: then the
    /// subscribe endpoints answer with GRIP instructions and publishes go on to Pushpin.
    pub grip: Option<Arc<GripPublisher>>,
}

impl App {
    /// A server's shared state, before it accepts anything.
    pub fn new(
        hub: Hub,
        config: ServerConfig,
        transports: &[Transport],
        demo: Option<Arc<Demo>>,
    ) -> App {
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        App {
            fanout: Fanout::new(
                hub.clone(),
                config.keepalive,
                shutdown.clone(),
                tasks.clone(),
            ),
            hub,
            config,
            transports: transports.to_vec(),
            drops: DropSwitch::new(&shutdown),
            shutdown,
            hard_stop: CancellationToken::new(),
            tasks,
            demo,
            gateway: None,
            grip: None,
        }
    }

    /// The `transport` label of this server's metrics.
    pub fn label(&self) -> String {
        if self.gateway.is_some() {
            return "gateway".to_owned();
        }
        if self.grip.is_some() {
            return "grip".to_owned();
        }
        if self.transports.len() == Transport::ALL.len() {
            return "all".to_owned();
        }
        let names: Vec<_> = self.transports.iter().map(|t| t.name()).collect();
        names.join("+")
    }
}

/// What a connection holds while it is open: its place under the connection cap, and the
/// `connections_open` gauge. A WebSocket upgrade takes it over, because the HTTP connection
/// task ends at the upgrade while the socket lives on.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    pub _permit: tokio::sync::OwnedSemaphorePermit,
    pub _open: GaugeGuard,
}

/// What a connection task shares with its requests.
#[derive(Debug)]
pub(crate) struct Conn {
    /// The connection's guard, until a WebSocket upgrade takes it.
    guard: Mutex<Option<ConnGuard>>,
    /// Set by a request that asks for every connection to be cut once its own answer is sent
    /// (the demo's drop-all): cutting at once would cut that answer too.
    drop_all_after: AtomicBool,
}

impl Conn {
    pub fn new(guard: ConnGuard) -> Conn {
        Conn {
            guard: Mutex::new(Some(guard)),
            drop_all_after: AtomicBool::new(false),
        }
    }

    /// Whether a request on this connection asked for a drop-all after its answer.
    pub fn drop_all_requested(&self) -> bool {
        self.drop_all_after.load(Ordering::Relaxed)
    }
}

/// Shared between a connection task and its requests.
pub(crate) type ConnSlot = Arc<Conn>;

/// Takes the connection's guard (for a WebSocket upgrade).
pub(crate) fn take_guard(slot: &ConnSlot) -> Option<ConnGuard> {
    slot.guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
}

/// Cuts every connection of the server once `resp` has been sent on this connection: the
/// response closes the connection, and the connection task then pulls the switch.
pub(crate) fn drop_all_after(slot: &ConnSlot, resp: &mut Response<Body>) {
    slot.drop_all_after.store(true, Ordering::Relaxed);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

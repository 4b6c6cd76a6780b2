//! Cutting every open connection on demand while the server keeps accepting: what the demo's
//! "drop all connections" button does, to show how each technique's client recovers from a
//! lost connection.
//!
//! A connection takes the switch's current [`signal`](DropSwitch::signal) once, when it opens,
//! and waits on it in place of the shutdown token it waited on before; each signal is a child of
//! the shutdown token, so it fires on shutdown too, and the waiter tells the two apart with
//! `shutdown.is_cancelled()`. A drop cancels the current signal and puts a fresh one in its
//! place, so connections opened after the drop are not touched. Nothing is added per event or
//! per request: one mutex lock and one `Arc` clone per connection.

use std::sync::{Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// The generation of connections that a drop-all ends.
#[derive(Debug)]
pub(crate) struct DropSwitch {
    /// The server's graceful-shutdown token; every signal is its child.
    shutdown: CancellationToken,
    /// The signal connections opened now wait on.
    current: Mutex<CancellationToken>,
}

impl DropSwitch {
    /// A switch whose signals also fire when `shutdown` is cancelled.
    pub fn new(shutdown: &CancellationToken) -> DropSwitch {
        DropSwitch {
            shutdown: shutdown.clone(),
            current: Mutex::new(shutdown.child_token()),
        }
    }

    /// What a connection opened now waits on: it fires at the next drop-all or at shutdown.
    pub fn signal(&self) -> CancellationToken {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Ends every connection that took its signal before now.
    pub fn drop_all(&self) {
        let fresh = self.shutdown.child_token();
        let old = std::mem::replace(
            &mut *self.current.lock().unwrap_or_else(PoisonError::into_inner),
            fresh,
        );
        old.cancel();
    }
}

/// Why a connection's [`DropSwitch::signal`] fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Graceful shutdown: close cleanly (terminating chunk, Close 1001).
    Shutdown,
    /// A drop-all: cut the connection, as a network failure would.
    Dropped,
}

impl Ended {
    /// Tells a fired signal's cause from the server's shutdown token.
    pub fn cause(shutdown: &CancellationToken) -> Ended {
        if shutdown.is_cancelled() {
            Ended::Shutdown
        } else {
            Ended::Dropped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_ends_older_connections_only() {
        let shutdown = CancellationToken::new();
        let switch = DropSwitch::new(&shutdown);
        let before = switch.signal();
        switch.drop_all();
        let after = switch.signal();
        assert!(before.is_cancelled());
        assert!(!after.is_cancelled());
        assert_eq!(Ended::cause(&shutdown), Ended::Dropped);

        switch.drop_all();
        assert!(after.is_cancelled());
        assert!(!switch.signal().is_cancelled());
    }

    #[test]
    fn shutdown_ends_every_generation() {
        let shutdown = CancellationToken::new();
        let switch = DropSwitch::new(&shutdown);
        let current = switch.signal();
        shutdown.cancel();
        assert!(current.is_cancelled());
        assert!(switch.signal().is_cancelled());
        assert_eq!(Ended::cause(&shutdown), Ended::Shutdown);
        // A drop during shutdown hands out signals that are already cancelled.
        switch.drop_all();
        assert!(switch.signal().is_cancelled());
    }
}

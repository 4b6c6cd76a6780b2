//! The servers' public entry points: one complete server per push technique, `run(listener,
//! hub, shutdown)` and `run_with` with explicit limits, each beside its wire encoder (for the
//! benches). At the top of the crate on purpose: a server starts the shared accept loop
//! (`crate::serve`), which routes to every transport, so the transports cannot start it
//! themselves without an import circle.

/// Writes each transport's `run(listener, hub, shutdown)`: the same shared server, answering
/// that transport's subscribe endpoint.
macro_rules! transport_server {
    ($transport:expr) => {
        /// Serves this transport (plus publish, stats and metrics) on `listener` with default
        /// limits until `shutdown` completes, then closes every connection within the deadline.
        pub async fn run(
            listener: tokio::net::TcpListener,
            hub: crate::Hub,
            shutdown: impl std::future::Future<Output = ()>,
        ) -> crate::ShutdownReport {
            run_with(listener, hub, crate::ServerConfig::default(), shutdown).await
        }

        /// [`run`] with explicit limits.
        pub async fn run_with(
            listener: tokio::net::TcpListener,
            hub: crate::Hub,
            config: crate::ServerConfig,
            shutdown: impl std::future::Future<Output = ()>,
        ) -> crate::ShutdownReport {
            crate::serve::serve(listener, hub, config, &[$transport], shutdown).await
        }
    };
}

/// Short polling: `GET /poll` answers at once.
pub mod poll {
    pub use crate::transport::poll::encode_batch;

    transport_server!(crate::Transport::Poll);
}

/// Long polling: `GET /longpoll` is held until an event exists or a timeout passes.
pub mod longpoll {
    transport_server!(crate::Transport::LongPoll);
}

/// HTTP streaming: `GET /stream`, chunked NDJSON.
pub mod stream {
    pub use crate::transport::stream::encode_item;

    transport_server!(crate::Transport::Stream);
}

/// Server-Sent Events: `GET /sse`.
pub mod sse {
    pub use crate::transport::sse::encode_item;

    transport_server!(crate::Transport::Sse);
}

/// WebSocket: `GET /ws`.
pub mod ws {
    pub use crate::transport::ws::frame_bytes;

    transport_server!(crate::Transport::Ws);
}

//! One module per push technique. Each is a complete server (`run`) plus the handler of its
//! subscribe endpoint; publish, stats, metrics, limits and shutdown are shared (`crate::serve`).

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod stream;
pub mod ws;

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
            crate::serve(listener, hub, config, &[$transport], shutdown).await
        }
    };
}
pub(crate) use transport_server;

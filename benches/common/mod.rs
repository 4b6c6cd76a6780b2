//! What the benches share: a pushbench server on its own thread and current-thread runtime,
//! bound to `127.0.0.1:0`.

#![allow(dead_code)] // each bench uses a different subset

use std::sync::mpsc as std_mpsc;
use std::thread;
use std::time::Duration;

use pushbench_servers::{serve, Hub, HubConfig, ServerConfig, ShutdownReport, Transport};
use tokio::sync::oneshot;

/// Every network step is bounded by this, so a bug shows as a failure, not a hang.
pub const STEP: Duration = Duration::from_secs(10);

/// One server on its own thread and runtime.
pub struct Server {
    pub addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: std_mpsc::Receiver<ShutdownReport>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    pub fn start(transport: Transport) -> Server {
        Server::start_with(
            transport,
            Hub::new(HubConfig::default()),
            ServerConfig::default(),
        )
    }

    /// A server of `transport` on `hub`, with `config`.
    pub fn start_with(transport: Transport, hub: Hub, config: ServerConfig) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let addr = listener.local_addr().expect("local address");
        let (stop, stopped) = oneshot::channel::<()>();
        let (report, done) = std_mpsc::channel();
        let thread = thread::Builder::new()
            .name(format!("server-{transport}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("server runtime");
                let result = rt.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let shutdown = async {
                        let _ = stopped.await;
                    };
                    serve(listener, hub, config, &[transport], shutdown).await
                });
                let _ = report.send(result);
            })
            .expect("spawn the server thread");
        Server {
            addr,
            stop: Some(stop),
            done,
            thread: Some(thread),
        }
    }

    /// Starts graceful shutdown and waits (bounded) for the server to finish it.
    pub fn shutdown(mut self) -> ShutdownReport {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // `serve` cuts what is left after its 5 s shutdown deadline, so this is generous.
        let report = self
            .done
            .recv_timeout(ServerConfig::default().shutdown_deadline + STEP)
            .expect("server shut down in time");
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
        report
    }
}

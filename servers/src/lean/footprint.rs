//! What one lean subscription's own state takes in this build, for the suite's account of what
//! a connection holds, part by part (`pushbench suite`, `[idle]`), and against regressions.
//!
//! Measured by opening each subscription on a loopback socket, as a server would, and taking
//! the size of its task's future instead of spawning it: the whole of its state but what it
//! allocates (the socket's registration with the runtime, a long poll's timeout entry and,
//! while a WebSocket reads a frame, tungstenite's state). A stream keeps no timer: its topic's
//! fan-out writes its keep-alives (`crate::fanout`).

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::config::{HubConfig, ServerConfig};
use crate::fanout::Entry;
use crate::hub::Hub;
use crate::protocol::Transport;
use crate::state::App;

use super::{route, serve_longpoll, spawn, Lean, Spawn};

/// One technique's lean subscription, in bytes; the suite keeps it in `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Footprint {
    pub transport: Transport,
    /// Its task's future: what the subscription keeps while it waits.
    pub task_state_bytes: usize,
    /// Its entry with the topic's fan-out (with the `Arc`'s counts); 0 for a long poll, which
    /// has none.
    pub fanout_entry_bytes: usize,
}

/// The lean subscriptions' footprints: streaming, SSE, WebSocket and a held long poll.
pub async fn footprint() -> std::io::Result<Vec<Footprint>> {
    let transports = [
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::Ws,
    ];
    let hub = Hub::new(HubConfig::default());
    let app = Arc::new(App::new(hub, ServerConfig::default(), &transports, None));
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let ended = CancellationToken::new();
    let entry = std::mem::size_of::<Entry>() + 2 * std::mem::size_of::<usize>();
    let mut out = Vec::new();
    for (transport, request) in [
        (Transport::Stream, &b"GET /stream HTTP/1.1\r\n\r\n"[..]),
        (Transport::Sse, b"GET /sse HTTP/1.1\r\n\r\n"),
        (
            Transport::Ws,
            b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ),
        (Transport::LongPoll, b"GET /longpoll HTTP/1.1\r\n\r\n"),
    ] {
        let _client = TcpStream::connect(listener.local_addr()?).await?;
        let (socket, _) = listener.accept().await?;
        let lean = crate::head::parse(request).and_then(|head| route(&app, &head));
        let Some(lean) = lean else {
            return Err(std::io::Error::other(format!(
                "{} is not served lean",
                transport.name()
            )));
        };
        let (task_state_bytes, fanout_entry_bytes) = match lean {
            Lean::LongPoll(start) => (
                std::mem::size_of_val(&*serve_longpoll(&app, socket, start, &ended)),
                0,
            ),
            Lean::Subscribe(subscribe) => {
                let size = Size::default();
                spawn(&app, socket, subscribe, ended.clone(), &size);
                (size.0.get(), entry)
            }
        };
        out.push(Footprint {
            transport,
            task_state_bytes,
            fanout_entry_bytes,
        });
    }
    app.shutdown.cancel();
    Ok(out)
}

/// Takes the size of a subscription's task future instead of spawning it.
#[derive(Default)]
struct Size(Cell<usize>);

impl Spawn for &Size {
    fn spawn<F: Future<Output = ()> + Send + 'static>(self, subscription: F) {
        self.0.set(std::mem::size_of_val(&subscription));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task is its future plus about 150 bytes, in steps of 128 (tokio aligns it to a cache
    /// line pair), so a few bytes more here may cost 128 per socket. Printed for the README's
    /// account of a connection's memory.
    #[tokio::test]
    async fn a_subscriptions_future_stays_small() {
        for f in footprint().await.unwrap() {
            println!("{f:?}");
            assert!(
                f.task_state_bytes > 0 && f.task_state_bytes <= 1024,
                "{f:?}"
            );
            assert!(f.fanout_entry_bytes <= 256, "{f:?}");
        }
    }
}

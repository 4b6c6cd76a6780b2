//! `[faults]`' stalled readers: subscribers that read like any other until a set instant, then
//! stop reading and keep their socket open, as a client whose app froze or whose network went
//! quiet without closing anything.
//!
//! They run in the suite, beside the load generator's subscribers, on raw sockets with requests
//! written by hand: a stalled reader has nothing to measure, only to hold, and the load
//! generator's accounting then covers exactly the subscribers that kept reading. Each asks for
//! a small receive buffer, so the server meets a full socket within seconds of the stall rather
//! than after the megabytes loopback autotuning would grant.
//!
//! At the end each reader finds out whether the server cut it (it reads what is left: a close
//! or a reset after the data) or still holds it (data keeps coming, or none for a while).

use std::sync::Arc;
use std::time::{Duration, Instant};

use pushbench_servers::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::SuiteError;

/// Each stalled reader's receive buffer (`SO_RCVBUF`; the kernel doubles it).
const RECV_BUFFER: u32 = 4096;

/// How long the end's look at a socket may read: a socket the server still feeds never runs
/// dry, one it cut ends with a close after what was left in the buffers.
const PROBE: Duration = Duration::from_secs(1);

/// A quiet spell that ends the look at a socket: open, nothing more to read.
const QUIET: Duration = Duration::from_millis(300);

/// What became of the stalled readers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StallCount {
    /// Readers that connected and stalled.
    pub stalled: u64,
    /// Of those, the ones the server closed or reset.
    pub cut_by_server: u64,
}

/// Stalled readers, connected and reading until [`StalledReaders::stall_at`].
#[derive(Debug)]
pub struct StalledReaders {
    tasks: JoinSet<bool>,
    stall: StallHandle,
    stop: CancellationToken,
}

/// Sets the instant the readers stall at, from another task.
#[derive(Debug, Clone)]
pub struct StallHandle(Arc<watch::Sender<Option<Instant>>>);

impl StallHandle {
    /// Every reader stops reading at `at`.
    pub fn stall_at(&self, at: Instant) {
        self.0.send_replace(Some(at));
    }
}

impl StalledReaders {
    /// Connects `n` subscribers of `transport` to `topic` on the server at `url`
    /// (`http://HOST:PORT`), each reading (and discarding) what comes.
    pub async fn open(
        url: &str,
        transport: Transport,
        topic: &str,
        n: usize,
    ) -> Result<StalledReaders, SuiteError> {
        let err = |e: String| SuiteError::Server(format!("stalled readers: {e}"));
        let host = url.strip_prefix("http://").unwrap_or(url);
        let addr: std::net::SocketAddr = host.parse().map_err(|e| err(format!("{host}: {e}")))?;
        let request = request(transport, topic, host);
        let (stall, _) = watch::channel(None);
        let stop = CancellationToken::new();
        let mut tasks = JoinSet::new();
        for _ in 0..n {
            let socket = TcpSocket::new_v4().map_err(|e| err(e.to_string()))?;
            socket
                .set_recv_buffer_size(RECV_BUFFER)
                .map_err(|e| err(e.to_string()))?;
            let mut sock = socket
                .connect(addr)
                .await
                .map_err(|e| err(format!("connect: {e}")))?;
            sock.write_all(request.as_bytes())
                .await
                .map_err(|e| err(format!("subscribe: {e}")))?;
            tasks.spawn(reader(sock, stall.subscribe(), stop.clone()));
        }
        Ok(StalledReaders {
            tasks,
            stall: StallHandle(Arc::new(stall)),
            stop,
        })
    }

    /// What sets their stall instant.
    pub fn stall_handle(&self) -> StallHandle {
        self.stall.clone()
    }

    /// Ends the run's stall: counts the readers the server cut, then closes every socket.
    pub async fn finish(mut self) -> StallCount {
        let stalled = self.tasks.len() as u64;
        self.stop.cancel();
        let mut cut_by_server = 0;
        while let Some(cut) = self.tasks.join_next().await {
            cut_by_server += u64::from(cut.unwrap_or(false));
        }
        StallCount {
            stalled,
            cut_by_server,
        }
    }
}

/// The subscription request, written by hand (a WebSocket's handshake with a fixed key: the
/// answer is never read).
fn request(transport: Transport, topic: &str, host: &str) -> String {
    let upgrade = if transport == Transport::Ws {
        "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    } else {
        ""
    };
    format!(
        "GET {}?topic={topic} HTTP/1.1\r\nHost: {host}\r\n{upgrade}\r\n",
        transport.path()
    )
}

/// Reads until the stall instant, holds the socket unread until told to stop, then says
/// whether the server cut it.
async fn reader(
    mut sock: TcpStream,
    mut stall: watch::Receiver<Option<Instant>>,
    stop: CancellationToken,
) -> bool {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let at = *stall.borrow_and_update();
        let stall_time = async {
            match at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return cut(&mut sock, &mut buf).await,
            changed = stall.changed() => {
                if changed.is_err() {
                    // No stall will be set: hold on until the stop.
                    stop.cancelled().await;
                    return cut(&mut sock, &mut buf).await;
                }
            }
            () = stall_time => break,
            read = sock.read(&mut buf) => match read {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            },
        }
    }
    stop.cancelled().await;
    cut(&mut sock, &mut buf).await
}

/// Whether the server closed or reset `sock`: reads what the buffers held until a close, an
/// error, a quiet spell (open) or [`PROBE`] (open, still fed).
async fn cut(sock: &mut TcpStream, buf: &mut [u8]) -> bool {
    let deadline = Instant::now() + PROBE;
    while Instant::now() < deadline {
        match tokio::time::timeout(QUIET, sock.read(buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_the_transport_and_topic() {
        let r = request(Transport::Sse, "t", "127.0.0.1:9");
        assert!(r.starts_with("GET /sse?topic=t HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let ws = request(Transport::Ws, "t", "h");
        assert!(ws.contains("Upgrade: websocket\r\n"));
        assert!(ws.ends_with("\r\n\r\n"));
    }
}

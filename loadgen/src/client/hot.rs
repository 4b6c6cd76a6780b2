//! [`HotClient`]: a subscription whose steady state a readiness loop drives, with no task.
//!
//! Once a streaming, SSE or WebSocket subscription is open, all it does is read. As a task of
//! its own, every delivery costs a wake-up through the async runtime (scheduling, polling a
//! stack of futures) on top of the read itself, and at 10,000 subscribers that overhead made
//! the load generator cost most of what the server it measured cost. The load generator
//! therefore detaches such a subscription's socket from the runtime and hands it to one
//! readiness loop per worker (`load/hot.rs`), which reads it and decodes with the client's own
//! code ([`HotClient::buffered`]): the same parsers, the same ids, gaps and errors as the
//! client's `next`, just without its I/O. Anything else (a reconnect, an error, a write that
//! would block) goes back to a task, which calls `next` as usual.

use std::io;
use std::net::TcpStream;

use super::raw::RawConn;
use super::{Item, SseClient, StreamClient, WsClient};
use crate::error::ClientError;

/// A subscription that can run without a task: one of the read-only transports.
#[derive(Debug)]
pub enum HotClient {
    /// `GET /stream`.
    Stream(StreamClient),
    /// `GET /sse`.
    Sse(SseClient),
    /// `GET /ws`.
    Ws(WsClient),
}

impl HotClient {
    fn conn(&mut self) -> Option<&mut RawConn> {
        match self {
            HotClient::Stream(c) => c.connection(),
            HotClient::Sse(c) => c.connection(),
            HotClient::Ws(c) => c.connection().map(|ws| ws.conn_mut()),
        }
    }

    /// Puts a socket taken by [`Subscription::into_hot`](super::Subscription::into_hot) back on the current runtime, so a task
    /// can drive the client again. A socket whose connection the client has dropped meanwhile
    /// is closed.
    pub fn attach(&mut self, socket: TcpStream) -> io::Result<()> {
        match self.conn() {
            Some(conn) => conn.attach(socket),
            None => Ok(()),
        }
    }

    /// One non-blocking read of `socket` into the client's buffer: the bytes read (`0` at the
    /// end of the stream) and whether the socket is drained. `NotConnected` when the client
    /// has dropped its connection.
    pub fn read_from(&mut self, socket: &TcpStream) -> io::Result<(usize, bool)> {
        match self.conn() {
            Some(conn) => conn.read_from(socket),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Whether frames wait to be written (a WebSocket's pong or Close reply).
    pub fn wants_write(&mut self) -> bool {
        match self {
            HotClient::Ws(c) => c.connection().is_some_and(|ws| ws.wants_write()),
            _ => false,
        }
    }

    /// Writes what waits, without blocking (`WouldBlock`: the rest still waits).
    pub fn write_to(&mut self, socket: &TcpStream) -> io::Result<()> {
        match self {
            HotClient::Ws(c) => match c.connection() {
                Some(ws) => ws.write_to(socket),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// What the client's `next` would return from the bytes already read. `None`: write
    /// first ([`wants_write`](Self::wants_write)), read more, or, when
    /// [`connected`](Self::connected) says so, connect again (which only a task does).
    pub fn buffered(&mut self) -> Option<Result<Item, ClientError>> {
        match self {
            HotClient::Stream(c) => c.buffered(),
            HotClient::Sse(c) => c.buffered(),
            HotClient::Ws(c) => c.buffered(),
        }
    }

    /// Whether the client still has its connection.
    pub fn connected(&mut self) -> bool {
        self.conn().is_some()
    }
}

/// Takes `client`'s socket off the runtime for a readiness loop, if it has a connection.
#[allow(clippy::result_large_err)] // `Err` hands the client back, as in `into_hot_client`
fn detach<C>(
    mut client: C,
    wrap: fn(C) -> HotClient,
    conn: fn(&mut C) -> Option<&mut RawConn>,
) -> Result<(HotClient, TcpStream), C> {
    match conn(&mut client).and_then(RawConn::detach) {
        Some(Ok(socket)) => Ok((wrap(client), socket)),
        // Deregistering failed (it does not, short of a broken epoll): the connection has lost
        // its socket, and the client's next read finds it closed and reconnects.
        Some(Err(e)) => {
            tracing::debug!("could not detach a socket: {e}");
            Err(client)
        }
        None => Err(client),
    }
}

impl StreamClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Stream, StreamClient::connection)
    }
}

impl SseClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Sse, SseClient::connection)
    }
}

impl WsClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Ws, |c| {
            c.connection().map(|ws| ws.conn_mut())
        })
    }
}

//! A subscriber's socket while it is registered with its topic's fan-out (`crate::fanout`):
//! the fan-out writes to it while the subscriber is direct, and its own task reads and writes
//! through this otherwise. Both reach the socket by reference; who may write is decided under
//! the subscriber's lock in the fan-out, so they never write at once.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::fanout::{Entry, Registration};

use super::conn::AsTcp;

/// The registered socket, as IO for the subscriber's own task.
pub(super) struct Shared {
    registration: Registration,
}

impl Shared {
    pub(super) fn new(registration: Registration) -> Shared {
        Shared { registration }
    }

    pub(super) fn entry(&self) -> &Entry {
        self.registration.entry()
    }
}

impl AsTcp for Shared {
    fn tcp(&self) -> &TcpStream {
        self.entry().socket()
    }
}

impl AsyncRead for Shared {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = self.tcp();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            match tcp.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale and is cleared now: wait for the next.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Shared {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_write_with(self.tcp(), cx, |tcp| tcp.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_with(self.tcp(), cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket: nothing is buffered here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket is shared by reference, so it cannot be half-closed here; it closes when
        // the subscription ends and its registration is dropped.
        Poll::Ready(Ok(()))
    }
}

/// Waits until `tcp` is writable and tries `write` on it, until a try does not find the
/// readiness stale.
fn poll_write_with(
    tcp: &TcpStream,
    cx: &mut Context<'_>,
    mut write: impl FnMut(&TcpStream) -> io::Result<usize>,
) -> Poll<io::Result<usize>> {
    loop {
        ready!(tcp.poll_write_ready(cx))?;
        match write(tcp) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            written => return Poll::Ready(written),
        }
    }
}

//! A socket that the publishing side also writes to: a subscriber's while it is registered with
//! its topic's fan-out (`crate::fanout`), or a device's while the gateway's send path may write
//! its messages (`crate::gateway`). The publishing side writes while the subscriber is direct,
//! and the subscriber's own task reads and writes through this otherwise. Both reach the socket
//! by reference; who may write is decided under the subscriber's lock, so they never write at
//! once.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use crate::fanout::{Entry, Registration};

use super::conn::AsTcp;

/// The shared socket, as IO for the subscriber's own task; `H` is what keeps it shared (a
/// fan-out registration, or a plain `Arc`).
pub(super) struct Shared<H = Registration> {
    holder: H,
}

impl<H: AsTcp> Shared<H> {
    pub(super) fn new(holder: H) -> Shared<H> {
        Shared { holder }
    }
}

impl Shared {
    pub(super) fn entry(&self) -> &Entry {
        self.holder.entry()
    }
}

impl AsTcp for Registration {
    fn tcp(&self) -> &TcpStream {
        self.entry().socket()
    }
}

impl AsTcp for Arc<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl<H: AsTcp> AsTcp for Shared<H> {
    fn tcp(&self) -> &TcpStream {
        self.holder.tcp()
    }
}

impl<H: AsTcp + Unpin> AsyncRead for Shared<H> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let tcp = self.tcp();
        loop {
            ready!(tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let want = unfilled.len();
            let mut got = None;
            // A read shorter than asked for emptied the socket, so its readiness is cleared now
            // (as tokio's own `AsyncRead` for `TcpStream` does): otherwise the next read would
            // be a system call only to learn that nothing is left. Clearing it through `try_io`
            // is safe: readiness that arrived after the read began is kept.
            let tried = tcp.try_io(Interest::READABLE, || {
                let n = tcp.try_read(unfilled)?;
                got = Some(n);
                match n > 0 && n < want {
                    true => Err(io::ErrorKind::WouldBlock.into()),
                    false => Ok(()),
                }
            });
            match (got, tried) {
                (Some(n), _) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                // The readiness was stale and is cleared now: wait for the next.
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                (None, Err(e)) => return Poll::Ready(Err(e)),
                (None, Ok(())) => {}
            }
        }
    }
}

impl<H: AsTcp + Unpin> AsyncWrite for Shared<H> {
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
        // the subscription ends and its last holder is dropped.
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

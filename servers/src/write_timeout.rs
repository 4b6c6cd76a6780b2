//! The socket's write timeout: a connection whose peer stops reading is cut.
//!
//! A streaming body is only polled when the socket has room, so a client that stops reading
//! never lets the hub's slow-subscriber policy run: its connection would stay open (and hold a
//! permit, a subscriber, and the graceful shutdown) forever. The check therefore lives at the
//! socket, under hyper: a write that makes no progress for [`ServerConfig::write_timeout`]
//! fails with [`io::ErrorKind::TimedOut`], and hyper closes the connection. An upgraded
//! WebSocket writes through the same IO object, so it is covered too.
//!
//! [`ServerConfig::write_timeout`]: crate::ServerConfig::write_timeout

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use crate::stats::Stats;

/// `inner` with a write timeout. Reads pass through untouched.
#[derive(Debug)]
pub(crate) struct WriteTimeout<T> {
    inner: T,
    timeout: Duration,
    /// Armed when a write first returns `Pending`, cleared on any progress. Allocated lazily:
    /// most connections never see a full socket.
    stalled: Option<Pin<Box<Sleep>>>,
    /// Once a write has timed out, every later write fails too (and is not counted again).
    timed_out: bool,
    stats: Arc<Stats>,
}

impl<T> WriteTimeout<T> {
    pub(crate) fn new(inner: T, timeout: Duration, stats: Arc<Stats>) -> Self {
        WriteTimeout {
            inner,
            timeout,
            stalled: None,
            timed_out: false,
            stats,
        }
    }

    /// The wrapped socket, for what bypasses the timeout: reads, and writes that never wait.
    pub(crate) fn get_ref(&self) -> &T {
        &self.inner
    }

    /// The wrapped socket, once nothing is being written.
    pub(crate) fn into_inner(self) -> T {
        self.inner
    }

    /// Handles one write-side poll result: progress clears the timer; `Pending` arms it (once)
    /// and turns into an error when it has fired.
    fn check<R>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(result) => {
                self.stalled = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(sleep.as_mut().poll(cx));
                self.stalled = None;
                self.timed_out = true;
                Stats::inc(&self.stats.write_timeouts);
                Poll::Ready(Err(timed_out(timeout)))
            }
        }
    }
}

fn timed_out(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("peer read nothing for {timeout:?}"),
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteTimeout<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteTimeout<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out(self.timeout)));
        }
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out(self.timeout)));
        }
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.timed_out {
            return Poll::Ready(Err(timed_out(self.timeout)));
        }
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Closing must still work after a timeout: it is how the connection ends.
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_stalled_write_times_out_once_and_progress_resets_the_timer() {
        let stats = Arc::new(Stats::default());
        // A 64-byte pipe: the writer stalls as soon as the reader stops.
        let (near, mut far) = tokio::io::duplex(64);
        let mut w = WriteTimeout::new(near, Duration::from_millis(100), stats.clone());
        // Progress within the timeout, repeatedly: never cut.
        for _ in 0..5 {
            w.write_all(&[1; 64]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(60)).await;
            let mut buf = [0; 64];
            far.read_exact(&mut buf).await.unwrap();
        }
        assert_eq!(stats.snapshot().write_timeouts, 0);
        // Now the reader stops.
        w.write_all(&[1; 64]).await.unwrap();
        let err = tokio::time::timeout(Duration::from_secs(5), w.write_all(&[1; 64]))
            .await
            .expect("the write timeout fires")
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(
            w.write(&[1]).await.unwrap_err().kind(),
            io::ErrorKind::TimedOut
        );
        assert_eq!(stats.snapshot().write_timeouts, 1);
    }
}

//! Socket-level accounting: [`Counters`] and the [`CountingStream`] every connection goes through.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Running totals for one task (or a group of tasks sharing the `Arc`).
///
/// Relaxed atomics: the numbers are only read as totals after the fact or sampled by a reporter,
/// so no ordering with other memory is needed, and relaxed adds stay cheap on the hot path.
#[derive(Debug, Default)]
pub struct Counters {
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    requests: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    empty_responses: AtomicU64,
    errors: AtomicU64,
    unstamped_reads: AtomicU64,
    stamped_reads: AtomicU64,
    late_reads: AtomicU64,
}

/// A plain copy of [`Counters`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CountersSnapshot {
    /// Bytes read from sockets (headers, framing and payload alike).
    pub bytes_down: u64,
    /// Bytes written to sockets.
    pub bytes_up: u64,
    /// HTTP requests sent, the WebSocket upgrade included.
    pub requests: u64,
    /// TCP connections opened.
    pub connects: u64,
    /// Connections opened to replace one that ended or failed.
    pub reconnects: u64,
    /// Poll and long-poll responses that held no event.
    pub empty_responses: u64,
    /// Failures seen, including those recovered by reconnecting.
    pub errors: u64,
    /// Reads the kernel gave no arrival stamp for (`client/arrival.rs`), timed by the clock at
    /// the read instead.
    #[serde(default)]
    pub unstamped_reads: u64,
    /// Reads the kernel stamped.
    #[serde(default)]
    pub stamped_reads: u64,
    /// Stamped reads that came more than [`crate::client::LATE_READ`] after their bytes
    /// arrived: the load generator was behind its reading.
    #[serde(default)]
    pub late_reads: u64,
}

impl CountersSnapshot {
    /// What happened between `earlier` and this snapshot, field by field.
    pub fn since(&self, earlier: &CountersSnapshot) -> CountersSnapshot {
        CountersSnapshot {
            bytes_down: self.bytes_down.saturating_sub(earlier.bytes_down),
            bytes_up: self.bytes_up.saturating_sub(earlier.bytes_up),
            requests: self.requests.saturating_sub(earlier.requests),
            connects: self.connects.saturating_sub(earlier.connects),
            reconnects: self.reconnects.saturating_sub(earlier.reconnects),
            empty_responses: self.empty_responses.saturating_sub(earlier.empty_responses),
            errors: self.errors.saturating_sub(earlier.errors),
            unstamped_reads: self.unstamped_reads.saturating_sub(earlier.unstamped_reads),
            stamped_reads: self.stamped_reads.saturating_sub(earlier.stamped_reads),
            late_reads: self.late_reads.saturating_sub(earlier.late_reads),
        }
    }

    /// Adds another snapshot field by field, to total many tasks.
    pub fn merge(&mut self, other: &CountersSnapshot) {
        self.bytes_down += other.bytes_down;
        self.bytes_up += other.bytes_up;
        self.requests += other.requests;
        self.connects += other.connects;
        self.reconnects += other.reconnects;
        self.empty_responses += other.empty_responses;
        self.errors += other.errors;
        self.unstamped_reads += other.unstamped_reads;
        self.stamped_reads += other.stamped_reads;
        self.late_reads += other.late_reads;
    }
}

macro_rules! bump {
    ($($(#[$doc:meta])* $name:ident => $field:ident;)*) => {
        $( $(#[$doc])* #[inline] pub fn $name(&self) { self.$field.fetch_add(1, Ordering::Relaxed); } )*
    };
}

impl Counters {
    /// A zeroed set, shared.
    pub fn new_shared() -> Arc<Counters> {
        Arc::new(Counters::default())
    }

    bump! {
        /// Counts one HTTP request (or WebSocket upgrade).
        add_request => requests;
        /// Counts one TCP connection opened.
        add_connect => connects;
        /// Counts one connection opened to replace a lost one.
        add_reconnect => reconnects;
        /// Counts one poll response without events.
        add_empty_response => empty_responses;
        /// Counts one failure.
        add_error => errors;
        /// Counts one read without an arrival stamp.
        add_unstamped_read => unstamped_reads;
        /// Counts one read with an arrival stamp.
        add_stamped_read => stamped_reads;
        /// Counts one read that came late after its bytes arrived.
        add_late_read => late_reads;
    }

    /// Adds bytes read from a socket.
    #[inline]
    pub fn add_bytes_down(&self, n: u64) {
        self.bytes_down.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds bytes written to a socket.
    #[inline]
    pub fn add_bytes_up(&self, n: u64) {
        self.bytes_up.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads every counter (each one atomically, not all together).
    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CountersSnapshot {
            bytes_down: get(&self.bytes_down),
            bytes_up: get(&self.bytes_up),
            requests: get(&self.requests),
            connects: get(&self.connects),
            reconnects: get(&self.reconnects),
            empty_responses: get(&self.empty_responses),
            errors: get(&self.errors),
            unstamped_reads: get(&self.unstamped_reads),
            stamped_reads: get(&self.stamped_reads),
            late_reads: get(&self.late_reads),
        }
    }
}

/// An I/O wrapper adding every byte read or written to a [`Counters`].
///
/// Counting here, below HTTP and WebSocket framing, is what makes the transports comparable:
/// headers, chunk sizes, SSE field names and frame headers all cost bandwidth.
#[derive(Debug)]
pub struct CountingStream<S> {
    inner: S,
    counters: Arc<Counters>,
}

impl<S> CountingStream<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<Counters>) -> Self {
        CountingStream { inner, counters }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The counters bytes are added to.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }
}

// `S: Unpin` keeps this free of pin projection (and so of unsafe code); sockets are `Unpin`.
impl<S: AsyncRead + Unpin> AsyncRead for CountingStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.counters.add_bytes_down(n as u64);
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountingStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.counters.add_bytes_up(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.counters.add_bytes_up(n as u64);
        }
        res
    }

    // Forwarded so hyper keeps writing headers and body in one syscall.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_both_directions() {
        let (a, mut b) = tokio::io::duplex(64);
        let counters = Counters::new_shared();
        let mut a = CountingStream::new(a, counters.clone());
        a.write_all(b"hello").await.unwrap();
        b.write_all(b"hi there").await.unwrap();
        let mut got = [0u8; 8];
        a.read_exact(&mut got).await.unwrap();
        let s = counters.snapshot();
        assert_eq!((s.bytes_up, s.bytes_down), (5, 8));
        counters.add_error();
        let mut total = CountersSnapshot::default();
        total.merge(&counters.snapshot());
        total.merge(&counters.snapshot());
        assert_eq!(total.errors, 2);
        assert_eq!(total.bytes_up, 10);
    }
}

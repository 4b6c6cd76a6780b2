//! The first request head of a connection, read before hyper sees the socket.
//!
//! Why: a streaming or SSE subscription answered by hyper keeps hyper's per-connection read and
//! write buffers (about 14 KiB) for the whole life of the response, although after its head it
//! only ever writes. So the accept loop reads the first bytes itself ([`sniff`]) and, when they
//! hold a complete subscribe request that can be answered without hyper, hands the socket to
//! [`crate::lean`]; anything else (every other request, a head split over several reads, an
//! HTTP/1.0 client, a request with a body) goes to hyper with the bytes already read put back
//! in front of the socket ([`Prefixed`]), so hyper answers exactly as if it had read them.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::http::head_size;

/// Bytes read to find the first head. A browser's `EventSource` request is well under 1 KiB;
/// a head that does not fit goes to hyper, which reads the rest.
const SNIFF_BYTES: usize = 4096;

/// Headers looked at in a sniffed head; a head with more goes to hyper.
const MAX_HEADERS: usize = 32;

/// What the first read of a connection brought.
#[derive(Debug)]
pub(crate) enum Sniffed {
    /// The peer closed (or failed) before sending anything, or sent nothing within the header
    /// read timeout: hyper would close it unanswered too.
    Nothing,
    /// These bytes, the start of the first request.
    Bytes(Bytes),
}

/// Reads whatever the peer has sent first, waiting at most `timeout`.
pub(crate) async fn sniff(stream: &TcpStream, timeout: Duration) -> Sniffed {
    let read = async {
        loop {
            if stream.readable().await.is_err() {
                return Sniffed::Nothing;
            }
            match read_now(stream) {
                Ok(bytes) if bytes.is_empty() => return Sniffed::Nothing,
                Ok(bytes) => return Sniffed::Bytes(bytes),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Sniffed::Nothing,
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Sniffed::Nothing)
}

/// One read into a buffer on the stack, kept as exactly the bytes read: 10,000 connections
/// each allocating the whole buffer at once leave the heap fragmented by as much.
fn read_now(stream: &TcpStream) -> io::Result<Bytes> {
    let mut buf = [0u8; SNIFF_BYTES];
    let n = stream.try_read(&mut buf)?;
    Ok(Bytes::copy_from_slice(&buf[..n]))
}

/// A complete `GET` head with no body, as far as a subscribe endpoint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    /// The path, without the query.
    pub path: String,
    /// The query, without the `?`.
    pub query: Option<String>,
    /// The headers, as hyper would have given them.
    pub headers: HeaderMap,
    /// The request line and headers as they are held against `max_header_bytes`
    /// ([`head_size`]).
    pub size: usize,
}

/// Parses `bytes` as one complete HTTP/1.1 `GET` head with no body, and nothing after it (a
/// pipelined second request is hyper's to answer). `None` for anything else.
pub(crate) fn parse(bytes: &[u8]) -> Option<Head> {
    let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut parsed);
    let httparse::Status::Complete(len) = req.parse(bytes).ok()? else {
        return None;
    };
    if len != bytes.len() || req.method? != "GET" || req.version? != 1 {
        return None;
    }
    let target = req.path?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (target, None),
    };
    if !path.starts_with('/') {
        return None;
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(h.value).ok()?;
        headers.append(name, value);
    }
    let has = |name: HeaderName, token: &[u8]| {
        headers.get_all(name).iter().any(|v| {
            v.as_bytes()
                .to_ascii_lowercase()
                .windows(token.len())
                .any(|w| w == token)
        })
    };
    let body = headers
        .get(header::CONTENT_LENGTH)
        .is_some_and(|v| v.as_bytes() != b"0")
        || headers.contains_key(header::TRANSFER_ENCODING);
    // The client wants the connection closed after the answer, or expects a 100 first: hyper
    // does both.
    if body || headers.contains_key(header::EXPECT) || has(header::CONNECTION, b"close") {
        return None;
    }
    Some(Head {
        path: path.to_owned(),
        query,
        size: head_size(target.len(), &headers),
        headers,
    })
}

/// A socket with bytes already read from it put back in front.
#[derive(Debug)]
pub(crate) struct Prefixed<T> {
    /// Dropped once read, so a long-lived connection does not keep it.
    prefix: Option<Bytes>,
    inner: T,
}

impl<T> Prefixed<T> {
    pub(crate) fn new(prefix: Bytes, inner: T) -> Self {
        Prefixed {
            prefix: (!prefix.is_empty()).then_some(prefix),
            inner,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix.split_to(n));
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

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
    use tokio::io::AsyncReadExt;

    #[test]
    fn a_plain_subscribe_head_parses() {
        let h = parse(b"GET /sse?topic=a&after=3 HTTP/1.1\r\nHost: x\r\nLast-Event-ID: 7\r\n\r\n")
            .unwrap();
        assert_eq!(h.path, "/sse");
        assert_eq!(h.query.as_deref(), Some("topic=a&after=3"));
        assert_eq!(h.headers["last-event-id"], "7");
        assert_eq!(h.size, "/sse?topic=a&after=3".len() + 16 + 9 + 18);
        let h = parse(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.query), ("/stream", None));
        let h = parse(b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        assert_eq!(h.unwrap().headers["upgrade"], "websocket");
    }

    #[test]
    fn anything_else_goes_to_hyper() {
        for raw in [
            &b"GET /sse HTTP/1.1\r\nHost: x\r\n"[..],
            b"GET /sse HTTP/1.0\r\n\r\n",
            b"POST /sse HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /sse HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nConnection: Close\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"GET /sse HTTP/1.1\r\n\r\nGET /stats HTTP/1.1\r\n\r\n",
            b"GET /sse HTTP/1.1\r\nBad Name: 1\r\n\r\n",
            b"GET http://x/sse HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01garbage",
        ] {
            assert_eq!(parse(raw), None, "{}", String::from_utf8_lossy(raw));
        }
    }

    #[tokio::test]
    async fn the_prefix_is_read_first_then_the_socket() {
        let (mut near, far) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut near, b" world")
            .await
            .unwrap();
        drop(near);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), far);
        let mut all = String::new();
        p.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "hello world");
        assert!(p.prefix.is_none());
    }
}

//! A chunked HTTP/1.1 response read straight off the socket: the body of every long-lived
//! HTTP subscription (NDJSON streams, event streams, Nchan's chunk-framed messages).
//!
//! Two reasons to read the wire here rather than through hyper's client:
//! - Nchan's http-chunked subscriber sends each message as exactly one chunk, with nothing
//!   added (no newline; empty messages are not sent), so the chunk is the only framing, and
//!   hyper hands a body over in pieces that need not be whole chunks.
//! - Cost, for the load generator must be much cheaper than the servers it measures. A
//!   subscription needs one request and then only reads: here that is one small buffer and a
//!   socket (about 100 bytes of state), where a hyper client connection keeps a dispatcher,
//!   a body channel and an 8 KiB-and-up read buffer for the life of the stream.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;

use super::raw::{find, RawConn};
use super::{Retry, Setup};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// An open streaming response: chunked, or (without a length or chunking, as Nchan sends its
/// event streams) delimited by the end of the connection.
#[derive(Debug)]
pub(crate) struct ChunkedResponse {
    conn: RawConn,
    /// The body is chunked; otherwise it runs to the end of the connection.
    chunked: bool,
    /// The response's `Content-Type`, lower-cased (empty: none).
    content_type: String,
    /// Bytes at the buffer's start lent out by the last `buffered_chunk`, consumed by the next.
    lent: usize,
}

impl ChunkedResponse {
    /// Connects, sends `GET path_and_query` with `headers`, and returns once a `200` with a
    /// streaming body (chunked, or running to the end of the connection) came back. Any other
    /// status is an error carrying its body.
    pub(crate) async fn open(
        target: &Target,
        counters: &Arc<Counters>,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientError> {
        let (conn, head) = RawConn::get(target, counters, path_and_query, headers).await?;
        if head.status != StatusCode::OK {
            return Err(conn.refusal(&head).await);
        }
        if !head.chunked && head.length.is_some() {
            return Err(ClientError::Protocol(
                "streaming response has a Content-Length".into(),
            ));
        }
        Ok(ChunkedResponse {
            conn,
            chunked: head.chunked,
            content_type: head.content_type,
            lent: 0,
        })
    }

    /// Whether the body is chunked (so each [`Chunk::Data`] is one chunk).
    pub(crate) fn is_chunked(&self) -> bool {
        self.chunked
    }

    /// The response's `Content-Type`, lower-cased (empty when it sent none).
    pub(crate) fn content_type(&self) -> &str {
        &self.content_type
    }

    /// The next chunk already in the buffer, without I/O: its data and when its last byte was
    /// read, the body's end, or [`Chunk::More`] when more bytes must be read first (with
    /// [`fill`](Self::fill), or by a readiness loop through [`conn_mut`](Self::conn_mut)).
    /// Chunks over `max` bytes are refused. The data is lent until the next call, which
    /// consumes it: no copy, no allocation. A body delimited by the connection's end comes
    /// as whatever the reads brought; its end is seen by `fill`.
    pub(crate) fn buffered_chunk(&mut self, max: usize) -> Result<Chunk<'_>, ClientError> {
        if self.lent > 0 {
            self.conn.buf.advance(self.lent);
            self.lent = 0;
        }
        let buf = &self.conn.buf;
        if !self.chunked {
            if buf.is_empty() {
                return Ok(Chunk::More);
            }
            self.lent = buf.len();
            return Ok(Chunk::Data(&buf[..], self.conn.read_at));
        }
        let Some(line_end) = find(buf, b"\r\n") else {
            if buf.len() > 64 {
                return Err(ClientError::Protocol("chunk size line too long".into()));
            }
            return Ok(Chunk::More);
        };
        let size = parse_size(&buf[..line_end])?;
        if size > max {
            return Err(ClientError::Protocol(format!(
                "chunk of {size} bytes, longer than {max}"
            )));
        }
        if size == 0 {
            // Trailers, if any, carry nothing used here; the response is over.
            self.lent = buf.len();
            return Ok(Chunk::End);
        }
        let start = line_end + 2;
        let end = start + size;
        if buf.len() < end + 2 {
            return Ok(Chunk::More);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(ClientError::Protocol("chunk not followed by CRLF".into()));
        }
        self.lent = end + 2;
        Ok(Chunk::Data(&buf[start..end], self.conn.read_at))
    }

    /// Reads more of the body. `Ok(false)`: a body delimited by the connection's end has
    /// ended (a chunked body ends with its last chunk instead, so there an EOF is an error).
    pub(crate) async fn fill(&mut self) -> Result<bool, ClientError> {
        match self.conn.fill().await {
            Ok(()) => Ok(true),
            Err(ClientError::Io(e))
                if !self.chunked && e.kind() == std::io::ErrorKind::UnexpectedEof =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads more of the body for a subscriber that reconnects: `Ok(true)` when bytes came,
    /// `Ok(false)` when the body or connection ended and `retry` allows another connection,
    /// an error when it does not or the framing is lost. On anything but `Ok(true)` the caller
    /// drops this response.
    pub(crate) async fn read_more(
        &mut self,
        retry: &mut Retry,
        setup: &Setup,
    ) -> Result<bool, ClientError> {
        let ending = match self.fill().await {
            Ok(true) => return Ok(true),
            Ok(false) => None,
            Err(e) if e.is_connection_error() => Some(e),
            Err(e) => return Err(e),
        };
        retry.ended(setup, ending).map(|()| false)
    }

    /// The connection under the body, for a readiness loop to detach and read.
    pub(super) fn conn_mut(&mut self) -> &mut RawConn {
        &mut self.conn
    }
}

/// What [`ChunkedResponse::buffered_chunk`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Chunk<'a> {
    /// A chunk's data (or, unchunked, what was read), and when its last byte was read.
    Data(&'a [u8], Instant),
    /// The terminating chunk: the response is over.
    End,
    /// Nothing whole yet: read more.
    More,
}

/// A chunk-size line: hex digits, then optional `;extensions`.
pub(super) fn parse_size(line: &[u8]) -> Result<usize, ClientError> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = std::str::from_utf8(digits).unwrap_or_default().trim();
    if digits.is_empty() || digits.len() > 15 {
        return Err(ClientError::Protocol(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(line)
        )));
    }
    usize::from_str_radix(digits, 16).map_err(|_| {
        ClientError::Protocol(format!(
            "bad chunk size line {:?}",
            String::from_utf8_lossy(line)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::spawn;
    use tokio::io::AsyncWriteExt;

    /// The next chunk, reading as needed; `None` at the body's end.
    async fn next_chunk(r: &mut ChunkedResponse) -> Option<Vec<u8>> {
        loop {
            match r.buffered_chunk(1024).unwrap() {
                Chunk::Data(data, _) => return Some(data.to_vec()),
                Chunk::End => return None,
                Chunk::More => {}
            }
            if !r.fill().await.unwrap() {
                return None;
            }
        }
    }

    #[tokio::test]
    async fn chunks_come_whole_however_the_bytes_are_cut() {
        let (addr, mut rx) = spawn().await;
        let server = tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let wire: &[u8] = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                2\r\ne1\r\n3;x=y\r\ne22\r\n11\r\n0123456789abcdef!\r\n0\r\n\r\n";
            // One byte at a time: every boundary falls somewhere awkward once.
            for b in wire {
                a.socket.write_all(&[*b]).await.unwrap();
                a.socket.flush().await.unwrap();
                tokio::task::yield_now().await;
            }
            a.head
        });
        let counters = Counters::new_shared();
        let target = Target::from_addr(addr);
        let mut r =
            ChunkedResponse::open(&target, &counters, "/stream?topic=t", &[("TE", "chunked")])
                .await
                .unwrap();
        let mut got = Vec::new();
        while let Some(chunk) = next_chunk(&mut r).await {
            got.push(String::from_utf8(chunk).unwrap());
        }
        assert_eq!(got, ["e1", "e22", "0123456789abcdef!"]);
        let head = server.await.unwrap();
        assert!(
            head.starts_with("GET /stream?topic=t HTTP/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nTE: chunked\r\n"), "{head}");
        assert_eq!(counters.snapshot().requests, 1);
    }

    #[tokio::test]
    async fn error_status_and_unchunked_answers_fail() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            a.socket
                .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope")
                .await
                .unwrap();
            let mut b = rx.recv().await.unwrap();
            b.socket
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnope")
                .await
                .unwrap();
            let mut c = rx.recv().await.unwrap();
            c.socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: one\n\n",
                )
                .await
                .unwrap();
            c.socket.write_all(b"data: two\n\n").await.unwrap();
            drop(c);
            std::future::pending::<()>().await;
        });
        let counters = Counters::new_shared();
        let target = Target::from_addr(addr);
        let err = ChunkedResponse::open(&target, &counters, "/", &[])
            .await
            .unwrap_err();
        assert!(
            matches!(&err, ClientError::Status { status, message } if status.as_u16() == 403 && message == "nope"),
            "{err}"
        );
        let err = ChunkedResponse::open(&target, &counters, "/", &[])
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
        // Without a length or chunking, the body runs to the end of the connection.
        let mut r = ChunkedResponse::open(&target, &counters, "/", &[])
            .await
            .unwrap();
        assert!(!r.is_chunked());
        let mut got = Vec::new();
        while let Some(data) = next_chunk(&mut r).await {
            got.extend_from_slice(&data);
        }
        assert_eq!(got, b"data: one\n\ndata: two\n\n");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"1f").unwrap(), 31);
        assert_eq!(parse_size(b"A;name=v").unwrap(), 10);
        assert!(parse_size(b"").is_err());
        assert!(parse_size(b"xyz").is_err());
    }
}

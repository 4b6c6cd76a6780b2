//! A chunked HTTP/1.1 response read straight off the socket, so chunk boundaries survive.
//!
//! Nchan's http-chunked subscriber sends each message as exactly one chunk, with nothing added
//! (no newline; empty messages are not sent), so the chunk is the only framing. hyper hands a
//! body over in pieces that need not be whole chunks (a chunk cut by a read boundary comes in
//! two), so this reads the wire itself: one request, the response head, then chunk by chunk.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::counters::Counters;
use crate::error::{status_error, ClientError};
use crate::http::{connect_socket, Socket};
use crate::target::Target;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// An open chunked response.
#[derive(Debug)]
pub(crate) struct ChunkedResponse {
    socket: Socket,
    buf: BytesMut,
    /// When the bytes at the end of `buf` were read.
    read_at: Instant,
}

impl ChunkedResponse {
    /// Connects, sends `GET path_and_query` with `headers`, and returns once a `200` with a
    /// chunked body came back. Any other status is an error carrying its body.
    pub(crate) async fn open(
        target: &Target,
        counters: &Arc<Counters>,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, ClientError> {
        let mut socket = connect_socket(target, counters).await?;
        let mut head = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {}\r\n",
            target.host()
        );
        for (name, value) in headers {
            head.push_str(name);
            head.push_str(": ");
            head.push_str(value);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        counters.add_request();
        socket.write_all(head.as_bytes()).await?;
        let mut response = ChunkedResponse {
            socket,
            buf: BytesMut::with_capacity(8 * 1024),
            read_at: Instant::now(),
        };
        let head_len = loop {
            if let Some(pos) = find(&response.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if response.buf.len() > MAX_HEAD {
                return Err(ClientError::Protocol("response head too long".into()));
            }
            response.fill().await?;
        };
        let head = response.buf.split_to(head_len);
        let head = std::str::from_utf8(&head)
            .map_err(|_| ClientError::Protocol("response head is not UTF-8".into()))?;
        let (status, chunked, length) = parse_head(head)?;
        if status != StatusCode::OK {
            // Error answers are short; read what a Content-Length announces, within reason.
            let want = length.unwrap_or(0).min(MAX_HEAD);
            while response.buf.len() < want {
                if response.fill().await.is_err() {
                    break;
                }
            }
            let body = &response.buf[..want.min(response.buf.len())];
            return Err(status_error(status, body));
        }
        if !chunked {
            return Err(ClientError::Protocol(
                "streaming response is not chunked".into(),
            ));
        }
        Ok(response)
    }

    /// The next chunk's data and when its last byte was read; `None` after the terminating
    /// chunk. Chunks over `max` bytes are refused. Cancel-safe: nothing is consumed before a
    /// whole chunk is buffered.
    pub(crate) async fn next_chunk(
        &mut self,
        max: usize,
    ) -> Result<Option<(Bytes, Instant)>, ClientError> {
        loop {
            if let Some(line_end) = find(&self.buf, b"\r\n") {
                let size = parse_size(&self.buf[..line_end])?;
                if size > max {
                    return Err(ClientError::Protocol(format!(
                        "chunk of {size} bytes, longer than {max}"
                    )));
                }
                if size == 0 {
                    // Trailers, if any, carry nothing used here; the response is over.
                    self.buf.clear();
                    return Ok(None);
                }
                let start = line_end + 2;
                let end = start + size;
                if self.buf.len() >= end + 2 {
                    if &self.buf[end..end + 2] != b"\r\n" {
                        return Err(ClientError::Protocol("chunk not followed by CRLF".into()));
                    }
                    let chunk = self.buf.split_to(end + 2).freeze().slice(start..end);
                    return Ok(Some((chunk, self.read_at)));
                }
            } else if self.buf.len() > 64 {
                return Err(ClientError::Protocol("chunk size line too long".into()));
            }
            self.fill().await?;
        }
    }

    /// Reads more bytes; the end of the stream here is always premature.
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.buf.reserve(8 * 1024);
        let n = self.socket.read_buf(&mut self.buf).await?;
        self.read_at = Instant::now();
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )));
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The status, whether the body is chunked, and its Content-Length.
fn parse_head(head: &str) -> Result<(StatusCode, bool, Option<usize>), ClientError> {
    let bad = || ClientError::Protocol(format!("malformed response head {head:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(bad)?;
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad());
    }
    let status = parts
        .next()
        .and_then(|s| StatusCode::from_bytes(s.as_bytes()).ok())
        .ok_or_else(bad)?;
    let (mut chunked, mut length) = (false, None);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            length = value.parse().ok();
        }
    }
    Ok((status, chunked, length))
}

/// A chunk-size line: hex digits, then optional `;extensions`.
fn parse_size(line: &[u8]) -> Result<usize, ClientError> {
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
        while let Some((chunk, _)) = r.next_chunk(1024).await.unwrap() {
            got.push(String::from_utf8(chunk.to_vec()).unwrap());
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
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size(b"1f").unwrap(), 31);
        assert_eq!(parse_size(b"A;name=v").unwrap(), 10);
        assert!(parse_size(b"").is_err());
        assert!(parse_size(b"xyz").is_err());
    }
}

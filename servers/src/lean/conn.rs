//! A lean connection's socket and its writes: what the socket could not take yet, chunked
//! coding, and response heads as hyper writes them.

use std::io::{self, IoSlice};
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::write_timeout::WriteTimeout;

/// Items written together at most, as one chunk.
pub(super) const BURST: usize = 16;

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy)]
pub(super) enum Length {
    /// Chunked transfer coding: a stream.
    Chunked,
    /// `content-length`: a complete answer.
    Known(usize),
    /// Neither: a 101, after which the socket is another protocol's.
    Upgrade,
}

/// A subscriber's socket, and what it could not take yet.
pub(super) struct Conn {
    pub io: WriteTimeout<TcpStream>,
    /// Bytes the socket had no room for. Empty, and unallocated, but while the socket is full.
    pending: Vec<u8>,
}

impl Conn {
    pub(super) fn new(io: WriteTimeout<TcpStream>) -> Conn {
        Conn {
            io,
            pending: Vec::new(),
        }
    }

    /// Writes `items` as one chunk, as far as the socket takes it.
    pub(super) fn try_chunk(&mut self, items: &[Bytes]) {
        let len: usize = items.iter().map(Bytes::len).sum();
        if len == 0 {
            // An empty chunk would end the body.
            return;
        }
        let mut size = [0u8; 18];
        let size = chunk_size(len, &mut size);
        let mut parts: [&[u8]; BURST + 2] = [&[]; BURST + 2];
        parts[0] = size;
        for (part, item) in parts[1..].iter_mut().zip(items) {
            *part = item;
        }
        parts[items.len() + 1] = b"\r\n";
        self.try_write(&parts[..items.len() + 2]);
    }

    /// Writes `parts` in one system call as far as the socket takes them, and keeps the rest
    /// for [`Conn::flush`]. Nothing is written past bytes already pending.
    pub(super) fn try_write(&mut self, parts: &[&[u8]]) {
        let mut written = 0;
        if self.pending.is_empty() {
            let mut slices = [IoSlice::new(&[]); BURST + 2];
            for (slice, part) in slices.iter_mut().zip(parts) {
                *slice = IoSlice::new(part);
            }
            // Any error (a full socket, a peer gone) leaves the bytes pending; the flush meets
            // it again and decides.
            written = self
                .io
                .get_ref()
                .try_write_vectored(&slices[..parts.len()])
                .unwrap_or(0);
        }
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            self.pending.extend_from_slice(&part[skip..]);
        }
    }

    /// Waits until every pending byte is written (or the write timeout cuts the peer), then
    /// frees the buffer.
    pub(super) async fn flush(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.io.write_all(&self.pending).await?;
        self.pending = Vec::new();
        Ok(())
    }

    /// Reads what the peer has sent, without waiting: `Ok(None)` if nothing is there yet, an
    /// error if the peer closed or failed.
    pub(super) fn try_read(&self) -> io::Result<Option<Bytes>> {
        let mut buf = [0u8; 256];
        match self.io.get_ref().try_read(&mut buf) {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => Ok(Some(Bytes::copy_from_slice(&buf[..n]))),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads and drops what the peer sent after its request: nothing is answered on this
    /// connection again. An error, or the end of the input (the peer closed), ends the stream.
    pub(super) fn drain_input(&mut self) -> io::Result<()> {
        while self.try_read()?.is_some() {}
        Ok(())
    }
}

/// `len` as a chunk-size line, in `buf`.
fn chunk_size(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

/// The status line and headers of `head`, as hyper writes them for a body delimited by
/// `length`.
pub(super) fn head_bytes(head: &Response<()>, length: Length) -> Vec<u8> {
    let status = head.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match length {
        Length::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Length::Known(len) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Length::Upgrade => {}
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        let mut buf = [0; 18];
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (85, "55\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(chunk_size(len, &mut buf), want.as_bytes(), "{len}");
        }
    }

    #[test]
    fn the_head_is_what_hyper_would_send() {
        let head = crate::http::head(http::StatusCode::OK, "text/event-stream");
        let text = String::from_utf8(head_bytes(&head, Length::Chunked)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"));
        assert!(text.contains("\r\naccess-control-allow-origin: *\r\n"));
        assert!(text.contains("\r\ntransfer-encoding: chunked\r\ndate: "));
        assert!(text.ends_with(" GMT\r\n\r\n"));
        let head = crate::http::head(http::StatusCode::OK, "application/json");
        let text = String::from_utf8(head_bytes(&head, Length::Known(42))).unwrap();
        assert!(text.contains("\r\ncontent-length: 42\r\ndate: "));
    }
}

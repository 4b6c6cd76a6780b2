//! A lean connection's socket and its writes: what the socket could not take yet, chunked
//! coding, and response heads as hyper writes them.

use std::io;
use std::os::fd::AsRawFd;
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::chunked;
use crate::write_timeout::WriteTimeout;

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

/// What a lean connection's IO is built on: a socket it owns, or one shared with the publishing
/// side's fan-out ([`super::shared::Shared`]).
pub(super) trait AsTcp {
    /// The socket, for what never waits: tried writes and reads, readiness.
    fn tcp(&self) -> &TcpStream;
}

impl AsTcp for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

/// A subscriber's socket, and what it could not take yet.
pub(super) struct Conn<T = TcpStream> {
    pub io: WriteTimeout<T>,
    /// Bytes the socket had no room for. Empty, and unallocated, but while the socket is full.
    pending: Vec<u8>,
}

impl<T: AsTcp + AsyncWrite + Unpin> Conn<T> {
    pub(super) fn new(io: WriteTimeout<T>) -> Conn<T> {
        Conn {
            io,
            pending: Vec::new(),
        }
    }

    /// The IO alone, if everything written has gone to the socket; the connection, if bytes
    /// still wait for [`Conn::flush`].
    pub(super) fn into_flushed(self) -> Result<WriteTimeout<T>, Conn<T>> {
        match self.pending.is_empty() {
            true => Ok(self.io),
            false => Err(self),
        }
    }

    /// Writes `items` as one chunk, as far as the socket takes it.
    pub(super) fn try_chunk(&mut self, items: &[Bytes]) {
        chunked::try_chunk(
            self.io.get_ref().tcp().as_raw_fd(),
            items,
            &mut self.pending,
        );
    }

    /// Writes `parts` in one system call as far as the socket takes them, and keeps the rest
    /// for [`Conn::flush`]. Nothing is written past bytes already pending.
    pub(super) fn try_write(&mut self, parts: &[&[u8]]) {
        chunked::try_write(
            self.io.get_ref().tcp().as_raw_fd(),
            parts,
            &mut self.pending,
        );
    }

    /// Puts `bytes`, which someone else could not write to this socket, in front of what is
    /// written next (behind anything already pending).
    pub(super) fn push_pending(&mut self, bytes: Vec<u8>) {
        if self.pending.is_empty() {
            self.pending = bytes;
        } else {
            self.pending.extend_from_slice(&bytes);
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
        match self.io.get_ref().tcp().try_read(&mut buf) {
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

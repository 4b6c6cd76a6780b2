//! One HTTP/1.1 request written, and its response head read, straight off a counted socket:
//! the start of every long-lived subscription (chunked streams and WebSocket upgrades).
//!
//! The subscription's body is then read from the same small buffer by `chunked.rs` or
//! `wsconn.rs`. Keeping this off hyper's client is what lets a subscriber cost the load
//! generator a socket and a couple of kilobytes rather than a whole client connection.

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use super::arrival::{self, Clocks, LATE_READ};
use super::readbuf::ReadBuf;
use http::StatusCode;
use tokio::io::{AsyncWriteExt, Interest};

use crate::counters::Counters;
use crate::error::{status_error, ClientError};
use crate::http::{connect_socket, Socket};
use crate::target::Target;

/// Longest response head accepted.
pub(super) const MAX_HEAD: usize = 64 * 1024;

/// Room made in the buffer before each read. Small, because thousands of mostly idle
/// subscriptions each hold one; a burst of events still comes in a few reads (a 64-byte
/// payload is under 120 bytes framed), and a longer message grows the buffer as it needs.
const READ_SIZE: usize = 2048;

/// A socket and what was read from it but not yet consumed.
///
/// The socket may be lent to the load generator's readiness loop (`load/hot.rs`), which then
/// reads into the same buffer with [`read_from`](Self::read_from): see [`detach`](Self::detach).
#[derive(Debug)]
pub(super) struct RawConn {
    /// `None` while detached.
    socket: Option<Socket>,
    counters: Arc<Counters>,
    pub(super) buf: ReadBuf,
    /// When the bytes at the end of `buf` arrived (the kernel's stamp, [`arrival`]).
    pub(super) read_at: Instant,
}

/// What a response head says that matters here (header values lower-cased where case does
/// not matter).
#[derive(Debug, Default)]
pub(super) struct Head {
    pub(super) status: StatusCode,
    /// Whether the body is chunked.
    pub(super) chunked: bool,
    /// Its `Content-Length`.
    pub(super) length: Option<usize>,
    /// Its `Content-Type`, lower-cased.
    pub(super) content_type: String,
    /// Its `Sec-WebSocket-Accept`, as sent.
    pub(super) ws_accept: String,
}

impl RawConn {
    /// Connects, sends `GET path_and_query` with `headers`, and reads the response head.
    pub(super) async fn get(
        target: &Target,
        counters: &Arc<Counters>,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> Result<(RawConn, Head), ClientError> {
        let mut conn = RawConn::connect(target, counters).await?;
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
        conn.socket()?.write_all(head.as_bytes()).await?;
        let head_len = loop {
            if let Some(pos) = find(&conn.buf, b"\r\n\r\n") {
                break pos + 4;
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(ClientError::Protocol("response head too long".into()));
            }
            conn.fill().await?;
        };
        let head = std::str::from_utf8(&conn.buf[..head_len])
            .map_err(|_| ClientError::Protocol("response head is not UTF-8".into()))?;
        let head = parse_head(head)?;
        conn.buf.advance(head_len);
        Ok((conn, head))
    }

    /// Connects, with nothing sent yet.
    pub(super) async fn connect(
        target: &Target,
        counters: &Arc<Counters>,
    ) -> Result<RawConn, ClientError> {
        let socket = connect_socket(target, counters).await?;
        Ok(RawConn {
            socket: Some(socket),
            counters: counters.clone(),
            buf: ReadBuf::with_capacity(READ_SIZE),
            read_at: Instant::now(),
        })
    }

    /// The error an unexpected status makes, with the body a `Content-Length` announces
    /// (error answers are short; read within reason).
    pub(super) async fn refusal(mut self, head: &Head) -> ClientError {
        let want = head.length.unwrap_or(0).min(MAX_HEAD);
        while self.buf.len() < want {
            if self.fill().await.is_err() {
                break;
            }
        }
        status_error(head.status, &self.buf[..want.min(self.buf.len())])
    }

    /// What this connection's traffic is counted in.
    pub(super) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The socket, for writing; [`ClientError::Closed`] while it is detached.
    pub(super) fn socket(&mut self) -> Result<&mut Socket, ClientError> {
        self.socket.as_mut().ok_or(ClientError::Closed)
    }

    /// Takes the socket off the async runtime (deregistered, still non-blocking), so a plain
    /// readiness loop can read it; [`attach`](Self::attach) gives it back. `None` if it is
    /// detached already.
    pub(super) fn detach(&mut self) -> Option<std::io::Result<std::net::TcpStream>> {
        let socket = self.socket.take()?;
        Some(socket.into_inner().into_std())
    }

    /// Puts a socket [`detach`](Self::detach) took back on the current runtime.
    pub(super) fn attach(&mut self, socket: std::net::TcpStream) -> std::io::Result<()> {
        let tcp = tokio::net::TcpStream::from_std(socket)?;
        self.socket = Some(Socket::new(tcp, self.counters.clone()));
        Ok(())
    }

    /// While detached: one non-blocking read of `socket` into the buffer, counted as the
    /// runtime's reads are, timed by the kernel's stamp ([`arrival`]) against `clocks`. Returns the bytes read (`0`: the end of the stream) and whether
    /// the socket is now drained: a read that did not fill the room it had took everything
    /// there was (as tokio assumes too), which saves the read that would say `WouldBlock`.
    pub(super) fn read_from(
        &mut self,
        socket: &std::net::TcpStream,
        clocks: &Clocks,
    ) -> std::io::Result<(usize, bool)> {
        let room = self.buf.room(READ_SIZE);
        let space = room.len();
        let (n, stamp) = arrival::read(socket, room, clocks)?;
        self.buf.filled(n);
        self.read_at = self.arrival(n, stamp);
        self.counters.add_bytes_down(n as u64);
        Ok((n, n < space))
    }

    /// While detached: writes `out` to `socket` without blocking, counted; what was written
    /// leaves `out`. `WouldBlock` when the socket's buffer is full.
    pub(super) fn write_from(
        &mut self,
        socket: &std::net::TcpStream,
        out: &mut BytesMut,
    ) -> std::io::Result<()> {
        use bytes::Buf as _;
        while !out.is_empty() {
            let n = self.write_some(socket, out)?;
            out.advance(n);
        }
        Ok(())
    }

    /// While detached: writes what it can of `out` to `socket` without blocking, counted, and
    /// returns how much that was (`WouldBlock` when the socket's buffer is full).
    pub(super) fn write_some(
        &mut self,
        mut socket: &std::net::TcpStream,
        out: &[u8],
    ) -> std::io::Result<usize> {
        use std::io::Write as _;
        let n = socket.write(out)?;
        if n == 0 && !out.is_empty() {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        self.counters.add_bytes_up(n as u64);
        Ok(n)
    }

    /// Reads more bytes, timed by the kernel's stamp ([`arrival`]) as the readiness loop's
    /// reads are, so a delivery is timed alike wherever it was read. The end of the stream is
    /// an error here, for a subscription ends
    /// with its framing (a last chunk, a Close frame), never with a bare EOF.
    pub(super) async fn fill(&mut self) -> Result<(), ClientError> {
        let socket = self.socket.as_mut().ok_or(ClientError::Closed)?;
        let tcp = socket.get_ref();
        let room = self.buf.room(READ_SIZE);
        let (n, stamp) = loop {
            tcp.readable().await?;
            let read = tcp.try_io(Interest::READABLE, || {
                arrival::read(tcp, room, &Clocks::now())
            });
            match read {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                other => break other?,
            }
        };
        self.buf.filled(n);
        self.counters.add_bytes_down(n as u64);
        self.read_at = self.arrival(n, stamp);
        if n == 0 {
            return Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-response",
            )));
        }
        Ok(())
    }
}

impl RawConn {
    /// When `n` bytes just read arrived: the kernel's stamp, or (counted, so a report says how
    /// often) the clock now when there was none.
    ///
    /// A stamped read also counts whether it came more than [`LATE_READ`] after its bytes
    /// arrived: that is how a report knows whether the load generator kept up with its reading,
    /// which timers firing late do not tell once deliveries are timed by their stamps.
    fn arrival(&self, n: usize, stamp: Option<Instant>) -> Instant {
        match stamp {
            Some(at) => {
                if n > 0 {
                    self.counters.add_stamped_read();
                    if Instant::now().saturating_duration_since(at) > LATE_READ {
                        self.counters.add_late_read();
                    }
                }
                at
            }
            None => {
                if n > 0 {
                    self.counters.add_unstamped_read();
                }
                Instant::now()
            }
        }
    }
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(haystack, needle)
}

pub(super) fn parse_head(head: &str) -> Result<Head, ClientError> {
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
    let mut parsed = Head {
        status,
        ..Head::default()
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or_else(bad)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            parsed.chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            parsed.length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("content-type") {
            parsed.content_type = value.to_ascii_lowercase();
        } else if name.eq_ignore_ascii_case("sec-websocket-accept") {
            parsed.ws_accept = value.to_owned();
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let h = parse_head(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: abc=\r\nContent-Type: Text/Event-Stream\r\n\
             Transfer-Encoding: gzip, chunked\r\nContent-Length: 12\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.status.as_u16(), 101);
        assert_eq!(h.ws_accept, "abc=");
        assert_eq!(h.content_type, "text/event-stream");
        assert!(h.chunked);
        assert_eq!(h.length, Some(12));
        assert!(parse_head("SPDY/3 200 OK\r\n\r\n").is_err());
        assert!(parse_head("HTTP/1.1 abc OK\r\n\r\n").is_err());
        assert!(parse_head("HTTP/1.1 200 OK\r\nno colon\r\n\r\n").is_err());
    }
}

//! HTTP streaming: `GET /stream`, a chunked NDJSON body with one event (or gap) per line.
//!
//! Against Nchan's http-chunked subscriber each chunk is one raw message, with no delimiter, so
//! the body is read chunk by chunk off the wire (`chunked.rs`) instead of line by line. Nchan
//! sends no ids on this transport, so a reconnect starts from now.

use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use pushbench_protocol::Cursor;

use super::chunked::{Chunk, ChunkedResponse};
use super::raw::RawConn;
use super::{ClientConfig, Item, Position, Retry, Setup};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// Longest line accepted; a longer one means the server broke framing, not a big payload
/// (payloads are at most 64 KiB, so escaped JSON stays well below this).
pub(crate) const MAX_LINE: usize = 1 << 20;

/// Splits a byte stream into `\n`-terminated lines without copying them out again.
#[derive(Debug, Default)]
struct Lines {
    buf: BytesMut,
    /// Prefix of `buf` known to hold no `\n`.
    scanned: usize,
}

impl Lines {
    fn extend(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, its `\n` included.
    fn next_line(&mut self) -> Option<Bytes> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(pos) => {
                let line = self.buf.split_to(self.scanned + pos + 1).freeze();
                self.scanned = 0;
                Some(line)
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.scanned = 0;
    }
}

/// An HTTP streaming subscriber.
#[derive(Debug)]
pub struct StreamClient {
    setup: Setup,
    retry: Retry,
    /// The response, read off the socket: NDJSON lines in its chunks (pushbench), or one
    /// message per chunk (Nchan).
    conn: Option<ChunkedResponse>,
    lines: Lines,
    /// When the last chunk arrived: every line completed by it was received then.
    read_at: Instant,
    pos: Position,
}

impl StreamClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let setup = Setup::new(target, config, counters);
        let conn = open(&setup, setup.config.after.map(Cursor::bare)).await?;
        Ok(StreamClient {
            pos: Position::start(&setup),
            setup,
            retry: Retry::default(),
            conn: Some(conn),
            lines: Lines::default(),
            read_at: Instant::now(),
        })
    }

    /// See [`Client::next`](super::Client::next).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.buffered() {
                return item;
            }
            let Some(response) = self.conn.as_mut() else {
                let (setup, resume) = (&self.setup, self.pos.resume_cursor());
                let delay = setup.config.reconnect_delay;
                let fresh =
                    Box::pin(self.retry.reconnect(setup, delay, || open(setup, resume))).await?;
                self.conn = Some(fresh);
                continue;
            };
            let read = response.read_more(&mut self.retry, &self.setup).await;
            if !matches!(read, Ok(true)) {
                self.drop_connection();
                read?;
            }
        }
    }

    /// What [`next`](Self::next) would return from the bytes already read, without I/O.
    /// `None`: more bytes are needed, or a new connection when [`connection`](Self::connection)
    /// is gone. A readiness loop that reads the socket itself drives the client with this.
    pub(crate) fn buffered(&mut self) -> Option<Result<Item, ClientError>> {
        loop {
            while let Some(line) = self.lines.next_line() {
                match self.handle_line(&line) {
                    Ok(Some(item)) => return Some(Ok(item)),
                    Ok(None) => {}
                    Err(e) => return Some(Err(e)),
                }
            }
            let nchan = self.setup.counts_events();
            let response = self.conn.as_mut()?;
            match response.buffered_chunk(MAX_LINE) {
                Ok(Chunk::Data(message, read_at)) if nchan => {
                    let message = Bytes::copy_from_slice(message);
                    return Some(Ok(self.pos.numbered(message, read_at)));
                }
                Ok(Chunk::Data(chunk, read_at)) => {
                    self.read_at = read_at;
                    self.lines.extend(chunk);
                    if self.lines.buf.len() > MAX_LINE {
                        self.drop_connection();
                        return Some(Err(ClientError::Protocol(format!(
                            "line longer than {MAX_LINE} bytes"
                        ))));
                    }
                }
                Ok(Chunk::More) => return None,
                Ok(Chunk::End) => {
                    self.drop_connection();
                    return self.retry.ended(&self.setup, None).err().map(Err);
                }
                Err(e) => {
                    self.drop_connection();
                    return Some(Err(e));
                }
            }
        }
    }

    /// The open connection's socket and buffer, if there is one.
    pub(super) fn connection(&mut self) -> Option<&mut RawConn> {
        self.conn.as_mut().map(ChunkedResponse::conn_mut)
    }

    /// See [`Client::cursor`](super::Client::cursor).
    pub fn cursor(&self) -> u64 {
        self.pos.cursor
    }

    /// Forgets the connection and its partial line; the reconnect asks for that event again.
    fn drop_connection(&mut self) {
        self.conn = None;
        self.lines.clear();
    }

    fn handle_line(&mut self, line: &Bytes) -> Result<Option<Item>, ClientError> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None); // keep-alive
        }
        self.pos.envelope(line, self.read_at)
    }
}

/// Opens a connection and subscribes, returning once the server answered 200.
async fn open(setup: &Setup, after: Option<Cursor>) -> Result<ChunkedResponse, ClientError> {
    let path = setup.stream_path(after)?;
    let dialect = setup.dialect();
    let headers = dialect.stream_headers;
    let response = ChunkedResponse::open(&setup.target, &setup.counters, &path, headers).await?;
    if dialect.chunk_per_message && !response.is_chunked() {
        // Each chunk is one of Nchan's messages: without chunks there is no framing.
        return Err(ClientError::Protocol(
            "Nchan's streaming response is not chunked".into(),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{chunk, spawn, start_chunked};
    use pushbench_protocol::Transport;
    use std::time::Duration;

    #[test]
    fn lines_split_anywhere() {
        let mut lines = Lines::default();
        lines.extend(b"{\"a\"");
        assert_eq!(lines.next_line(), None);
        lines.extend(b":1}\n\n{\"b\":2}\n{\"c\"");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"a\":1}\n"[..]));
        assert_eq!(lines.next_line().as_deref(), Some(&b"\n"[..]));
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"b\":2}\n"[..]));
        assert_eq!(lines.next_line(), None);
        lines.extend(b":3}\n");
        assert_eq!(lines.next_line().as_deref(), Some(&b"{\"c\":3}\n"[..]));
    }

    use super::super::event_of as event;

    #[tokio::test]
    async fn reads_lines_across_chunks_and_resumes_after_reconnect() {
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            assert!(
                a.head.starts_with("GET /stream?topic=t&after=0 "),
                "{}",
                a.head
            );
            start_chunked(&mut a.socket, "application/x-ndjson").await;
            chunk(&mut a.socket, b"{\"id\":1,\"data\":\"o").await;
            chunk(
                &mut a.socket,
                b"ne\"}\n\n{\"gap\":{\"from\":2,\"to\":3}}\n{\"id\":4,",
            )
            .await;
            chunk(
                &mut a.socket,
                b"\"data\":\"four\"}\n{\"id\":5,\"data\":\"cut",
            )
            .await;
            drop(a); // ends mid-line: event 5 must come again after the reconnect
            let mut b = rx.recv().await.unwrap();
            assert!(
                b.head.starts_with("GET /stream?topic=t&after=4 "),
                "{}",
                b.head
            );
            start_chunked(&mut b.socket, "application/x-ndjson").await;
            chunk(
                &mut b.socket,
                b"{\"id\":5,\"data\":\"whole\"}\n{\"error\":\"x\"}\n",
            )
            .await;
            let _keep = b;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::new(Transport::Stream, "t");
        config.after = Some(0);
        config.reconnect_delay = Duration::from_millis(10);
        let mut client = StreamClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        assert_eq!(event(client.next().await.unwrap()), (1, "one".into()));
        assert_eq!(client.next().await.unwrap(), Item::Gap { from: 2, to: 3 });
        assert_eq!(event(client.next().await.unwrap()), (4, "four".into()));
        assert_eq!(event(client.next().await.unwrap()), (5, "whole".into()));
        assert_eq!(client.cursor(), 5);
        let err = client.next().await.unwrap_err();
        assert!(matches!(&err, ClientError::Server(m) if m == "x"), "{err}");
        let s = counters.snapshot();
        assert_eq!((s.connects, s.reconnects, s.requests), (2, 1, 2));
    }

    #[tokio::test]
    async fn without_reconnect_the_end_is_closed() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            start_chunked(&mut a.socket, "application/x-ndjson").await;
            chunk(&mut a.socket, b"{\"id\":1,\"data\":\"x\"}\n").await;
            chunk(&mut a.socket, b"").await;
        });
        let mut config = ClientConfig::new(Transport::Stream, "t");
        config.reconnect = false;
        let mut client =
            StreamClient::connect(Target::from_addr(addr), config, Counters::new_shared())
                .await
                .unwrap();
        assert_eq!(event(client.next().await.unwrap()), (1, "x".into()));
        assert!(matches!(client.next().await, Err(ClientError::Closed)));
        assert!(matches!(client.next().await, Err(ClientError::Closed)));
    }
}

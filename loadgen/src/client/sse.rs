//! Server-Sent Events: `GET /sse`, behaving as a browser's `EventSource` does.
//!
//! Reconnects wait the server's `retry:` delay when it sent one, and resume with the
//! `Last-Event-ID` header, whose value only `id:` fields set (gap events carry none).
//!
//! Against Nchan's eventsource subscriber the `id:` is Nchan's `time:tag` string: it is kept
//! as is for `Last-Event-ID`, and the delivery's id is the client's own count. Every event is a
//! message there, whatever its `event:` type (a publisher may set one).

use std::sync::Arc;
use std::time::Instant;

use pushbench_protocol::{Cursor, Transport, SSE_GAP_EVENT, SSE_RESET_EVENT};

use super::chunked::{Chunk, ChunkedResponse};
use super::raw::RawConn;
use super::stream::MAX_LINE;
use super::{subscribe_path, ClientConfig, Delivery, Item, Retry, Setup};
use crate::counters::Counters;
use crate::envelope::{parse_envelope, parse_gap, Envelope};
use crate::error::ClientError;
use crate::sse_parser::{SseEvent, SseParser};
use crate::target::Target;

/// An `EventSource`-like subscriber.
#[derive(Debug)]
pub struct SseClient {
    setup: Setup,
    retry: Retry,
    /// The event stream, read off the socket.
    conn: Option<ChunkedResponse>,
    parser: SseParser,
    /// When the last chunk arrived: every event completed by it was received then.
    read_at: Instant,
    cursor: u64,
}

impl SseClient {
    /// Subscribes. A starting `after` goes in `Last-Event-ID` too, never in the URL: a browser
    /// keeps its URL across reconnects, so the header must be the only cursor the server sees.
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let mut parser = SseParser::new();
        if target.profile().dialect().resume == crate::profile::Resume::NchanIds {
            if let Some(id) = super::nchan::start_id(config.after)? {
                parser.set_last_event_id(id.as_bytes());
            }
        } else if let Some(after) = config.after {
            parser.set_last_event_id(after.to_string().as_bytes());
        }
        let setup = Setup::new(target, config, counters);
        let conn = open(&setup, parser.last_event_id()).await?;
        Ok(SseClient {
            setup,
            retry: Retry::default(),
            conn: Some(conn),
            parser,
            read_at: Instant::now(),
            cursor: 0,
        })
    }

    /// See [`Client::next`](super::Client::next).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.buffered() {
                return item;
            }
            let Some(response) = self.conn.as_mut() else {
                let setup = &self.setup;
                let delay = self.parser.retry().unwrap_or(setup.config.reconnect_delay);
                let last_id = self.parser.last_event_id();
                // Boxed: a reconnect is rare, and inline its future would grow every
                // subscriber's task by the size of a connect.
                let fresh =
                    Box::pin(self.retry.reconnect(setup, delay, || open(setup, last_id))).await?;
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
            if let Some(event) = self.parser.next_event() {
                return Some(self.handle_event(event));
            }
            let response = self.conn.as_mut()?;
            match response.buffered_chunk(MAX_LINE) {
                Ok(Chunk::Data(chunk, read_at)) => {
                    self.read_at = read_at;
                    self.parser.feed(chunk);
                    if self.parser.buffered_len() > MAX_LINE {
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

    /// See [`Client::cursor`](super::Client::cursor): here, the last `id:` as a number
    /// (against Nchan, the number of events received).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The `Last-Event-ID` a reconnect would send (empty: none).
    pub fn last_event_id(&self) -> &[u8] {
        self.parser.last_event_id()
    }

    fn drop_connection(&mut self) {
        self.conn = None;
        self.parser.reset_stream();
    }

    fn handle_event(&mut self, event: SseEvent) -> Result<Item, ClientError> {
        if self.setup.counts_events() {
            self.cursor += 1;
            return Ok(Item::Event(Delivery {
                id: self.cursor,
                payload: event.data,
                received: self.read_at,
                asked_late: None,
            }));
        }
        match event.event_type() {
            b"message" => {
                // `EPOCH-ID`, or a bare id from a server that does not name its lives.
                let id = std::str::from_utf8(&event.last_event_id)
                    .ok()
                    .and_then(|s| s.parse::<Cursor>().ok())
                    .ok_or_else(|| {
                        ClientError::Protocol(format!(
                            "SSE event without a cursor id (last id {:?})",
                            String::from_utf8_lossy(&event.last_event_id)
                        ))
                    })?
                    .id;
                self.cursor = id;
                Ok(Item::Event(Delivery {
                    id,
                    payload: event.data,
                    received: self.read_at,
                    asked_late: None,
                }))
            }
            t if t == SSE_GAP_EVENT.as_bytes() => {
                let gap = parse_gap(&event.data)?;
                Ok(Item::Gap {
                    from: gap.from,
                    to: gap.to,
                })
            }
            // Its `id:` (`EPOCH-0`) already moved the last event id into the new life, as a
            // browser's does.
            t if t == SSE_RESET_EVENT.as_bytes() => match parse_envelope(&event.data)? {
                Envelope::Hello(hello) if hello.reset => {
                    self.cursor = hello.after;
                    Ok(Item::Reset { epoch: hello.epoch })
                }
                _ => Err(ClientError::Protocol(
                    "an SSE reset event without a reset object".into(),
                )),
            },
            other => Err(ClientError::Protocol(format!(
                "unexpected SSE event type {:?}",
                String::from_utf8_lossy(other)
            ))),
        }
    }
}

/// Opens a connection and subscribes, returning once the server answered 200 with an event
/// stream (anything else fails the connection, as in a browser).
async fn open(setup: &Setup, last_event_id: &[u8]) -> Result<ChunkedResponse, ClientError> {
    let path = subscribe_path(Transport::Sse, &setup.config.topic, None, None);
    // A header value may not hold control characters; an id with one cannot be sent back.
    let id = std::str::from_utf8(last_event_id)
        .ok()
        .filter(|id| !id.bytes().any(|b| b.is_ascii_control()))
        .ok_or_else(|| ClientError::Protocol("last event id is not a valid header value".into()))?;
    let mut headers = vec![
        ("Accept", "text/event-stream"),
        ("Cache-Control", "no-cache"),
    ];
    if !id.is_empty() {
        headers.push(("Last-Event-ID", id));
    }
    let response = ChunkedResponse::open(&setup.target, &setup.counters, &path, &headers).await?;
    if !response.content_type().starts_with("text/event-stream") {
        return Err(ClientError::Protocol(
            "SSE response is not text/event-stream".into(),
        ));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{chunk, spawn, start_chunked};
    use std::time::Duration;

    use super::super::event_of as event;

    #[tokio::test]
    async fn events_gaps_and_browser_style_reconnect() {
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let head = a.head.to_ascii_lowercase();
            assert!(head.starts_with("get /sse?topic=t http/1.1\r\n"), "{head}");
            assert!(head.contains("last-event-id: 2\r\n"), "{head}");
            start_chunked(&mut a.socket, "text/event-stream").await;
            chunk(&mut a.socket, b"retry: 30\n: hi\n\nid: 3\ndata: th").await;
            chunk(
                &mut a.socket,
                b"ree\r\n\r\nevent: gap\ndata: {\"from\":4,\"to\":6}\n\nid: 7\r",
            )
            .await;
            chunk(&mut a.socket, b"\ndata: seven\n\nid: 8\ndata: lost").await;
            drop(a);
            let mut b = rx.recv().await.unwrap();
            let head = b.head.to_ascii_lowercase();
            assert!(head.starts_with("get /sse?topic=t http/1.1\r\n"), "{head}");
            assert!(head.contains("last-event-id: 7\r\n"), "{head}");
            start_chunked(&mut b.socket, "text/event-stream; charset=utf-8").await;
            chunk(
                &mut b.socket,
                b"id: 8\ndata: eight\n\nevent: other\ndata: x\n\n",
            )
            .await;
            let _keep = b;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::new(Transport::Sse, "t");
        config.after = Some(2);
        // Long enough to notice if the server's `retry: 30` were not used.
        config.reconnect_delay = Duration::from_secs(20);
        let mut client = SseClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        assert_eq!(event(client.next().await.unwrap()), (3, "three".into()));
        assert_eq!(client.next().await.unwrap(), Item::Gap { from: 4, to: 6 });
        assert_eq!(event(client.next().await.unwrap()), (7, "seven".into()));
        let eight = tokio::time::timeout(Duration::from_secs(5), client.next()).await;
        assert_eq!(event(eight.unwrap().unwrap()), (8, "eight".into()));
        assert_eq!(client.cursor(), 8);
        assert!(matches!(client.next().await, Err(ClientError::Protocol(_))));
        let s = counters.snapshot();
        assert_eq!((s.connects, s.reconnects), (2, 1));
    }

    #[tokio::test]
    async fn wrong_content_type_fails() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            start_chunked(&mut a.socket, "application/json").await;
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let config = ClientConfig::new(Transport::Sse, "t");
        let err = SseClient::connect(Target::from_addr(addr), config, Counters::new_shared())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err}");
    }
}

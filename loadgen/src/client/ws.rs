//! WebSocket: `GET /ws` upgraded, one text frame per event or gap; text frames sent upstream
//! are published to the topic.
//!
//! Against Nchan's websocket subscriber each frame is one raw message (binary for a message
//! published as `application/octet-stream`). Frames carry no ids, so a reconnect starts from
//! now, and there is no upstream publishing on a subscriber location.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pushbench_protocol::{Cursor, Transport};

use super::wsconn::{WsConn, WsMessage};
use super::{ClientConfig, Item, Position, Retry, Setup};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// How long a close may take to go out before the connection is dropped anyway.
pub(super) const CLOSE_REPLY_TIMEOUT: Duration = Duration::from_secs(1);

/// A WebSocket subscriber that can also publish upstream.
#[derive(Debug)]
pub struct WsClient {
    setup: Setup,
    retry: Retry,
    ws: Option<WsConn>,
    pos: Position,
}

impl WsClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let setup = Setup::new(target, config, counters);
        let ws = open(&setup, setup.config.after.map(Cursor::bare)).await?;
        Ok(WsClient {
            pos: Position::start(&setup),
            setup,
            retry: Retry::default(),
            ws: Some(ws),
        })
    }

    /// See [`Client::next`](super::Client::next).
    ///
    /// Reading is also what answers the server's pings, so keep calling this.
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.buffered() {
                return item;
            }
            let Some(ws) = self.ws.as_mut() else {
                // Connected afresh: the handshake's read may have brought frames already.
                self.ensure_connected().await?;
                continue;
            };
            let ending = match ws.advance().await {
                Ok(true) => continue,
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            connection_ended(&mut self.ws, &mut self.retry, &self.setup, ending)?;
        }
    }

    /// What [`next`](Self::next) would return from the bytes already read, without I/O.
    /// `None`: frames must be written first, more bytes read, or (when
    /// [`connection`](Self::connection) is gone) a new connection made. A readiness loop that
    /// reads and writes the socket itself drives the client with this.
    pub(crate) fn buffered(&mut self) -> Option<Result<Item, ClientError>> {
        let nchan = self.setup.counts_events();
        loop {
            let ws = self.ws.as_mut()?;
            let ending = match ws.buffered() {
                Ok(Some((WsMessage::Text(text), received))) => {
                    match self.handle_text(text, received) {
                        Ok(Some(item)) => return Some(Ok(item)),
                        Ok(None) => continue,
                        Err(e) => return Some(Err(e)),
                    }
                }
                Ok(Some((WsMessage::Binary(data), received))) if nchan => {
                    return Some(Ok(self.pos.numbered(data, received)));
                }
                Ok(Some((WsMessage::Binary(_), _))) => {
                    return Some(Err(ClientError::Protocol("unexpected binary frame".into())));
                }
                Ok(None) => return None,
                ending => ending,
            };
            let ended = connection_ended(&mut self.ws, &mut self.retry, &self.setup, ending);
            return ended.err().map(Err);
        }
    }

    /// The open connection, if there is one.
    pub(crate) fn connection(&mut self) -> Option<&mut WsConn> {
        self.ws.as_mut()
    }

    pub async fn send_upstream(&mut self, payload: &str) -> Result<(), ClientError> {
        if !self.setup.dialect().upstream {
            return Err(ClientError::Unsupported(Transport::Ws));
        }
        let ws = self.ensure_connected().await?;
        if let Err(e) = ws.send_text(payload.as_bytes()).await {
            self.ws = None;
            self.setup.counters.add_error();
            return Err(e);
        }
        Ok(())
    }

    /// See [`Client::cursor`](super::Client::cursor).
    pub fn cursor(&self) -> u64 {
        self.pos.cursor
    }

    async fn ensure_connected(&mut self) -> Result<&mut WsConn, ClientError> {
        if self.ws.is_none() {
            let (setup, resume) = (&self.setup, self.pos.resume_cursor());
            let delay = setup.config.reconnect_delay;
            // Boxed: a reconnect is rare, and inline its future would grow every subscriber's
            // task by the size of a connect and upgrade.
            let fresh =
                Box::pin(self.retry.reconnect(setup, delay, || open(setup, resume))).await?;
            self.ws = Some(fresh);
        }
        self.ws.as_mut().ok_or(ClientError::Closed)
    }

    fn handle_text(
        &mut self,
        frame: Bytes,
        received: Instant,
    ) -> Result<Option<Item>, ClientError> {
        if self.setup.counts_events() {
            return Ok(Some(self.pos.numbered(frame, received)));
        }
        self.pos.envelope(&frame, received)
    }
}

/// What ends a connection: a Close (already answered by [`WsConn`]), an error, or the end of
/// the stream (`ending`, anything [`WsConn::next`] returned that is not a data message). The
/// socket is let go at once instead of waiting for the server to close TCP: nothing can
/// follow a Close, and a server slow to hang up must not delay the reconnect. `Ok` when the
/// retry policy says to reconnect.
pub(super) fn connection_ended(
    ws: &mut Option<WsConn>,
    retry: &mut Retry,
    setup: &Setup,
    ending: Result<Option<(WsMessage, Instant)>, ClientError>,
) -> Result<(), ClientError> {
    *ws = None;
    match ending {
        // Framing is lost: the connection is gone, and the caller hears why.
        Err(e) if !e.is_connection_error() => {
            setup.counters.add_error();
            Err(e)
        }
        Err(e) => retry.ended(setup, Some(e)),
        Ok(_) => retry.ended(setup, None),
    }
}

/// Connects and upgrades, returning once the server answered 101.
async fn open(setup: &Setup, after: Option<Cursor>) -> Result<WsConn, ClientError> {
    WsConn::open(&setup.target, &setup.counters, &setup.stream_path(after)?).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::{self, Message};

    use super::super::event_of as event;

    // tungstenite's header callback must return its own (large) error response type.
    #[allow(clippy::result_large_err)]
    #[tokio::test]
    async fn frames_upstream_pings_and_reconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up_tx, mut up_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_hdr_async(
                socket,
                |req: &tungstenite::handshake::server::Request, resp| {
                    assert_eq!(req.uri().to_string(), "/ws?topic=t");
                    Ok(resp)
                },
            )
            .await
            .unwrap();
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
            ws.send(Message::text(r#"{"id":1,"data":"one"}"#))
                .await
                .unwrap();
            ws.send(Message::text(r#"{"gap":{"from":2,"to":3}}"#))
                .await
                .unwrap();
            // The pong (answered while the client reads) comes before its upstream frame.
            let mut saw_pong = false;
            while let Some(Ok(m)) = ws.next().await {
                match m {
                    Message::Pong(p) => saw_pong = &p[..] == b"p",
                    Message::Text(t) => {
                        up_tx.send((saw_pong, t.to_string())).unwrap();
                        break;
                    }
                    _ => {}
                }
            }
            ws.send(Message::text(r#"{"error":"refused"}"#))
                .await
                .unwrap();
            ws.close(None).await.unwrap();
            // The client hangs up after replying, without waiting for this side to.
            while ws.next().await.is_some() {}
            // The server closes TCP after the closing handshake; the client waits for that.
            drop(ws);
            // The reconnect resumes after the gap's end; a 404 first, then the real thing.
            let (mut socket, _) = listener.accept().await.unwrap();
            let head = crate::http::test_server::read_head(&mut socket).await;
            assert!(head.starts_with("GET /ws?topic=t&after=3 "), "{head}");
            let body = r#"{"error":"busy"}"#;
            let msg = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            socket.write_all(msg.as_bytes()).await.unwrap();
            drop(socket);
            let (socket, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(socket).await.unwrap();
            ws.send(Message::text(r#"{"id":4,"data":"f\u00fcnf"}"#))
                .await
                .unwrap();
            std::future::pending::<()>().await;
        });
        let counters = Counters::new_shared();
        let mut config = ClientConfig::new(Transport::Ws, "t");
        config.reconnect_delay = Duration::from_millis(10);
        let mut client = WsClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        assert_eq!(event(client.next().await.unwrap()), (1, "one".into()));
        assert_eq!(client.next().await.unwrap(), Item::Gap { from: 2, to: 3 });
        client.send_upstream("hello").await.unwrap();
        assert_eq!(up_rx.recv().await.unwrap(), (true, "hello".to_owned()));
        let err = client.next().await.unwrap_err();
        assert_eq!(err.server_message(), Some("refused"));
        // The Close ends the connection; the first reconnect gets an error status.
        let err = client.next().await.unwrap_err();
        assert!(
            matches!(&err, ClientError::Status { status, .. } if status.as_u16() == 503),
            "{err}"
        );
        assert_eq!(event(client.next().await.unwrap()), (4, "fünf".into()));
        assert_eq!(client.cursor(), 4);
        let s = counters.snapshot();
        assert_eq!((s.connects, s.reconnects, s.requests), (3, 1, 3));
    }
}

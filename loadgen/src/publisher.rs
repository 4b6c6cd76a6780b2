//! [`Publisher`]: `POST /publish` on one keep-alive connection (Nchan: `POST /pub`; the
//! gateway: its send API, [`crate::gateway::send`]).
//!
//! Publishes to pushbench and Nchan are written by hand ([`PostConn`]), so that a publish
//! reaches its socket within a µs or two of its due time; the gateway's send API, whose
//! requests carry FCM's JSON, goes through hyper.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;

use crate::client::post::PostConn;
use crate::counters::Counters;
use crate::envelope::parse_published;
use crate::error::{check_topic, status_error, ClientError};
use crate::http::HttpConn;
use crate::target::Target;

/// Publishes events over one keep-alive HTTP/1.1 connection, counted like a client's.
#[derive(Debug)]
pub struct Publisher {
    target: Target,
    counters: Arc<Counters>,
    /// The gateway's connection.
    conn: Option<HttpConn>,
    /// Pushbench's or Nchan's connection.
    post: Option<PostConn>,
    /// Publishes accepted so far: against Nchan, whose answer has no integer id, the "id" a
    /// publish returns.
    accepted: u64,
}

impl Publisher {
    /// Opens the connection.
    pub async fn connect(
        target: &Target,
        counters: Arc<Counters>,
    ) -> Result<Publisher, ClientError> {
        let (mut conn, mut post) = (None, None);
        if target.gateway().is_some() {
            conn = Some(HttpConn::open(target, &counters).await?);
        } else {
            post = Some(PostConn::open(target, &counters).await?);
        }
        Ok(Publisher {
            target: target.clone(),
            counters,
            conn,
            post,
            accepted: 0,
        })
    }

    /// Publishes `payload` to `topic` and returns the id the server gave it. Nchan gives none
    /// (its message ids are `time:tag` strings, and only in the answer's text): there the id
    /// returned is this publisher's count of accepted publishes, 1, 2, 3...
    ///
    /// A connection the server closed while idle is replaced before sending. When a reused
    /// connection fails and hyper reports the request was never sent (canceled), it is sent
    /// once more on a new connection. Any other failure is returned, not retried: the server
    /// may have stored the event before the connection broke, and a retry would publish it
    /// twice.
    pub async fn publish(&mut self, topic: &str, payload: &[u8]) -> Result<u64, ClientError> {
        check_topic(topic)?;
        if self.target.gateway().is_none() {
            return self.post(topic, payload).await;
        }
        let body = Bytes::copy_from_slice(payload);
        let mut retried = false;
        loop {
            let reused = self
                .conn
                .as_ref()
                .is_some_and(|c| !c.is_closed() && c.served());
            match self.try_publish(topic, body.clone()).await {
                Ok(id) => {
                    self.accepted += 1;
                    return Ok(id.unwrap_or(self.accepted));
                }
                Err(e) if e.is_connection_error() => {
                    self.conn = None;
                    let never_sent = matches!(&e, ClientError::Hyper(h) if h.is_canceled());
                    if reused && never_sent && !retried {
                        retried = true;
                        tracing::debug!("publish connection lost ({e}); retrying on a new one");
                        continue;
                    }
                    self.counters.add_error();
                    return Err(e);
                }
                Err(e) => {
                    self.counters.add_error();
                    return Err(e);
                }
            }
        }
    }

    /// A publish to pushbench or Nchan, written by hand. A connection the server closed while
    /// idle is replaced before anything is written to it; a failure after that is returned,
    /// not retried, for the server may have stored the event.
    async fn post(&mut self, topic: &str, payload: &[u8]) -> Result<u64, ClientError> {
        if self.post.as_mut().is_some_and(|c| c.closed_by_peer()) {
            self.post = None;
        }
        let conn = match &mut self.post {
            Some(conn) => conn,
            slot => {
                let conn = PostConn::open(&self.target, &self.counters).await?;
                self.counters.add_reconnect();
                slot.insert(conn)
            }
        };
        let profile = self.target.profile();
        let sent = conn
            .post(
                self.target.host(),
                format_args!("{}?topic={topic}", profile.publish_path()),
                "text/plain; charset=utf-8",
                payload,
            )
            .await;
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => {
                self.post = None;
                self.counters.add_error();
                return Err(e);
            }
        };
        if reply.close {
            self.post = None;
        }
        let names_id = profile.dialect().publish_names_id;
        let id = match reply.status {
            s if names_id && s.is_success() => {
                parse_published(&reply.body).map_err(ClientError::from)
            }
            // Nchan: 201 Created when subscribers were present, 202 Accepted when none were.
            StatusCode::CREATED | StatusCode::ACCEPTED if !names_id => Ok(self.accepted + 1),
            _ => Err(status_error(reply.status, &reply.body)),
        };
        match id {
            Ok(id) => {
                self.accepted += 1;
                Ok(id)
            }
            Err(e) => {
                self.counters.add_error();
                Err(e)
            }
        }
    }

    /// One publish through the gateway's API; `Ok(None)` when accepted without an id.
    async fn try_publish(&mut self, topic: &str, body: Bytes) -> Result<Option<u64>, ClientError> {
        let conn = match &mut self.conn {
            Some(conn) if !conn.is_closed() => conn,
            slot => {
                *slot = None;
                let conn = HttpConn::open(&self.target, &self.counters).await?;
                self.counters.add_reconnect();
                slot.insert(conn)
            }
        };
        if let Some(options) = self.target.gateway() {
            return crate::gateway::send(conn, options, topic, &body)
                .await
                .map(Some);
        }
        let path = format!("{}?topic={topic}", self.target.profile().publish_path());
        let req = conn
            .request(Method::POST, &path)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Full::new(body))
            .map_err(|e| ClientError::Protocol(format!("invalid request {path:?}: {e}")))?;
        let response = conn.send(req).await?;
        let status = response.status();
        let body = conn.read_body(response.into_body()).await?;
        let names_id = self.target.profile().dialect().publish_names_id;
        match status {
            s if names_id && s.is_success() => Ok(Some(parse_published(&body)?)),
            StatusCode::CREATED | StatusCode::ACCEPTED if !names_id => Ok(None),
            _ => Err(status_error(status, &body)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{read_head, respond, spawn};
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn publishes_and_survives_an_idle_close() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            assert!(
                a.head.starts_with("POST /publish?topic=t HTTP/1.1\r\n"),
                "{}",
                a.head
            );
            let mut body = [0u8; 5];
            a.socket.read_exact(&mut body).await.unwrap();
            assert_eq!(&body, b"hello");
            respond(&mut a.socket, "200 OK", "application/json", r#"{"id":1}"#).await;
            drop(a);
            let mut b = rx.recv().await.unwrap();
            let mut body = [0u8; 2];
            b.socket.read_exact(&mut body).await.unwrap();
            respond(&mut b.socket, "200 OK", "application/json", r#"{"id":2}"#).await;
            let _ = read_head(&mut b.socket).await;
            respond(
                &mut b.socket,
                "413 Payload Too Large",
                "application/json",
                r#"{"error":"too big"}"#,
            )
            .await;
            std::future::pending::<()>().await;
        });
        let counters = Counters::new_shared();
        let mut publisher = Publisher::connect(&Target::from_addr(addr), counters.clone())
            .await
            .unwrap();
        assert_eq!(publisher.publish("t", b"hello").await.unwrap(), 1);
        // Let the close reach the client first, as with a real idle timeout.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(publisher.publish("t", b"hi").await.unwrap(), 2);
        let err = publisher.publish("t", b"x").await.unwrap_err();
        assert_eq!(err.server_message(), Some("too big"));
        assert!(matches!(
            publisher.publish("bad topic", b"x").await,
            Err(ClientError::Topic { .. })
        ));
        let s = counters.snapshot();
        assert_eq!(
            (s.connects, s.reconnects, s.requests, s.errors),
            (2, 1, 3, 1)
        );
    }
}

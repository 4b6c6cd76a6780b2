//! Publishing to Pushpin: each event stored in the hub, then posted to Pushpin's HTTP publish
//! API as one item per technique's channel, in id order, each with that technique's bytes.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

use crate::event::Event;
use crate::http::ApiError;
use crate::hub::{Batch, Hub};
use crate::protocol::Cursor;
use crate::transport::poll::encode_batch;

use super::channel::{channel, Channel};

/// Publishes to Pushpin on one keep-alive connection.
///
/// One lock covers both the hub's publish (which gives the id) and the post to Pushpin, so
/// events reach Pushpin in id order and each item's `prev-id` is the id Pushpin saw last.
#[derive(Debug)]
pub(crate) struct GripPublisher {
    addr: SocketAddr,
    conn: Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl GripPublisher {
    pub(crate) fn new(addr: SocketAddr) -> GripPublisher {
        GripPublisher {
            addr,
            conn: Mutex::new(None),
        }
    }

    /// Stores `payload` as the next event of `topic` and publishes it to Pushpin; its id.
    pub(crate) async fn publish(
        &self,
        hub: &Hub,
        topic: &str,
        payload: &[u8],
    ) -> Result<u64, ApiError> {
        let mut conn = self.conn.lock().await;
        let id = hub.publish(topic, payload)?;
        let batch = hub.read(topic, Some(Cursor::bare(id - 1)), 1)?;
        let Some(event) = batch.events.first() else {
            // Only a replay buffer of zero events could lose it this fast.
            return Err(ApiError::Unavailable(format!(
                "event {id} left the replay buffer before it was published"
            )));
        };
        let body = items(topic, event, &batch);
        let ok = match self.post(&mut conn, body.clone()).await {
            Ok(status) => status,
            // A kept connection Pushpin closed meanwhile: once more on a fresh one.
            Err(_) => {
                *conn = None;
                self.post(&mut conn, body).await.map_err(|e| {
                    ApiError::Unavailable(format!("Pushpin's publish API at {}: {e}", self.addr))
                })?
            }
        };
        if !ok.is_success() {
            return Err(ApiError::Unavailable(format!(
                "Pushpin's publish API at {} answered {ok}",
                self.addr
            )));
        }
        Ok(id)
    }

    async fn post(
        &self,
        conn: &mut Option<SendRequest<Full<Bytes>>>,
        body: Bytes,
    ) -> Result<StatusCode, Box<dyn std::error::Error + Send + Sync>> {
        let send = match conn {
            Some(c) if !c.is_closed() => c,
            slot => {
                let stream = TcpStream::connect(self.addr).await?;
                stream.set_nodelay(true)?;
                let (send, driver) = http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(driver);
                slot.insert(send)
            }
        };
        send.ready().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri("/publish/")
            .header(header::HOST, self.addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let resp = send.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

/// The publish body: one item per technique's channel, each carrying that technique's bytes.
fn items(topic: &str, event: &Arc<Event>, batch: &Batch) -> Bytes {
    let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
    let (id, prev) = (event.id().to_string(), (event.id() - 1).to_string());
    let body = json!({ "items": [
        { "channel": channel(Channel::Stream, topic),
          "formats": { "http-stream": { "content": text(event.ndjson()) } } },
        { "channel": channel(Channel::Sse, topic),
          "formats": { "http-stream": { "content": text(event.sse()) } } },
        // A held long poll is answered with this event as a batch. The ids let Pushpin tell a
        // poll held after an older id, which it asks the origin again for. (A hint, which has
        // Pushpin ask the origin again for every held poll, lost more and was 5x slower at 100
        // long pollers: 28-39 against 5-7 ms p50.)
        { "channel": channel(Channel::LongPoll, topic), "id": id, "prev-id": prev,
          "formats": { "http-response": {
              "code": 200,
              "headers": { "Content-Type": "application/json", "Cache-Control": "no-store",
                           "Access-Control-Allow-Origin": "*" },
              "body": text(&encode_batch(batch)) } } },
        { "channel": channel(Channel::Ws, topic),
          "formats": { "ws-message": { "content": text(&event.json()) } } },
    ]});
    Bytes::from(body.to_string())
}

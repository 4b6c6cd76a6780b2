//! One HTTP/1.1 connection driven inline, and the [`get`] helper.
//!
//! hyper's `Connection` future is usually spawned on its own task. Here the client polls it
//! itself whenever it waits on the connection: that halves the task count of a run with
//! thousands of clients, and a response's bytes are handed over in the same poll that read
//! them, so receive timestamps carry no cross-task wake-up delay.

use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::poll_fn;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::counters::{Counters, CountingStream};
use crate::error::ClientError;
use crate::target::Target;

/// A socket as every client uses it: counted.
pub(crate) type Socket = CountingStream<TcpStream>;
type ReqBody = Full<Bytes>;
type Driver = http1::Connection<TokioIo<Socket>, ReqBody>;

/// Opens a counted TCP connection with Nagle off (every message here is latency-sensitive).
pub(crate) async fn connect_socket(
    target: &Target,
    counters: &Arc<Counters>,
) -> Result<Socket, ClientError> {
    let addr = target.addr();
    let tcp = match target.source() {
        None => TcpStream::connect(addr).await,
        Some(ip) => {
            let socket = if ip.is_ipv4() {
                tokio::net::TcpSocket::new_v4()
            } else {
                tokio::net::TcpSocket::new_v6()
            };
            let bound = socket.and_then(|s| {
                s.bind(std::net::SocketAddr::new(ip, 0))?;
                Ok(s)
            });
            match bound {
                Ok(s) => s.connect(addr).await,
                Err(e) => Err(e),
            }
        }
    }
    .map_err(|source| ClientError::Connect { addr, source })?;
    tcp.set_nodelay(true)?;
    // Stamped from the first byte, so every delivery has its arrival time (client/arrival.rs).
    crate::client::arrival::enable(&tcp)?;
    counters.add_connect();
    Ok(CountingStream::new(tcp, counters.clone()))
}

/// A keep-alive HTTP/1.1 connection whose driver is polled by its owner.
#[derive(Debug)]
pub(crate) struct HttpConn {
    send: http1::SendRequest<ReqBody>,
    /// `None` once the connection ended; dropping it fails whatever still waits on it.
    driver: Option<Driver>,
    host: HeaderValue,
    counters: Arc<Counters>,
    /// A response already came back on this connection, so a failure of the next request may
    /// just mean the server closed it while idle.
    served: bool,
}

impl HttpConn {
    /// Connects and performs the (local) HTTP/1.1 handshake.
    pub(crate) async fn open(
        target: &Target,
        counters: &Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let socket = connect_socket(target, counters).await?;
        let (send, driver) = http1::handshake(TokioIo::new(socket)).await?;
        Ok(HttpConn {
            send,
            driver: Some(driver),
            host: target.host_header().clone(),
            counters: counters.clone(),
            served: false,
        })
    }

    /// Whether the connection is known to be unusable.
    pub(crate) fn is_closed(&self) -> bool {
        self.driver.is_none() || self.send.is_closed()
    }

    /// Whether an earlier request on this connection got its response.
    pub(crate) fn served(&self) -> bool {
        self.served
    }

    /// A request to `path_and_query` with the `Host` header set.
    pub(crate) fn request(&self, method: Method, path_and_query: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(header::HOST, self.host.clone())
    }

    fn poll_driver(driver: &mut Option<Driver>, cx: &mut Context<'_>) {
        if let Some(d) = driver {
            if let Poll::Ready(result) = Pin::new(d).poll(cx) {
                if let Err(e) = result {
                    tracing::debug!("http connection ended: {e}");
                }
                *driver = None;
            }
        }
    }

    /// Sends a request and waits for the response head.
    ///
    /// Dropping the future mid-way makes hyper close the connection (HTTP/1.1 cannot abandon
    /// one request and keep the connection), which [`is_closed`](Self::is_closed) then reports.
    pub(crate) async fn send(
        &mut self,
        req: Request<ReqBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        let HttpConn {
            send,
            driver,
            counters,
            served,
            ..
        } = self;
        poll_fn(|cx| {
            Self::poll_driver(driver, cx);
            send.poll_ready(cx)
        })
        .await?;
        let mut response = pin!(send.send_request(req));
        counters.add_request();
        let response = poll_fn(|cx| {
            Self::poll_driver(driver, cx);
            response.as_mut().poll(cx)
        })
        .await?;
        *served = true;
        Ok(response)
    }

    /// The next data chunk of `body` (`None` at its end), driving the connection meanwhile.
    ///
    /// Cancel-safe: a chunk is only taken from hyper in the poll that returns it.
    pub(crate) async fn next_chunk(
        &mut self,
        body: &mut Incoming,
    ) -> Result<Option<Bytes>, ClientError> {
        loop {
            let frame: Option<Result<Frame<Bytes>, hyper::Error>> = poll_fn(|cx| {
                Self::poll_driver(&mut self.driver, cx);
                Pin::new(&mut *body).poll_frame(cx)
            })
            .await;
            match frame {
                None => return Ok(None),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(frame)) => {
                    // Trailers carry nothing pushbench uses.
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            return Ok(Some(data));
                        }
                    }
                }
            }
        }
    }

    /// The whole body; a single-chunk body (the usual case) is returned without a copy.
    pub(crate) async fn read_body(&mut self, mut body: Incoming) -> Result<Bytes, ClientError> {
        let Some(first) = self.next_chunk(&mut body).await? else {
            return Ok(Bytes::new());
        };
        let Some(second) = self.next_chunk(&mut body).await? else {
            return Ok(first);
        };
        let mut all = BytesMut::with_capacity(first.len() + second.len());
        all.extend_from_slice(&first);
        all.extend_from_slice(&second);
        while let Some(more) = self.next_chunk(&mut body).await? {
            all.extend_from_slice(&more);
        }
        Ok(all.freeze())
    }
}

/// A body-less request body.
pub(crate) fn empty() -> ReqBody {
    Full::new(Bytes::new())
}

/// One `GET` on a fresh connection: the status and the whole body, whatever the status.
///
/// Meant for tests and one-off queries (`/stats`), so its bytes are not counted anywhere.
pub async fn get(
    target: &Target,
    path_and_query: &str,
) -> Result<(StatusCode, Bytes), ClientError> {
    let counters = Arc::new(Counters::default());
    let mut conn = HttpConn::open(target, &counters).await?;
    let req = conn
        .request(Method::GET, path_and_query)
        .body(empty())
        .map_err(|e| ClientError::Protocol(format!("invalid request {path_and_query:?}: {e}")))?;
    let response = conn.send(req).await?;
    let status = response.status();
    let body = conn.read_body(response.into_body()).await?;
    Ok((status, body))
}

#[cfg(test)]
pub(crate) mod test_server {
    //! A scripted raw-TCP server, for unit tests of the clients' framing and reconnects.

    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    /// One accepted connection: the request head it received and the socket to answer on.
    pub(crate) struct Accepted {
        pub(crate) head: String,
        pub(crate) socket: TcpStream,
    }

    /// Binds `127.0.0.1:0` and forwards each connection after reading its request head.
    pub(crate) async fn spawn() -> (SocketAddr, mpsc::UnboundedReceiver<Accepted>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let head = read_head(&mut socket).await;
                if tx.send(Accepted { head, socket }).is_err() {
                    break;
                }
            }
        });
        (addr, rx)
    }

    /// Reads up to the blank line ending a request head.
    pub(crate) async fn read_head(socket: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        String::from_utf8(head).unwrap()
    }

    /// Writes a complete response with a `Content-Length` body.
    pub(crate) async fn respond(
        socket: &mut TcpStream,
        status: &str,
        content_type: &str,
        body: &str,
    ) {
        let msg = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(msg.as_bytes()).await.unwrap();
    }

    /// Writes a chunked response head.
    pub(crate) async fn start_chunked(socket: &mut TcpStream, content_type: &str) {
        let msg = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        socket.write_all(msg.as_bytes()).await.unwrap();
    }

    /// Writes one chunk of a chunked body.
    pub(crate) async fn chunk(socket: &mut TcpStream, data: &[u8]) {
        socket
            .write_all(format!("{:x}\r\n", data.len()).as_bytes())
            .await
            .unwrap();
        socket.write_all(data).await.unwrap();
        socket.write_all(b"\r\n").await.unwrap();
        socket.flush().await.unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::test_server::*;
    use super::*;

    #[tokio::test]
    async fn get_returns_status_and_body() {
        let (addr, mut rx) = spawn().await;
        let target = Target::from_addr(addr);
        let server = tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            respond(
                &mut a.socket,
                "404 Not Found",
                "application/json",
                r#"{"error":"no"}"#,
            )
            .await;
            a.head
        });
        let (status, body) = get(&target, "/stats?x=1").await.unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(&body[..], br#"{"error":"no"}"#);
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /stats?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase().contains(&format!("host: {addr}")),
            "{head}"
        );
    }

    #[tokio::test]
    async fn multi_chunk_body_is_joined() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            start_chunked(&mut a.socket, "text/plain").await;
            chunk(&mut a.socket, b"hel").await;
            chunk(&mut a.socket, b"lo ").await;
            chunk(&mut a.socket, b"you").await;
            chunk(&mut a.socket, b"").await;
        });
        let (status, body) = get(&Target::from_addr(addr), "/").await.unwrap();
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello you"[..]));
    }
}

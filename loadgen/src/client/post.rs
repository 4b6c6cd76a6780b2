//! [`PostConn`]: `POST` requests on a keep-alive HTTP/1.1 connection of the load generator's
//! own, for the publisher.
//!
//! Why not hyper's client, which the publisher used before: a publish is timed from its due
//! time, so everything between that time and the request's `write` is counted as the server's
//! latency. Through hyper (a request builder, a header map, the dispatcher) that stretch was
//! 9 µs at the median and 26 µs at p90 on this machine, about a tenth of a one-subscriber
//! delivery, and none of it showed in the publisher's lateness, which is read before it. Here
//! the request is written from a reused buffer: the head, then the payload, one `write`.
//! Answers are read and parsed as the polling clients' are ([`super::answer`]).

use std::io::Write as _;
use std::sync::Arc;

use super::answer::{end_head, header, start_request, Reply};
use super::raw::RawConn;
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// One keep-alive connection that posts requests and reads their answers in turn.
#[derive(Debug)]
pub(crate) struct PostConn {
    conn: RawConn,
    /// The request being written, reused.
    out: Vec<u8>,
}

impl PostConn {
    /// Connects.
    pub(crate) async fn open(
        target: &Target,
        counters: &Arc<Counters>,
    ) -> Result<PostConn, ClientError> {
        Ok(PostConn {
            conn: RawConn::connect(target, counters).await?,
            out: Vec::with_capacity(512),
        })
    }

    /// Whether the server has closed the connection while it was idle (or sent something
    /// unasked), so a publish is not written into a connection already gone, where nobody
    /// could tell whether the server stored it. A look at tokio's readiness for the socket, and
    /// a read only when that says readable: a quiet connection costs no system call.
    pub(crate) fn closed_by_peer(&mut self) -> bool {
        let Ok(socket) = self.conn.socket() else {
            return true;
        };
        let mut probe = [0u8; 1];
        match socket.get_ref().try_read(&mut probe) {
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    /// Posts `body` (of `content_type`) to `path_and_query` and reads the whole answer.
    pub(crate) async fn post(
        &mut self,
        host: &str,
        path_and_query: std::fmt::Arguments<'_>,
        content_type: &str,
        body: &[u8],
    ) -> Result<Reply, ClientError> {
        use tokio::io::AsyncWriteExt as _;
        let out = &mut self.out;
        start_request(out, "POST", host, path_and_query);
        header(out, "Content-Type", content_type.as_bytes());
        // Writing to a Vec cannot fail.
        let _ = write!(out, "Content-Length: {}\r\n", body.len());
        end_head(out);
        out.extend_from_slice(body);
        self.conn.counters().add_request();
        self.conn.socket()?.write_all(out).await?;
        self.conn.read_answer(None).await
    }
}

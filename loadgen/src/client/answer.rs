//! Requests and their answers on a keep-alive HTTP/1.1 connection of the load generator's own:
//! what a polling client sends and receives, with no HTTP client library.
//!
//! Why not hyper's client, which the polling clients used before: a poll is a small request and
//! a small answer, thousands of times a second, and hyper's client connection (a dispatcher,
//! body channels, a header map per answer) cost the load generator more per request than the
//! server spent answering it. Here a request is written from a reused buffer and an answer is
//! parsed in place ([`httparse`], the parser hyper itself uses) from the connection's
//! [`ReadBuf`](super::readbuf::ReadBuf): one copy of the body, no other allocation. And being
//! plain bytes in a buffer, an exchange can be started by a task and finished by the load
//! generator's readiness loop, or the other way round.

use std::io::Write as _;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use super::chunked::parse_size;
use super::raw::{find, RawConn, MAX_HEAD};
use crate::error::ClientError;

/// Largest answer body accepted: a poll batch of a full replay buffer with large payloads fits
/// many times over, and a runaway answer cannot take the generator's memory.
pub(crate) const MAX_BODY: usize = 16 << 20;

/// Headers an answer may have; more is refused as malformed.
const MAX_HEADERS: usize = 32;

/// One whole answer, taken off the connection's buffer.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    /// `Last-Modified` and `Etag`, when both came (Nchan's poll cursor).
    pub(crate) modified_etag: Option<(HeaderValue, HeaderValue)>,
    /// The server said `Connection: close`: nothing more comes on this connection.
    pub(crate) close: bool,
    /// When the bytes completing it were read.
    pub(crate) received: Instant,
}

/// Starts a `GET` request in `out` (cleared first): the request line and `Host`. Add headers
/// with [`header`], then end it with [`end_head`].
pub(crate) fn start_get(out: &mut Vec<u8>, host: &str, path: std::fmt::Arguments<'_>) {
    start_request(out, "GET", host, path);
}

/// Starts a `method` request in `out` (cleared first), as [`start_get`] does.
pub(crate) fn start_request(
    out: &mut Vec<u8>,
    method: &str,
    host: &str,
    path: std::fmt::Arguments<'_>,
) {
    out.clear();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
}

/// Adds one header line to a request [`start_get`] began.
pub(crate) fn header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Ends a request's head.
pub(crate) fn end_head(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\r\n");
}

impl RawConn {
    /// The whole answer at the start of the buffer, if it has all arrived (consumed then);
    /// `Ok(None)` when more must be read. Malformed or oversized answers are errors, after
    /// which the connection cannot be trusted to be in step.
    pub(crate) fn take_answer(&mut self) -> Result<Option<Reply>, ClientError> {
        let Some((reply, used)) = parse(&self.buf, self.read_at)? else {
            return Ok(None);
        };
        self.buf.advance(used);
        Ok(Some(reply))
    }

    /// Reads until a whole answer is in, by `deadline` at the latest (a timeout error then).
    pub(crate) async fn read_answer(
        &mut self,
        deadline: Option<Instant>,
    ) -> Result<Reply, ClientError> {
        loop {
            if let Some(reply) = self.take_answer()? {
                return Ok(reply);
            }
            match deadline {
                None => self.fill().await?,
                Some(at) => tokio::time::timeout_at(at.into(), self.fill())
                    .await
                    .map_err(|_| {
                        ClientError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer by its deadline",
                        ))
                    })??,
            }
        }
    }
}

/// Parses the answer at the start of `buf`: the reply and the bytes it takes, or `None` when it
/// is incomplete.
pub(super) fn parse(buf: &[u8], received: Instant) -> Result<Option<(Reply, usize)>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(ClientError::Protocol("response head too long".into()))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(ClientError::Protocol(format!(
                "malformed response head: {e}"
            )))
        }
    };
    let status = response
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| ClientError::Protocol("response without a valid status".into()))?;
    let mut framing = Framing::Close;
    let (mut modified, mut etag, mut close) = (None, None, false);
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| ClientError::Protocol("bad Content-Length".into()))?;
            framing = Framing::Length(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if h.value.to_ascii_lowercase().ends_with(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = h.value.eq_ignore_ascii_case(b"close");
        } else if name.eq_ignore_ascii_case("last-modified") {
            modified = Some(h.value);
        } else if name.eq_ignore_ascii_case("etag") {
            etag = Some(h.value);
        }
    }
    if status == StatusCode::NOT_MODIFIED || status.is_informational() {
        framing = Framing::Length(0);
    }
    let rest = &buf[head_len..];
    let (body, used) = match framing {
        Framing::Length(n) if n > MAX_BODY => return Err(too_long(n)),
        Framing::Length(n) if rest.len() < n => return Ok(None),
        Framing::Length(n) => (Bytes::copy_from_slice(&rest[..n]), n),
        Framing::Chunked => match dechunk(rest)? {
            Some(done) => done,
            None => return Ok(None),
        },
        // A keep-alive connection cannot carry a body that only the connection's end delimits.
        Framing::Close => {
            return Err(ClientError::Protocol(
                "answer with neither Content-Length nor chunking".into(),
            ))
        }
    };
    let modified_etag = match (modified, etag) {
        (Some(m), Some(e)) => HeaderValue::from_bytes(m)
            .ok()
            .zip(HeaderValue::from_bytes(e).ok()),
        _ => None,
    };
    let reply = Reply {
        status,
        body,
        modified_etag,
        close,
        received,
    };
    Ok(Some((reply, head_len + used)))
}

enum Framing {
    Length(usize),
    Chunked,
    Close,
}

fn too_long(n: usize) -> ClientError {
    ClientError::Protocol(format!("answer body of {n} bytes, over {MAX_BODY}"))
}

/// A whole chunked body at the start of `buf`, joined, and the bytes it takes (trailers
/// included); `None` when incomplete.
fn dechunk(buf: &[u8]) -> Result<Option<(Bytes, usize)>, ClientError> {
    let mut body = Vec::new();
    let mut pos = 0;
    loop {
        let Some(line_end) = find(&buf[pos..], b"\r\n") else {
            return Ok(None);
        };
        let size = parse_size(&buf[pos..pos + line_end])?;
        pos += line_end + 2;
        if size == 0 {
            // Trailers (ignored) up to the blank line.
            let Some(end) = find(&buf[pos - 2..], b"\r\n\r\n") else {
                return Ok(None);
            };
            return Ok(Some((body.into(), pos - 2 + end + 4)));
        }
        if body.len() + size > MAX_BODY {
            return Err(too_long(body.len() + size));
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ClientError::Protocol("chunk not followed by CRLF".into()));
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> Option<(Reply, usize)> {
        parse(s.as_bytes(), Instant::now()).unwrap()
    }

    #[test]
    fn lengths_chunks_and_partial_answers() {
        let a = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let (r, used) = parsed(&format!("{a}HTTP/1.1")).unwrap();
        assert_eq!(
            (r.status.as_u16(), &r.body[..], used),
            (200, &b"hello"[..], a.len())
        );
        assert!(!r.close && r.modified_etag.is_none());
        // Every prefix short of the whole answer asks for more.
        for cut in 0..a.len() {
            assert!(parsed(&a[..cut]).is_none(), "{cut}");
        }
        let c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
                 3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n";
        let (r, used) = parsed(c).unwrap();
        assert_eq!((&r.body[..], used, r.close), (&b"abcde"[..], c.len(), true));
        for cut in 0..c.len() {
            assert!(parsed(&c[..cut]).is_none(), "{cut}");
        }
    }

    #[test]
    fn nchan_cursor_headers_and_bodiless_statuses() {
        let (r, _) = parsed(
            "HTTP/1.1 304 Not Modified\r\nLast-Modified: Wed, 25 Nov 2026 21:56:20 GMT\r\n\
             Etag: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.status, StatusCode::NOT_MODIFIED);
        let (m, e) = r.modified_etag.unwrap();
        assert_eq!(
            (m.to_str().unwrap(), e.to_str().unwrap()),
            ("Wed, 25 Nov 2026 21:56:20 GMT", "3")
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for bad in [
            "SPDY/3 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
        ] {
            assert!(parse(bad.as_bytes(), Instant::now()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests() {
        let mut out = b"stale".to_vec();
        start_get(&mut out, "h:1", format_args!("/poll?topic={}", "t"));
        header(&mut out, "If-None-Match", b"7");
        end_head(&mut out);
        assert_eq!(
            out,
            b"GET /poll?topic=t HTTP/1.1\r\nHost: h:1\r\nIf-None-Match: 7\r\n\r\n"
        );
    }
}

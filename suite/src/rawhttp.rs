//! A minimal blocking HTTP/1.1 client for the cross-check ([`crate::crosscheck`]): std sockets,
//! requests written by hand, response heads and chunked bodies parsed by hand, SSE and NDJSON
//! events split by hand. It is kept apart from the load generator's clients on purpose: a bug
//! there cannot hide here, and nothing here waits on a runtime's scheduling.
//!
//! A connection may ask the kernel to stamp its arrivals ([`Conn::stamp_arrivals`]), so an
//! event can be timed by when its bytes reached the socket as well as by when the blocked read
//! returned. The stamp is read here with its own `recvmsg` rather than through the load
//! generator's (`loadgen/src/client/arrival.rs`): sharing that code would let one bug hide in
//! both.

use std::io::{self, IoSliceMut, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// Longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;

/// One blocking connection and the bytes read but not yet used.
#[derive(Debug)]
pub struct Conn {
    sock: TcpStream,
    buf: Vec<u8>,
    /// When the last read returned, and the kernel's stamp on its bytes.
    last: Arrival,
}

/// When an event's bytes came: as the kernel stamped their arrival at the socket (with
/// [`Conn::stamp_arrivals`]), and when the blocked read that took them returned.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    /// The kernel's stamp (wall clock), when asked for and given.
    pub stamped: Option<SystemTime>,
    /// When the read returned.
    pub read: Instant,
}

/// A response head.
#[derive(Debug, Clone)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

fn bad(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Conn {
    /// Connects to `addr` (`HOST:PORT`), Nagle off; every read gives up after `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Conn> {
        let sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        Ok(Conn {
            sock,
            buf: Vec::new(),
            last: Arrival {
                stamped: None,
                read: Instant::now(),
            },
        })
    }

    /// Asks the kernel to stamp every packet that reaches this socket from now on
    /// (`SO_TIMESTAMPNS`, wall clock).
    pub fn stamp_arrivals(&self) -> io::Result<()> {
        setsockopt(&self.sock, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
    }

    /// Writes `bytes` in full.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.sock.write_all(bytes)
    }

    /// A second handle on the socket, for writing from another thread while this one reads.
    pub fn writer(&self) -> io::Result<TcpStream> {
        self.sock.try_clone()
    }

    /// One blocking read appended to the buffer, with its kernel stamp if there is one (a
    /// timeout or the peer closing is an error).
    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 16 * 1024];
        // Room for one control message of a `timespec`, aligned for its header.
        #[repr(C, align(8))]
        struct Cmsg([u8; 64]);
        let mut cmsg = Cmsg([0; 64]);
        let mut iov = [IoSliceMut::new(&mut chunk)];
        let msg = loop {
            match recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg.0),
                MsgFlags::empty(),
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(io::Error::from)?,
            }
        };
        let read = Instant::now();
        let mut stamped = None;
        for c in msg.cmsgs().into_iter().flatten() {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                let (secs, nanos) = (u64::try_from(ts.tv_sec()), u32::try_from(ts.tv_nsec()));
                if let (Ok(secs), Ok(nanos)) = (secs, nanos) {
                    stamped = Some(UNIX_EPOCH + Duration::new(secs, nanos));
                }
            }
        }
        let n = msg.bytes;
        self.last = Arrival { stamped, read };
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// Reads a response head; what follows it stays buffered.
    pub fn read_head(&mut self) -> io::Result<Head> {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.buf.len() > MAX_HEAD {
                return Err(bad("response head too long".into()));
            }
            self.fill()?;
        };
        let text = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = text.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.strip_prefix("HTTP/1.1 "))
            .and_then(|l| l.get(..3))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| bad(format!("not an HTTP/1.1 response: {text:?}")))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Ok(Head { status, headers })
    }

    /// Reads a body of `Content-Length` bytes.
    pub fn read_sized_body(&mut self, head: &Head) -> io::Result<Vec<u8>> {
        let len: usize = head
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("a response without Content-Length".into()))?;
        while self.buf.len() < len {
            self.fill()?;
        }
        Ok(self.buf.drain(..len).collect())
    }
}

/// An event stream's wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/event-stream`: `id: EPOCH-N\ndata: PAYLOAD\n\n` per event.
    Sse,
    /// `application/x-ndjson`: `{"id":N,"data":"PAYLOAD"}\n` per event.
    Ndjson,
}

/// The endless body of a subscription, read event by event.
#[derive(Debug)]
pub struct EventStream {
    conn: Conn,
    format: Format,
    chunks: Option<Dechunk>,
    body: Vec<u8>,
}

impl EventStream {
    /// The body following `head` on `conn`.
    pub fn new(conn: Conn, head: &Head, format: Format) -> EventStream {
        EventStream {
            conn,
            format,
            chunks: head.chunked().then(Dechunk::default),
            body: Vec::new(),
        }
    }

    /// The next event's payload, and the arrival of the read that completed it. Keep-alives,
    /// the SSE retry hint and gap signals are skipped.
    pub fn next_event(&mut self) -> io::Result<(String, Arrival)> {
        loop {
            // Decode what is buffered first: an event completed by an earlier read arrived
            // with that read's bytes, and no read has happened since.
            match &mut self.chunks {
                Some(d) => d.feed(&mut self.conn.buf, &mut self.body)?,
                None => self.body.append(&mut self.conn.buf),
            }
            while let Some(event) = take_event(self.format, &mut self.body)? {
                if let Some(payload) = event {
                    return Ok((payload, self.conn.last));
                }
            }
            self.conn.fill()?;
        }
    }
}

/// Takes one complete event off the front of `body`: `None` when none is complete yet,
/// `Some(None)` for one without a payload (keep-alive, retry hint, hello, gap).
fn take_event(format: Format, body: &mut Vec<u8>) -> io::Result<Option<Option<String>>> {
    let sep: &[u8] = match format {
        Format::Sse => b"\n\n",
        Format::Ndjson => b"\n",
    };
    let Some(end) = find(body, sep) else {
        return Ok(None);
    };
    let block: Vec<u8> = body.drain(..end + sep.len()).take(end).collect();
    let text = String::from_utf8(block).map_err(|e| bad(e.to_string()))?;
    Ok(Some(match format {
        Format::Sse => text
            .lines()
            .find_map(|l| l.strip_prefix("data:"))
            .filter(|_| !text.lines().any(|l| l.starts_with("event:")))
            .map(|d| d.strip_prefix(' ').unwrap_or(d).to_owned()),
        Format::Ndjson if text.trim().is_empty() => None,
        Format::Ndjson => {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("{e}: {text:?}")))?;
            v.get("data").and_then(|d| d.as_str()).map(str::to_owned)
        }
    }))
}

/// Decodes `Transfer-Encoding: chunked`.
#[derive(Debug, Default)]
struct Dechunk {
    /// Bytes left in the current chunk's data, or `None` while reading a size line.
    left: Option<usize>,
    /// The CRLF after a chunk's data is still to come.
    crlf: bool,
}

impl Dechunk {
    /// Moves every complete piece of `raw` into `out`, leaving a partial size line in `raw`.
    fn feed(&mut self, raw: &mut Vec<u8>, out: &mut Vec<u8>) -> io::Result<()> {
        let mut at = 0;
        loop {
            if self.crlf {
                if raw.len() - at < 2 {
                    break;
                }
                if &raw[at..at + 2] != b"\r\n" {
                    return Err(bad("chunk data not followed by CRLF".into()));
                }
                at += 2;
                self.crlf = false;
            }
            match self.left {
                Some(left) => {
                    let n = left.min(raw.len() - at);
                    out.extend_from_slice(&raw[at..at + n]);
                    at += n;
                    self.left = (left > n).then_some(left - n);
                    if left > n {
                        break;
                    }
                    self.crlf = true;
                }
                None => {
                    let Some(end) = find(&raw[at..], b"\r\n") else {
                        break;
                    };
                    let line = String::from_utf8_lossy(&raw[at..at + end]).into_owned();
                    let hex = line.split(';').next().unwrap_or("").trim();
                    let size = usize::from_str_radix(hex, 16)
                        .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                    }
                    at += end + 2;
                    self.left = Some(size);
                }
            }
        }
        raw.drain(..at);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_decode_whatever_the_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n";
        for split in 0..wire.len() {
            let mut d = Dechunk::default();
            let (mut raw, mut out) = (wire[..split].to_vec(), Vec::new());
            d.feed(&mut raw, &mut out).unwrap();
            raw.extend_from_slice(&wire[split..]);
            d.feed(&mut raw, &mut out).unwrap();
            assert_eq!(out, b"hello, world", "split at {split}");
            assert!(raw.is_empty());
        }
        let mut raw = b"0\r\n\r\n".to_vec();
        let end = Dechunk::default().feed(&mut raw, &mut Vec::new());
        assert_eq!(end.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut raw = b"3\r\nabcX\r\n".to_vec();
        assert!(Dechunk::default().feed(&mut raw, &mut Vec::new()).is_err());
    }

    #[test]
    fn sse_events_skip_hints_keepalives_and_gaps() {
        let mut body =
            b"retry: 1000\n\n: keep-alive\n\nevent: gap\ndata: {\"from\":1,\"to\":2}\n\n\
            id: 3\ndata: hello\n\nid: 4\ndata: par"
                .to_vec();
        let mut got = Vec::new();
        while let Some(e) = take_event(Format::Sse, &mut body).unwrap() {
            got.push(e);
        }
        assert_eq!(got, vec![None, None, None, Some("hello".into())]);
        assert_eq!(body, b"id: 4\ndata: par");
    }

    #[test]
    fn ndjson_events_skip_keepalives_and_gaps() {
        let mut body =
            b"\n{\"gap\":{\"from\":1,\"to\":2}}\n{\"id\":3,\"data\":\"a\\\"b\"}\n{\"id\"".to_vec();
        let mut got = Vec::new();
        while let Some(e) = take_event(Format::Ndjson, &mut body).unwrap() {
            got.push(e);
        }
        assert_eq!(got, vec![None, None, Some("a\"b".into())]);
        assert_eq!(body, b"{\"id\"");
        let mut junk = b"not json\n".to_vec();
        assert!(take_event(Format::Ndjson, &mut junk).is_err());
    }
}

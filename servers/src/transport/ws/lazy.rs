//! A server's WebSocket with small buffers ([`server_socket`]), and one that keeps tungstenite's
//! state only while its session needs it ([`LazyWs`]).
//!
//! Why: a subscriber that the topic's fan-out writes to (`crate::fanout`) only waits. It needs
//! tungstenite again only when its client sends something, or when it is handed back. Yet
//! tungstenite's stream holds about 750 bytes per socket: 336 inline, a 256-byte read buffer,
//! and two waker proxies. At 10,000 subscribers that was a third of a WebSocket's memory
//! (`results/footprint-10k`). So the session puts tungstenite away while it waits, and builds
//! it again on the next input.
//!
//! It may do so only when tungstenite holds nothing: no part of a frame in its read buffer, no
//! message whose fragments are still coming, nothing left to write. The last is known after a
//! flush. The first two are not visible from outside, so [`Tapped`] follows the frame
//! boundaries in the bytes tungstenite reads ([`Boundary`]). tungstenite still parses and
//! checks every frame; this only counts lengths.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

use crate::protocol::MAX_PAYLOAD_BYTES;

/// What tungstenite reads per system call, and allocates up front for every socket. Clients
/// send a subscriber little but control frames, and the largest of those (125 bytes of payload
/// and a 14-byte header) fits in one read; a larger message takes a few reads more.
const READ_BUFFER: usize = 256;

/// Small buffers: thousands of mostly idle sockets must stay cheap (tungstenite's defaults are
/// 128 KiB each way, and its read buffer is allocated when the socket opens). Messages are
/// capped at the protocol's payload limit plus the envelope.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_PAYLOAD_BYTES + 1024))
        .max_frame_size(Some(MAX_PAYLOAD_BYTES + 1024))
}

/// `io`, whose upgrade was answered, as a server's WebSocket with small buffers.
/// Does no I/O: ready at once.
pub(crate) async fn server_socket<S>(io: S) -> WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await
}

/// A server's WebSocket on `S`, with tungstenite's state made only when it is used.
pub(crate) struct LazyWs<S> {
    state: State<S>,
}

enum State<S> {
    /// tungstenite's state is put away: only the socket is held.
    Raw(Tapped<S>),
    /// Boxed, so that a session's future does not keep its room while it is put away.
    Ws(Box<WebSocketStream<Tapped<S>>>),
    /// Only while the socket moves from one to the other.
    Moving,
}

impl<S: AsyncRead + AsyncWrite + Unpin> LazyWs<S> {
    /// `io`, whose upgrade was answered, before any frame was read from it.
    pub(crate) fn new(io: S) -> LazyWs<S> {
        LazyWs {
            state: State::Raw(Tapped {
                io,
                boundary: Boundary::default(),
            }),
        }
    }

    /// tungstenite's stream, made now if it was put away.
    pub(crate) async fn ws(&mut self) -> &mut WebSocketStream<Tapped<S>> {
        if let State::Raw(_) = self.state {
            let State::Raw(tapped) = std::mem::replace(&mut self.state, State::Moving) else {
                unreachable!("checked above")
            };
            self.state = State::Ws(Box::new(server_socket(tapped).await));
        }
        match &mut self.state {
            State::Ws(ws) => ws,
            State::Raw(_) | State::Moving => unreachable!("made above"),
        }
    }

    /// tungstenite's stream if it is made, without making it.
    pub(crate) fn made(&mut self) -> Option<&mut WebSocketStream<Tapped<S>>> {
        match &mut self.state {
            State::Ws(ws) => Some(ws),
            State::Raw(_) | State::Moving => None,
        }
    }

    /// Puts tungstenite's state away if it holds no input: call it after a flush that wrote
    /// everything. Returns whether it did; if not (a frame or a message is half read), the
    /// state is kept until a later call finds it empty.
    pub(crate) fn rest(&mut self) -> bool {
        let at_rest = match &self.state {
            State::Ws(ws) => ws.get_ref().boundary.at_rest(),
            State::Raw(_) => return true,
            State::Moving => false,
        };
        if at_rest {
            if let State::Ws(ws) = std::mem::replace(&mut self.state, State::Moving) {
                self.state = State::Raw(ws.into_inner());
            }
        }
        at_rest
    }

    /// The socket, for bytes written between tungstenite's frames (the fan-out's leftovers, a
    /// ping).
    pub(crate) fn io_mut(&mut self) -> &mut S {
        match &mut self.state {
            State::Raw(tapped) => &mut tapped.io,
            State::Ws(ws) => &mut ws.get_mut().io,
            State::Moving => unreachable!("never seen outside a method"),
        }
    }
}

/// The socket under tungstenite: reads pass through [`Boundary`], writes go straight on.
pub(crate) struct Tapped<S> {
    io: S,
    boundary: Boundary,
}

impl<S: AsyncRead + Unpin> AsyncRead for Tapped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.boundary.feed(&buf.filled()[before..]);
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Where the bytes read so far end, in a client's frames (RFC 6455 §5.2): inside a frame's
/// head, inside its payload, or between frames; and whether a fragmented message is open.
#[derive(Debug, Default)]
struct Boundary {
    /// The head of the frame being read, as far as it has come.
    head: [u8; MAX_HEAD],
    have: u8,
    /// Payload bytes of the current frame not read yet.
    payload_left: u64,
    /// A text or binary frame without FIN came, and its final continuation has not.
    fragmented: bool,
}

/// The longest head a client sends: 2 bytes, a 64-bit length and a 4-byte mask.
const MAX_HEAD: usize = 14;

impl Boundary {
    fn at_rest(&self) -> bool {
        self.have == 0 && self.payload_left == 0 && !self.fragmented
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let n = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= n;
                bytes = &bytes[n as usize..];
                continue;
            }
            self.head[self.have as usize] = bytes[0];
            self.have += 1;
            bytes = &bytes[1..];
            if let Some(payload) = self.head_done() {
                self.have = 0;
                self.payload_left = payload;
            }
        }
    }

    /// The payload length, once the head is whole; and the frame's effect on fragmentation.
    fn head_done(&mut self) -> Option<u64> {
        let have = self.have as usize;
        if have < 2 {
            return None;
        }
        let (fin, opcode) = (self.head[0] & 0x80 != 0, self.head[0] & 0x0f);
        let masked = self.head[1] & 0x80 != 0;
        let (extended, short) = match self.head[1] & 0x7f {
            126 => (2, None),
            127 => (8, None),
            len => (0, Some(u64::from(len))),
        };
        let head_len = 2 + extended + if masked { 4 } else { 0 };
        if have < head_len {
            return None;
        }
        let len = short.unwrap_or_else(|| {
            let mut be = [0u8; 8];
            be[8 - extended..].copy_from_slice(&self.head[2..2 + extended]);
            u64::from_be_bytes(be)
        });
        // Control frames (opcode 8 and up) may come between fragments and change nothing.
        match opcode {
            1 | 2 => self.fragmented = !fin,
            0 if fin => self.fragmented = false,
            _ => {}
        }
        Some(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(fin: bool, opcode: u8, payload_len: usize) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload_len {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n < 65_536 => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&[1, 2, 3, 4]);
        f.extend(std::iter::repeat_n(b'x', payload_len));
        f
    }

    /// Fed a byte at a time or all at once, the boundary is at rest exactly between whole
    /// messages, for every length encoding and for fragments with a ping among them.
    #[test]
    fn the_boundary_is_at_rest_only_between_whole_messages() {
        let frames = [
            (client_frame(true, 1, 0), true),
            (client_frame(true, 1, 125), true),
            (client_frame(true, 10, 3), true),
            (client_frame(true, 2, 200), true),
            (client_frame(true, 1, 70_000), true),
            (client_frame(false, 1, 5), false),
            (client_frame(true, 9, 4), false),
            (client_frame(false, 0, 5), false),
            (client_frame(true, 0, 5), true),
        ];
        let mut whole = Boundary::default();
        let mut bytewise = Boundary::default();
        for (frame, rest_after) in &frames {
            for (i, byte) in frame.iter().enumerate() {
                bytewise.feed(std::slice::from_ref(byte));
                if i + 1 < frame.len() {
                    assert!(!bytewise.at_rest(), "inside a frame");
                }
            }
            whole.feed(frame);
            assert_eq!(bytewise.at_rest(), *rest_after);
            assert_eq!(whole.at_rest(), *rest_after);
        }
    }
}

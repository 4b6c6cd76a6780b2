//! A client WebSocket (RFC 6455) read straight off the socket: the handshake, then frames
//! parsed in place from one small buffer.
//!
//! tokio-tungstenite is the reference implementation the servers use, but as a subscriber it
//! cost the load generator more than the server spent to send: a 128 KiB read buffer per
//! connection by default, a waker proxy per read, a copy into a message. A subscriber only
//! needs unmasked server frames in, and the rare masked frame out (a pong, an upstream
//! message, an acknowledgement, a close), so this file does exactly that.
//!
//! Cancel-safe: a frame is taken from the buffer only once it is whole, and frames to send
//! are queued in `out` and written from there, so a caller that drops [`WsConn::next`]
//! mid-way loses nothing and never leaves half a frame on the wire.

use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use http::StatusCode;
use sha1::{Digest, Sha1};
use tokio::io::AsyncWriteExt;

use super::raw::RawConn;
use super::readbuf::ReadBuf;
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// RFC 6455's key suffix for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Largest message accepted; a larger one means broken framing, not a big event.
const MAX_MESSAGE: usize = 1 << 20;

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A whole message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WsMessage {
    /// A text message (checked to be UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// The server closed; the close was answered and nothing more will come.
    Close,
}

/// An upgraded connection.
#[derive(Debug)]
pub(crate) struct WsConn {
    conn: RawConn,
    /// Frames queued to send (masked), written before the next read.
    out: BytesMut,
    /// A fragmented message being put together: its opcode and the data so far.
    partial: Option<(u8, BytesMut)>,
    /// A close was received and answered.
    closed: bool,
    /// Where the next frame's mask comes from: seeded from the OS once per connection, so
    /// a frame sent per delivery (a gateway device's acknowledgement) costs no system call.
    masks: MaskSource,
}

impl WsConn {
    /// Connects to `path_and_query`, upgrades, and returns once the server answered 101 with
    /// the right `Sec-WebSocket-Accept`. An error status is returned with the server's reason.
    pub(crate) async fn open(
        target: &Target,
        counters: &Arc<Counters>,
        path_and_query: &str,
    ) -> Result<WsConn, ClientError> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce)
            .map_err(|e| ClientError::Protocol(format!("no randomness for the key: {e}")))?;
        let key = base64::engine::general_purpose::STANDARD.encode(&nonce[..16]);
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&nonce[16..]);
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", key.as_str()),
            ("Sec-WebSocket-Version", "13"),
        ];
        let (conn, head) = RawConn::get(target, counters, path_and_query, &headers).await?;
        if head.status != StatusCode::SWITCHING_PROTOCOLS {
            return Err(conn.refusal(&head).await);
        }
        if head.ws_accept != accept_for(&key) {
            return Err(ClientError::Protocol(
                "the server's Sec-WebSocket-Accept does not match the key".into(),
            ));
        }
        Ok(WsConn {
            conn,
            out: BytesMut::new(),
            partial: None,
            closed: false,
            masks: MaskSource(u64::from_le_bytes(seed) | 1),
        })
    }

    /// The next message and when the bytes completing it were read; `Ok(None)` when the
    /// connection ended without a Close. Pings are answered here. A Close is answered, then
    /// returned as [`WsMessage::Close`]; the connection is done after it.
    pub(crate) async fn next(&mut self) -> Result<Option<(WsMessage, Instant)>, ClientError> {
        loop {
            if let Some(message) = self.buffered()? {
                return Ok(Some(message));
            }
            if !self.advance().await? {
                return Ok(None);
            }
        }
    }

    /// The next message already read, without I/O, as [`next`](Self::next) returns it.
    /// `Ok(None)`: bytes must be written first ([`wants_write`](Self::wants_write)), or read.
    pub(crate) fn buffered(&mut self) -> Result<Option<(WsMessage, Instant)>, ClientError> {
        if !self.closed {
            if let Some(message) = self.take_message()? {
                return Ok(Some((message, self.conn.read_at)));
            }
        }
        if self.closed && self.out.is_empty() {
            return Ok(Some((WsMessage::Close, self.conn.read_at)));
        }
        Ok(None)
    }

    /// Writes what is queued (a pong, a Close reply), or else reads more. `Ok(false)`: the
    /// connection ended.
    pub(crate) async fn advance(&mut self) -> Result<bool, ClientError> {
        if !self.out.is_empty() {
            self.flush().await?;
            return Ok(true);
        }
        match self.conn.fill().await {
            Ok(()) => Ok(true),
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether frames wait to be written (a pong, a Close reply).
    pub(crate) fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// While detached: writes what is queued to `socket` without blocking. `WouldBlock` when
    /// the socket's buffer is full; the rest stays queued.
    pub(crate) fn write_to(&mut self, socket: &std::net::TcpStream) -> std::io::Result<()> {
        self.conn.write_from(socket, &mut self.out)
    }

    /// The socket and read buffer under the frames.
    pub(super) fn conn_mut(&mut self) -> &mut RawConn {
        &mut self.conn
    }

    pub(crate) async fn send_text(&mut self, text: &[u8]) -> Result<(), ClientError> {
        queue_frame(&mut self.out, self.masks.next(), OP_TEXT, text);
        self.flush().await
    }

    /// Sends a close frame (1000, normal closure) unless one was already exchanged.
    pub(crate) async fn close(&mut self) -> Result<(), ClientError> {
        if !self.closed {
            queue_frame(
                &mut self.out,
                self.masks.next(),
                OP_CLOSE,
                &1000u16.to_be_bytes(),
            );
            self.closed = true;
        }
        self.flush().await
    }

    /// Writes what is queued; what a cancelled write left is still queued.
    async fn flush(&mut self) -> Result<(), ClientError> {
        while !self.out.is_empty() {
            self.conn.socket()?.write_buf(&mut self.out).await?;
        }
        Ok(())
    }

    /// Takes whole frames from the buffer until one completes a message.
    fn take_message(&mut self) -> Result<Option<WsMessage>, ClientError> {
        while let Some((fin, opcode, payload)) = take_frame(&mut self.conn.buf)? {
            match opcode {
                OP_PING => queue_frame(&mut self.out, self.masks.next(), OP_PONG, &payload),
                OP_PONG => {}
                OP_CLOSE => {
                    // Echo the status code, as RFC 6455 asks; the connection is then done.
                    let code = payload.get(..2).unwrap_or_default();
                    queue_frame(&mut self.out, self.masks.next(), OP_CLOSE, code);
                    self.closed = true;
                    return Ok(None);
                }
                OP_TEXT | OP_BINARY if self.partial.is_none() => {
                    if fin {
                        return message(opcode, payload).map(Some);
                    }
                    self.partial = Some((opcode, BytesMut::from(&payload[..])));
                }
                OP_CONTINUATION => {
                    let Some((op, mut data)) = self.partial.take() else {
                        return Err(ClientError::Protocol("continuation without a start".into()));
                    };
                    data.extend_from_slice(&payload);
                    if data.len() > MAX_MESSAGE {
                        return Err(ClientError::Protocol("message too long".into()));
                    }
                    if fin {
                        return message(op, data.freeze()).map(Some);
                    }
                    self.partial = Some((op, data));
                }
                other => {
                    return Err(ClientError::Protocol(format!(
                        "unexpected frame opcode {other:#x}"
                    )))
                }
            }
        }
        Ok(None)
    }
}

/// `Sec-WebSocket-Accept` for `key`.
fn accept_for(key: &str) -> String {
    let mut sha = Sha1::default();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

fn message(opcode: u8, payload: Bytes) -> Result<WsMessage, ClientError> {
    if opcode == OP_BINARY {
        return Ok(WsMessage::Binary(payload));
    }
    std::str::from_utf8(&payload)
        .map_err(|_| ClientError::Protocol("text message is not UTF-8".into()))?;
    Ok(WsMessage::Text(payload))
}

/// One whole frame off the front of `buf`: (FIN, opcode, payload, a view of `buf`'s bytes).
/// `None` until the frame is whole. Server frames must not be masked.
pub(super) fn take_frame(buf: &mut ReadBuf) -> Result<Option<(bool, u8, Bytes)>, ClientError> {
    let [b0, b1, ..] = buf[..] else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(ClientError::Protocol("reserved frame bits set".into()));
    }
    if b1 & 0x80 != 0 {
        return Err(ClientError::Protocol("masked frame from the server".into()));
    }
    let (header, len) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (4, u64::from(u16::from_be_bytes([buf[2], buf[3]]))),
        127 if buf.len() >= 10 => {
            let mut n = [0u8; 8];
            n.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(n))
        }
        126 | 127 => return Ok(None),
        n => (2, u64::from(n)),
    };
    let opcode = b0 & 0x0F;
    if opcode >= OP_CLOSE && (len > 125 || b0 & 0x80 == 0) {
        return Err(ClientError::Protocol("malformed control frame".into()));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&n| n <= MAX_MESSAGE)
        .ok_or_else(|| ClientError::Protocol(format!("frame of {len} bytes")))?;
    if buf.len() < header + len {
        return Ok(None);
    }
    let payload = Bytes::copy_from_slice(&buf[header..header + len]);
    buf.advance(header + len);
    Ok(Some((b0 & 0x80 != 0, opcode, payload)))
}

/// Frame masks: xorshift64 from a random seed. RFC 6455 asks for masks a proxy cannot predict
/// from the traffic it sees; a generator seeded from the OS per connection gives that.
#[derive(Debug)]
struct MaskSource(u64);

impl MaskSource {
    fn next(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

/// Appends one final frame masked with `mask` (clients must mask).
fn queue_frame(out: &mut BytesMut, mask: [u8; 4], opcode: u8, payload: &[u8]) {
    out.reserve(14 + payload.len());
    out.extend_from_slice(&[0x80 | opcode]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[0x80 | n as u8]),
        n if n <= usize::from(u16::MAX) => {
            out.extend_from_slice(&[0x80 | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[0x80 | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![b0];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn accept_matches_rfc_6455_example() {
        assert_eq!(
            accept_for("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn frames_come_whole_however_the_bytes_are_cut() {
        let mut wire = frame(0x81, b"hello");
        wire.extend(frame(0x81, &[b'x'; 300]));
        let mut buf = ReadBuf::with_capacity(16);
        let mut got = Vec::new();
        for b in wire {
            buf.room(1)[0] = b;
            buf.filled(1);
            while let Some((fin, op, p)) = take_frame(&mut buf).unwrap() {
                got.push((fin, op, p.len()));
            }
        }
        assert_eq!(got, [(true, OP_TEXT, 5), (true, OP_TEXT, 300)]);
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_frames_are_errors() {
        for wire in [
            vec![0x81, 0x85, 1, 2, 3, 4, 0, 0, 0, 0, 0], // masked by the server
            vec![0xC1, 0x00],                            // RSV1 without an extension
            frame(0x09, b"not final ping"),              // fragmented control frame
            vec![0x82, 127, 0xFF, 0, 0, 0, 0, 0, 0, 0],  // absurd length
        ] {
            let mut buf = ReadBuf::with_capacity(wire.len());
            buf.room(wire.len())[..wire.len()].copy_from_slice(&wire);
            buf.filled(wire.len());
            assert!(take_frame(&mut buf).is_err(), "{wire:?}");
        }
    }

    #[test]
    fn queued_frames_are_masked_and_unmask_back() {
        let mut out = BytesMut::new();
        let mut masks = MaskSource(0x9E37_79B9_7F4A_7C15);
        queue_frame(&mut out, masks.next(), OP_TEXT, b"upstream");
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 8);
        let mask = [out[2], out[3], out[4], out[5]];
        let clear: Vec<u8> = out[6..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(clear, b"upstream");
        let mut long = BytesMut::new();
        queue_frame(&mut long, masks.next(), OP_BINARY, &[0; 70_000]);
        assert_eq!(long[1], 0x80 | 127);
        assert_eq!(long.len(), 2 + 8 + 4 + 70_000);
    }
}

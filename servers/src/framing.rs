//! How a long-lived subscription's transport puts items on the wire: shared by the transports
//! that define it, the bodies and tasks that write it, and the publishing side's fan-out, and
//! depending on nothing but the hub's items. Also the head of a WebSocket text frame, which the
//! fan-out and the gateway's send path write without tungstenite.

use bytes::Bytes;

use crate::hub::Item;

/// How a streaming transport writes items.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// Which framing this is: framings with the same name encode alike.
    pub name: &'static str,
    /// The bytes of one item.
    pub encode: fn(&Item) -> Bytes,
    /// What is sent on an idle stream so proxies and clients see it is alive.
    pub keepalive: &'static [u8],
    /// Whether items go out as HTTP/1.1 chunks (streaming, SSE) or as they are (WebSocket
    /// frames).
    pub chunked: bool,
}

/// The longest head of a server's frame: two bytes and a 64-bit length.
pub(crate) const MAX_FRAME_HEAD: usize = 10;

/// The head of an unmasked text frame of `len` payload bytes, in `buf`.
pub(crate) fn text_frame_head(len: usize, buf: &mut [u8; MAX_FRAME_HEAD]) -> &[u8] {
    // FIN and the text opcode; a server's frames are not masked.
    buf[0] = 0x81;
    match u16::try_from(len) {
        Ok(short) if short < 126 => {
            buf[1] = short as u8;
            &buf[..2]
        }
        Ok(medium) => {
            buf[1] = 126;
            buf[2..4].copy_from_slice(&medium.to_be_bytes());
            &buf[..4]
        }
        Err(_) => {
            buf[1] = 127;
            buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
            &buf[..10]
        }
    }
}

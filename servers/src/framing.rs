//! How a long-lived subscription's transport puts items on the wire: shared by the transports
//! that define it, the bodies and tasks that write it, and the publishing side's fan-out, and
//! depending on nothing but the hub's items.

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

//! Writing without waiting: HTTP/1.1 chunks, gathered into one `writev`, and whatever the
//! socket could not take kept for later. Shared by a subscriber's own task
//! (`crate::lean`) and the publishing side's fan-out (`crate::fanout`).

use std::io::IoSlice;
use std::os::fd::RawFd;

use bytes::Bytes;
use nix::sys::socket::{sendmsg, MsgFlags};

/// Items written together at most, as one chunk.
pub(crate) const BURST: usize = 16;

/// The most parts one write gathers: a chunk's size line, [`BURST`] items, and its CRLF.
const MAX_PARTS: usize = BURST + 2;

/// Writes `items` as one chunk on `socket`, in one system call as far as the socket takes it,
/// and appends the rest to `pending` (see [`try_write`]).
pub(crate) fn try_chunk(socket: RawFd, items: &[Bytes], pending: &mut Vec<u8>) {
    let len: usize = items.iter().map(Bytes::len).sum();
    if len == 0 {
        // An empty chunk would end the body.
        return;
    }
    let mut size = [0u8; 18];
    let size = chunk_size(len, &mut size);
    let mut parts: [&[u8]; MAX_PARTS] = [&[]; MAX_PARTS];
    parts[0] = size;
    let items = &items[..items.len().min(BURST)];
    for (part, item) in parts[1..].iter_mut().zip(items) {
        *part = item;
    }
    parts[items.len() + 1] = b"\r\n";
    try_write(socket, &parts[..items.len() + 2], pending);
}

/// Writes `parts` (at most `BURST + 2`) on `socket` in one system call as far as it takes
/// them, and appends the rest to `pending`. Nothing is written past bytes already pending, so
/// the order on the wire is the order of the calls. Any error (a full socket, a peer gone)
/// leaves the bytes pending; whoever flushes them meets it again and decides.
pub(crate) fn try_write(socket: RawFd, parts: &[&[u8]], pending: &mut Vec<u8>) {
    let mut written = 0;
    if pending.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_PARTS];
        for (slice, part) in slices.iter_mut().zip(parts) {
            *slice = IoSlice::new(part);
        }
        let n = parts.len().min(MAX_PARTS);
        written = send(socket, &slices[..n]);
    }
    for part in parts {
        let skip = written.min(part.len());
        written -= skip;
        pending.extend_from_slice(&part[skip..]);
    }
}

/// One `sendmsg(2)` of `slices` on `socket`: how many bytes it took (0 on any error).
///
/// Why not tokio's `try_write_vectored`: it first reads the socket's readiness from tokio's
/// registration, which for a fan-out visiting 10,000 sockets in turn is one more cold cache
/// line per write (perf put `Registration::try_io` at 3 to 7% of a fan-out's CPU). The kernel
/// says as much by refusing the write: a full socket takes nothing, the bytes stay pending, and
/// whoever writes them next goes through tokio, which then learns the socket is not writable.
/// And `sendmsg` skips `writev`'s file-position lock (`fdget_pos`), which a socket does not
/// need. `MSG_NOSIGNAL`: a peer gone is an error here, never a signal.
fn send(socket: RawFd, slices: &[IoSlice<'_>]) -> usize {
    sendmsg::<()>(socket, slices, &[], MsgFlags::MSG_NOSIGNAL, None).unwrap_or(0)
}

/// `len` as a chunk-size line, in `buf`.
fn chunk_size(len: usize, buf: &mut [u8; 18]) -> &[u8] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for (i, slot) in buf[..digits].iter_mut().enumerate() {
        let shift = 4 * (digits - 1 - i);
        *slot = HEX[(len >> shift) & 0xf];
    }
    buf[digits] = b'\r';
    buf[digits + 1] = b'\n';
    &buf[..digits + 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hex() {
        let mut buf = [0; 18];
        for (len, want) in [
            (1, "1\r\n"),
            (15, "f\r\n"),
            (16, "10\r\n"),
            (85, "55\r\n"),
            (4096, "1000\r\n"),
            (usize::MAX, "ffffffffffffffff\r\n"),
        ] {
            assert_eq!(chunk_size(len, &mut buf), want.as_bytes(), "{len}");
        }
    }

    #[tokio::test]
    async fn what_the_socket_does_not_take_is_kept_in_order() {
        use std::os::fd::AsRawFd;
        use tokio::io::AsyncReadExt;
        use tokio::net::TcpStream;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut reader = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (writer, _) = listener.accept().await.unwrap();
        let item = Bytes::from(vec![b'x'; 64 * 1024]);
        let mut pending = Vec::new();
        let mut sent = 0;
        // Nobody reads yet, so the socket fills and the rest is kept.
        while pending.is_empty() {
            try_chunk(
                writer.as_raw_fd(),
                std::slice::from_ref(&item),
                &mut pending,
            );
            sent += 1;
        }
        // Once anything is pending, later writes queue behind it.
        try_chunk(
            writer.as_raw_fd(),
            &[Bytes::from_static(b"last")],
            &mut pending,
        );
        assert!(pending.ends_with(b"4\r\nlast\r\n"));
        let expected = sent * (item.len() + "10000\r\n\r\n".len()) + "4\r\nlast\r\n".len();
        let mut got = Vec::new();
        let mut buf = vec![0; 64 * 1024];
        while got.len() + pending.len() < expected {
            let n = reader.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got.extend_from_slice(&pending);
        assert_eq!(got.len(), expected);
        assert!(got.ends_with(b"\r\n4\r\nlast\r\n"));
    }
}

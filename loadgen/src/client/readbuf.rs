//! [`ReadBuf`]: what was read from one connection and not yet consumed.
//!
//! One buffer, zeroed once when the connection opens and reused for its whole life: reads go
//! straight into its free room, consuming moves a cursor, and when everything read has been
//! consumed the cursor starts over. Nothing is allocated, zeroed or reference-counted per read,
//! which a `BytesMut` split per message did (an allocation and a reservation per delivery, a
//! tenth of the load generator's time at 10,000 subscribers).

use std::ops::Deref;

/// Bytes read and not yet consumed: `data[start..end]`.
#[derive(Debug)]
pub(crate) struct ReadBuf {
    data: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadBuf {
    /// An empty buffer with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        ReadBuf {
            data: vec![0; capacity],
            start: 0,
            end: 0,
        }
    }

    /// Consumes the first `n` bytes.
    pub(crate) fn advance(&mut self, n: usize) {
        assert!(n <= self.len(), "advance past the end of a ReadBuf");
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Free room of at least `min` bytes after the unread ones, to read into: the unread bytes
    /// move to the front first, and the buffer grows only if that is not enough.
    pub(crate) fn room(&mut self, min: usize) -> &mut [u8] {
        if self.data.len() - self.end < min {
            if self.start > 0 {
                self.data.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.data.len() - self.end < min {
                self.data.resize(self.end + min, 0);
            }
        }
        &mut self.data[self.end..]
    }

    /// `n` bytes were read into the start of [`room`](Self::room).
    pub(crate) fn filled(&mut self, n: usize) {
        assert!(
            self.end + n <= self.data.len(),
            "filled past a ReadBuf's room"
        );
        self.end += n;
    }
}

impl Deref for ReadBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.data[self.start..self.end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_consumes_compacts_and_grows() {
        let mut b = ReadBuf::with_capacity(8);
        b.room(4)[..6].copy_from_slice(b"abcdef");
        b.filled(6);
        b.advance(4);
        assert_eq!(&b[..], b"ef");
        // 2 bytes of room left at the end: the unread bytes move to the front.
        let room = b.room(5);
        assert_eq!(room.len(), 6);
        room[..3].copy_from_slice(b"ghi");
        b.filled(3);
        assert_eq!(&b[..], b"efghi");
        // Not enough even then: it grows.
        assert!(b.room(100).len() >= 100);
        assert_eq!(&b[..], b"efghi");
        b.advance(5);
        assert!(b.is_empty());
        assert_eq!(b.room(1).len(), b.data.len());
    }
}

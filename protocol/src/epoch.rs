//! Epochs and cursors: how an id says which life of a server it came from (docs/PROTOCOL.md §1).
//!
//! Ids count from 1 again each time a server starts, so an id alone cannot tell a client's
//! cursor from the last life apart from one of this life. Every life of a server therefore
//! draws an [`Epoch`], and a client that wants to survive restarts resumes with a [`Cursor`]
//! that names it: `EPOCH-ID`. A cursor from another epoch is not an error but a reset: the
//! server says so, with its epoch, and serves this life's events from the oldest it keeps.
//! A bare `ID` still works within one life, for simple clients.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::str::FromStr;

/// One life of a server: 32 random bits, written as 8 lowercase hex digits.
///
/// Fixed width on purpose: an SSE event's `id:` carries it, and a figure of bytes per event
/// should not move with how many leading zeros a run drew.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u32);

impl Epoch {
    /// A new epoch, unlike any earlier life's but by a 1 in 2³² chance.
    ///
    /// std's `RandomState` is seeded from the OS's random source once per process and then
    /// varied per instance, so hashing the time and pid through it needs no extra crate.
    pub fn fresh() -> Epoch {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        h.write_u128(now);
        h.write_u32(std::process::id());
        let bits = h.finish();
        Epoch((bits ^ (bits >> 32)) as u32)
    }

    /// The epoch these 32 bits write.
    pub const fn from_bits(bits: u32) -> Epoch {
        Epoch(bits)
    }

    /// The 8 hex digits as ASCII bytes, for encoders that write bytes.
    pub fn hex(self) -> [u8; 8] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 8];
        for (i, b) in out.iter_mut().enumerate() {
            *b = DIGITS[((self.0 >> (28 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Why a cursor or epoch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a cursor is a whole number, or EPOCH-ID with EPOCH 8 lowercase hex digits, got {0:?}")]
pub struct CursorError(pub String);

impl FromStr for Epoch {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Epoch, CursorError> {
        let ok = s.len() == 8 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        ok.then(|| u32::from_str_radix(s, 16).ok())
            .flatten()
            .map(Epoch)
            .ok_or_else(|| CursorError(s.to_owned()))
    }
}

/// Where a subscriber stands: after event `id`, of the life `epoch` when it says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The life the id belongs to; `None` for a bare id, taken to mean the server's current one.
    pub epoch: Option<Epoch>,
    /// The last id the subscriber has.
    pub id: u64,
}

impl Cursor {
    /// A bare id, read in whatever life the server is in.
    pub const fn bare(id: u64) -> Cursor {
        Cursor { epoch: None, id }
    }

    /// `id` of the life `epoch`.
    pub const fn of(epoch: Epoch, id: u64) -> Cursor {
        Cursor {
            epoch: Some(epoch),
            id,
        }
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    /// `ID` or `EPOCH-ID`.
    fn from_str(s: &str) -> Result<Cursor, CursorError> {
        let bad = || CursorError(s.to_owned());
        let (epoch, id) = match s.split_once('-') {
            Some((epoch, id)) => (Some(epoch.parse().map_err(|_| bad())?), id),
            None => (None, s),
        };
        // `u64::from_str` takes a leading `+`; a cursor is digits only.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let id = id.parse().map_err(|_| bad())?;
        Ok(Cursor { epoch, id })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.epoch {
            Some(epoch) => write!(f, "{epoch}-{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let e = Epoch::from_bits(0x00ab_cdef);
        assert_eq!(e.to_string(), "00abcdef");
        assert_eq!(&e.hex(), b"00abcdef");
        for (text, cursor) in [
            ("7", Cursor::bare(7)),
            ("00abcdef-0", Cursor::of(e, 0)),
            ("00abcdef-18446744073709551615", Cursor::of(e, u64::MAX)),
        ] {
            assert_eq!(text.parse::<Cursor>(), Ok(cursor));
            assert_eq!(cursor.to_string(), text);
        }
        for bad in [
            "",
            "-1",
            "+1",
            "x",
            "1-2",
            "00ABCDEF-1",
            "00abcdef-",
            "00abcdef-+1",
            "0abcdef-1",
            "00abcdef-1-2",
            "00abcdef-18446744073709551616",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad}");
        }
    }

    #[test]
    fn fresh_epochs_differ() {
        let a: Vec<Epoch> = (0..64).map(|_| Epoch::fresh()).collect();
        let mut b = a.clone();
        b.sort_by_key(|e| e.0);
        b.dedup();
        // 64 draws of 32 bits collide with a chance of about 5 in 10 million.
        assert_eq!(b.len(), a.len());
    }
}

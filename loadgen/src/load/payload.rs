//! The load generator's payload: it carries its own sequence number and due time, so any
//! subscriber can time a delivery without asking the publisher, in any process.
//!
//! Format (one line of ASCII): `pb2 <seq> <due_unix_ns> <sent_after_due_ns> ` followed by `.`
//! padding up to the requested size. The send offset is how late the publisher actually sent
//! the event, so a subscriber can time `sent → received` beside the headline `due → received`
//! (written as an offset, it stays a few digits and the stamp fits a 64-byte payload). The padding is plain ASCII so no transport escapes it and bytes on the wire
//! stay comparable across transports.

use std::fmt::Write as _;

/// Marks a payload as ours, and its format version.
const MAGIC: &str = "pb2 ";

/// Smallest payload that can hold the header with the largest numbers.
pub const MIN_PAYLOAD: usize = MAGIC.len() + 3 * (20 + 1);

/// What a payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Position in the publish schedule, from 0.
    pub seq: u64,
    /// When the schedule wanted it published, in ns since the Unix epoch.
    pub due_unix_ns: u64,
    /// How long after its due time the publisher sent it, in ns.
    pub sent_after_due_ns: u64,
}

impl Stamp {
    /// When it was sent, in ns since the Unix epoch.
    pub fn sent_unix_ns(&self) -> u64 {
        self.due_unix_ns.saturating_add(self.sent_after_due_ns)
    }
}

/// Builds the payload for `stamp`, padded to `size` bytes (or just the header if larger).
pub fn encode(stamp: Stamp, size: usize, out: &mut String) {
    out.clear();
    let _ = write!(
        out,
        "{MAGIC}{} {} {} ",
        stamp.seq, stamp.due_unix_ns, stamp.sent_after_due_ns
    );
    while out.len() < size {
        out.push('.');
    }
}

/// Reads the stamp back; `None` for a payload that is not ours (another publisher's event).
pub fn decode(payload: &[u8]) -> Option<Stamp> {
    let rest = payload.strip_prefix(MAGIC.as_bytes())?;
    let mut fields = rest.splitn(4, |&b| b == b' ');
    let seq = parse_u64(fields.next()?)?;
    let due_unix_ns = parse_u64(fields.next()?)?;
    let sent_after_due_ns = parse_u64(fields.next()?)?;
    fields.next()?;
    Some(Stamp {
        seq,
        due_unix_ns,
        sent_after_due_ns,
    })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        if !d.is_ascii_digit() {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let stamp = Stamp {
            seq: 17,
            due_unix_ns: 1_764_000_000_123_456_789,
            sent_after_due_ns: 4_321,
        };
        let mut s = String::new();
        encode(stamp, 64, &mut s);
        assert_eq!(s.len(), 64);
        assert!(pushbench_protocol::validate_payload(s.as_bytes()).is_ok());
        assert_eq!(decode(s.as_bytes()), Some(stamp));
        encode(stamp, 0, &mut s);
        assert_eq!(decode(s.as_bytes()), Some(stamp));
        let max = Stamp {
            seq: u64::MAX,
            due_unix_ns: u64::MAX,
            sent_after_due_ns: u64::MAX,
        };
        encode(max, 0, &mut s);
        assert_eq!(s.len(), MIN_PAYLOAD);
        assert_eq!(decode(s.as_bytes()), Some(max));
    }

    #[test]
    fn rejects_foreign_payloads() {
        for p in [
            &b"hello"[..],
            b"pb2 ",
            b"pb2 1 2",
            b"pb2 1 2 3",
            b"pb2 x 2 3 ",
            b"pb2 1 99999999999999999999999 3 ",
            b"pb1 1 2 ",
        ] {
            assert_eq!(decode(p), None, "{:?}", String::from_utf8_lossy(p));
        }
    }
}

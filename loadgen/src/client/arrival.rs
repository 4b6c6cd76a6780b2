//! Arrival times: when a subscription's bytes reached its socket, as the kernel stamped them.
//!
//! Why the kernel's stamp and not the clock at the read: the read comes after the load
//! generator has woken up and got round to the socket, and that wait belongs to the instrument,
//! not to the server it measures. At 10,000 subscribers it was a wake-up of the generator's
//! core per delivery, which is most of what a delivery costs there on a virtual CPU. With the
//! kernel's stamp (`SO_TIMESTAMPNS`, taken as the packet is queued to the socket) a delivery's
//! time no longer depends on when it is read, so the readiness loop may let deliveries gather
//! for a moment and read them together (`load/hot.rs`, `--coalesce`) without moving any
//! latency. One read returns the stamp of the latest packet it took; an event read together
//! with later packets is timed by them, later than it arrived by at most the coalescing
//! interval, never earlier.
//!
//! The stamp is wall-clock time (`CLOCK_REALTIME`, the only clock socket stamps use); it is
//! turned into an [`Instant`] against a [`Clocks`] pair read close to it, so a wall clock
//! stepped or slewed during a run moves nothing.

use std::io;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};

/// How long after its bytes arrived a read may come before it counts as late: the load
/// generator was behind its reading. Reports flag a run whose late reads exceed 1% (a read
/// delay above this at p99; `load/assemble.rs`), because past that a long poll's next request
/// or a gateway device's ack went out late, and socket buffers filling could hold the server
/// back. It is the same 5 ms the report allows the load generator's timers.
pub const LATE_READ: Duration = Duration::from_millis(5);

/// Asks the kernel to stamp what arrives on `socket` from now on.
pub(crate) fn enable(socket: &impl AsFd) -> io::Result<()> {
    setsockopt(socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)
}

/// The monotonic clock and the wall clock, read together: converts a wall-clock stamp into an
/// [`Instant`].
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    mono: Instant,
    wall: Duration,
}

impl Clocks {
    /// Both clocks now.
    pub fn now() -> Clocks {
        let mono = Instant::now();
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clocks { mono, wall }
    }

    /// The monotonic reading.
    pub fn mono(&self) -> Instant {
        self.mono
    }

    /// The same pair, moved to the monotonic instant `at` (a time the caller decides by,
    /// slightly ahead of the reading).
    pub fn at(&self, at: Instant) -> Clocks {
        let wall = match at.checked_duration_since(self.mono) {
            Some(ahead) => self.wall + ahead,
            None => self.wall.saturating_sub(self.mono - at),
        };
        Clocks { mono: at, wall }
    }

    /// The instant a wall-clock stamp (time since the Unix epoch) stands for.
    pub fn instant(&self, stamp: Duration) -> Instant {
        let at = match self.wall.checked_sub(stamp) {
            Some(before) => self.mono.checked_sub(before),
            None => self.mono.checked_add(stamp - self.wall),
        };
        at.unwrap_or(self.mono)
    }
}

/// Room for one `SCM_TIMESTAMPNS` message (a `cmsghdr` and a `timespec`), aligned as a
/// `cmsghdr` must be.
#[repr(C, align(8))]
struct Control([u8; 64]);

/// One read of a non-blocking `socket` into `buf`: the bytes read (`0` at the end of the
/// stream) and when the latest of them arrived, or `None` if the kernel gave no stamp (bytes
/// queued before [`enable`], or in the moment after the first socket of the system asked,
/// before the kernel turned stamping on).
pub(crate) fn read(
    socket: &impl AsFd,
    buf: &mut [u8],
    clocks: &Clocks,
) -> io::Result<(usize, Option<Instant>)> {
    let mut control = Control([0; 64]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(
        socket.as_fd().as_raw_fd(),
        &mut iov,
        Some(&mut control.0),
        MsgFlags::empty(),
    )
    .map_err(io::Error::from)?;
    let mut stamp = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmTimestampns(ts) = cmsg {
                let (secs, nanos) = (ts.tv_sec(), ts.tv_nsec());
                if let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) {
                    stamp = Some(clocks.instant(Duration::new(secs, nanos)));
                }
            }
        }
    }
    Ok((msg.bytes, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn converts_wall_stamps_both_ways() {
        let clocks = Clocks::now();
        let earlier = clocks.wall - Duration::from_micros(250);
        assert_eq!(
            clocks.mono - clocks.instant(earlier),
            Duration::from_micros(250)
        );
        let later = clocks.wall + Duration::from_micros(40);
        assert_eq!(
            clocks.instant(later) - clocks.mono,
            Duration::from_micros(40)
        );
    }

    #[test]
    fn stamps_arrivals_before_the_read() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let reader = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        enable(&reader).unwrap();
        let (mut writer, _) = listener.accept().unwrap();
        // The kernel turns stamping on for the whole system a moment after the first socket
        // asks (from a work queue), so the first bytes may come unstamped.
        let mut buf = [0u8; 16];
        for _ in 0..200 {
            writer.write_all(b"warm").unwrap();
            std::thread::sleep(Duration::from_millis(5));
            if read(&reader, &mut buf, &Clocks::now()).unwrap().1.is_some() {
                break;
            }
        }
        let sent = Instant::now();
        writer.write_all(b"hello").unwrap();
        // The bytes wait in the socket while the reader is busy elsewhere: their stamp is when
        // they came, not when they were read.
        std::thread::sleep(Duration::from_millis(30));
        let (n, stamp) = read(&reader, &mut buf, &Clocks::now()).unwrap();
        let read_at = Instant::now();
        assert_eq!(&buf[..n], b"hello");
        let stamp = stamp.expect("the kernel stamps a socket that asked for it");
        // A little slack either way for the two clocks' readings.
        assert!(
            stamp + Duration::from_millis(1) >= sent,
            "{stamp:?} {sent:?}"
        );
        assert!(
            read_at.duration_since(stamp) >= Duration::from_millis(25),
            "stamped at the read, not at the arrival"
        );
    }
}

//! CPU and memory of a process, read from `/proc` (Linux).
//!
//! CPU time is `utime + stime` of `/proc/PID/stat`, in the kernel's USER_HZ ticks, which the
//! Linux ABI fixes at 100 per second for `/proc` on every mainstream architecture. RSS is
//! `VmRSS` of `/proc/PID/status`.

use std::time::Duration;

/// The kernel's USER_HZ for `/proc/PID/stat`.
const TICKS_PER_SECOND: u64 = 100;

/// One reading of one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcSample {
    /// CPU time used since the process started (user + system).
    pub cpu: Duration,
    /// Resident memory, in bytes.
    pub rss_bytes: u64,
}

/// Reads `pid` (or this process when `None`). `None` if the process is gone or `/proc` is not
/// there.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    Some(ProcSample {
        cpu: parse_cpu(&stat)?,
        rss_bytes: parse_rss(&status)?,
    })
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted after its last `)`.
fn parse_cpu(stat: &str) -> Option<Duration> {
    let after = &stat[stat.rfind(')')? + 1..];
    let mut fields = after.split_whitespace();
    // After the name: state is field 3, so utime (14) and stime (15) are the 12th and 13th here.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}

fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time of the calling thread alone, from `/proc/thread-self/schedstat` (its first field,
/// ns on a CPU: finer than `stat`'s 10 ms ticks).
pub fn thread_cpu() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Cores this process may run on (its affinity mask), for CPU utilisation.
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).expect("/proc/self is readable on Linux");
        assert!(s.rss_bytes > 0);
        assert!(sample(Some(u32::MAX)).is_none());
        let a = thread_cpu().expect("schedstat is readable on Linux");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(thread_cpu().unwrap() > a);
    }
}

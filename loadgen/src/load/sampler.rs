//! CPU and memory of a process, read from `/proc` (Linux).
//!
//! CPU time is the sum of every thread's time on a CPU from `/proc/PID/task/*/schedstat`, in
//! nanoseconds. `utime + stime` of `/proc/PID/stat` counts in USER_HZ ticks (10 ms), too coarse
//! for a short run's few hundred milliseconds: a quick run's CPU per delivery moved by a third
//! between two runs from the ticks alone. Threads that have exited are missing from `task/`,
//! while the process's `stat` still counts them, so the reading is the process's ticks with each
//! live thread's ticks replaced by its nanoseconds: exited threads stay at tick resolution, but
//! their part no longer changes, so differences between readings are exact. RSS is `VmRSS` of
//! `/proc/PID/status`.

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
    let ticks = parse_cpu(&stat)?;
    Some(ProcSample {
        cpu: ticks + threads_refinement(&dir).unwrap_or_default(),
        rss_bytes: parse_rss(&status)?,
    })
}

/// Reads `pid` and every process below it, summed (this process alone when `None`): a server
/// that runs as several processes, such as Pushpin's runner and the services it starts, is
/// measured whole. A server of one process reads as [`sample`] does. A descendant that ends
/// between two readings drops out of the later one.
pub fn sample_tree(pid: Option<u32>) -> Option<ProcSample> {
    let Some(pid) = pid else {
        return sample(None);
    };
    let mut total = sample(Some(pid))?;
    for child in children(pid) {
        if let Some(s) = sample_tree(Some(child)) {
            total.cpu += s.cpu;
            total.rss_bytes += s.rss_bytes;
        }
    }
    Some(total)
}

/// The children of `pid`, from each of its threads' `children` list.
fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// What the live threads under `dir` (`/proc/PID`) ran beyond their whole ticks: each one's
/// schedstat nanoseconds minus its `stat` ticks (never below zero in total). A thread that
/// exits between the two reads is skipped.
fn threads_refinement(dir: &str) -> Option<Duration> {
    let mut extra_ns: i128 = 0;
    for task in std::fs::read_dir(format!("{dir}/task")).ok()?.flatten() {
        let path = task.path();
        let (Ok(sched), Ok(stat)) = (
            std::fs::read_to_string(path.join("schedstat")),
            std::fs::read_to_string(path.join("stat")),
        ) else {
            continue;
        };
        let (Some(ns), Some(ticks)) = (
            sched
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok()),
            parse_cpu(&stat),
        ) else {
            continue;
        };
        extra_ns += i128::from(ns) - ticks.as_nanos() as i128;
    }
    Some(Duration::from_nanos(extra_ns.max(0) as u64))
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

/// The time the hypervisor ran other guests while this machine's virtual CPUs wanted to run
/// (`steal` of `/proc/stat`), summed over every CPU, and how many CPUs that is.
///
/// Why: on a shared virtual machine a vCPU can be held off for milliseconds at a time, which
/// shows up as late timers and late reads on both sides of a run; a report that gives the
/// steal of its window tells such a run from a slow server or a saturated generator.
pub fn steal() -> Option<(Duration, usize)> {
    parse_steal(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_steal(stat: &str) -> Option<(Duration, usize)> {
    let mut total = None;
    let mut cpus = 0;
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        match fields.next() {
            // user nice system idle iowait irq softirq steal
            Some("cpu") => total = fields.nth(7).and_then(|v| v.parse::<u64>().ok()),
            Some(name) if name.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    Some((
        Duration::from_millis(total? * 1000 / TICKS_PER_SECOND),
        cpus,
    ))
}

/// Cores this process may run on (its affinity mask), for CPU utilisation.
pub fn usable_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_steal_of_all_cpus_and_counts_them() {
        let stat = "cpu  99281 0 28403 271162 782 0 9050 3249 0 0\n\
                    cpu0 47827 0 14245 138213 136 0 4923 1319 0 0\n\
                    cpu1 51453 0 14158 132949 645 0 4126 1929 0 0\n\
                    intr 1 2 3\n";
        assert_eq!(parse_steal(stat), Some((Duration::from_millis(32_490), 2)));
        assert_eq!(parse_steal("intr 1\n"), None);
        assert!(steal().is_some_and(|(_, cpus)| cpus >= 1));
    }

    #[test]
    fn parses_stat_with_awkward_names() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu(stat), Some(Duration::from_millis(3000)));
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).expect("/proc/self is readable on Linux");
        assert!(s.rss_bytes > 0);
        // Nanosecond resolution: 3 ms of spinning shows, where 10 ms ticks could miss it.
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(3) {}
        assert!(sample(None).unwrap().cpu > s.cpu);
        assert!(sample(Some(u32::MAX)).is_none());
        let a = thread_cpu().expect("schedstat is readable on Linux");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(thread_cpu().unwrap() > a);
    }
}

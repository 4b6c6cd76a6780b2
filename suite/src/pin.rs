//! Pinning: the server on one core, the load generator on the others, so neither steals the
//! other's CPU and "one server core" means one core. Done with `taskset` (util-linux), which
//! keeps the crate free of unsafe affinity calls.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

/// Where the suite's processes run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pinning {
    /// Whether pinning is in effect.
    pub pinned: bool,
    /// The server's core.
    pub server_core: Option<usize>,
    /// The load generator's cores (this process, its threads and worker processes).
    pub loadgen_cores: Vec<usize>,
    /// Why pinning is off, when it is.
    pub note: Option<String>,
}

impl Pinning {
    /// Pins this process (every thread it has, and so every thread and child it starts later)
    /// to every allowed core but the first, which the servers get. Falls back to no pinning,
    /// with a note, on one core or without `taskset`.
    pub fn apply() -> Pinning {
        let cores = allowed_cores();
        if cores.len() < 2 {
            return Pinning::off(format!(
                "{} usable core(s): server and load generator share them",
                cores.len()
            ));
        }
        let (server, loadgen) = (cores[0], cores[1..].to_vec());
        let list: Vec<_> = loadgen.iter().map(usize::to_string).collect();
        let ok = Command::new("taskset")
            .args(["-a", "-p", "-c", &list.join(",")])
            .arg(std::process::id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return Pinning::off("taskset (util-linux) is missing or failed: not pinned".into());
        }
        Pinning {
            pinned: true,
            server_core: Some(server),
            loadgen_cores: loadgen,
            note: None,
        }
    }

    fn off(note: String) -> Pinning {
        Pinning {
            pinned: false,
            server_core: None,
            loadgen_cores: Vec::new(),
            note: Some(note),
        }
    }

    /// The server's core, when pinning is in effect.
    pub fn pinned_server_core(&self) -> Option<usize> {
        self.server_core.filter(|_| self.pinned)
    }

    /// A command that runs `program` on the server core (or unpinned).
    pub fn server_command(&self, program: &Path) -> Command {
        match self.server_core {
            Some(core) if self.pinned => {
                let mut cmd = Command::new("taskset");
                cmd.args(["-c", &core.to_string()]).arg(program);
                cmd
            }
            _ => Command::new(program),
        }
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        match (&self.server_core, self.pinned) {
            (Some(s), true) => {
                let l: Vec<_> = self.loadgen_cores.iter().map(usize::to_string).collect();
                format!(
                    "server on core {s}, load generator on core(s) {}",
                    l.join(",")
                )
            }
            _ => format!(
                "not pinned: {}",
                self.note.as_deref().unwrap_or("unknown reason")
            ),
        }
    }
}

/// Moves the calling thread (only) to `core`, via its thread id and `taskset -p`: for the
/// suite's own measurements whose server half is a thread, not a process.
pub fn pin_this_thread(core: usize) {
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    // `/proc/thread-self` points at `PID/task/TID`.
    if let Some(tid) = link.file_name().and_then(|t| t.to_str()) {
        let _ = Command::new("taskset")
            .args(["-p", "-c", &core.to_string(), tid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The cores this process may run on, from `Cpus_allowed_list` in `/proc/self/status`.
fn allowed_cores() -> Vec<usize> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap_or("")
        .trim();
    parse_cpu_list(list)
}

/// Parses a kernel CPU list such as `0-3,6`.
fn parse_cpu_list(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<usize>(), b.trim().parse::<usize>()) {
                    cores.extend(a..=b);
                }
            }
            None => cores.extend(part.trim().parse::<usize>().ok()),
        }
    }
    cores
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-3,6"), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("1"), vec![1]);
        assert!(parse_cpu_list("").is_empty());
    }
}

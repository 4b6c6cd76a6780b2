//! The environment a run happened in, for the report: results mean little without it.

use serde::{Deserialize, Serialize};

/// Machine, kernel and build of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    /// CPU model name from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Cores online on the machine.
    pub cores_online: usize,
    /// Cores the load generator may use (its affinity).
    pub cores_usable: usize,
    /// Memory of the machine in bytes.
    pub mem_total_bytes: u64,
    /// Kernel release.
    pub kernel: String,
    /// Host name.
    pub hostname: String,
    /// pushbench's version.
    pub pushbench_version: String,
    /// The git revision it was built from (`-dirty` with uncommitted changes).
    pub git_rev: String,
    /// The compiler that built it.
    pub rustc: String,
    /// Whether it was an optimised build; debug-build numbers are not comparable.
    pub release_build: bool,
}

impl Environment {
    /// Reads it from this machine.
    pub fn detect() -> Environment {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|(_, v)| v)
            })
            .unwrap_or("unknown")
            .trim()
            .to_owned();
        let cores_online = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let mem_total_bytes = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024);
        Environment {
            cpu_model,
            cores_online: cores_online.max(1),
            cores_usable: super::sampler::usable_cores(),
            mem_total_bytes,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
            pushbench_version: env!("CARGO_PKG_VERSION").to_owned(),
            git_rev: env!("PUSHBENCH_GIT_REV").to_owned(),
            rustc: env!("PUSHBENCH_RUSTC").to_owned(),
            release_build: !cfg!(debug_assertions),
        }
    }
}

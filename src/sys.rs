//! Process limits that a server or load generator with thousands of sockets runs into.

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
///
/// Each socket is a file descriptor; the soft limit is often 1,024 while the hard limit allows
/// far more (20,000 on this project's machines).
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

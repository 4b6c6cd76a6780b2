//! [`LoadError`]: why a run could not start or finish. Its own file, so the worker handles can
//! return it without importing the orchestration that uses them.

use crate::target::TargetError;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration makes no sense.
    #[error("{0}")]
    Config(String),
    /// The target is not a usable address.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// More sockets than one process may open.
    #[error(
        "{needed} sockets needed but this process may open only {limit} files; \
         run fewer --clients per process with --workers K"
    )]
    TooManySockets {
        /// Sockets the run needs.
        needed: u64,
        /// The open-files limit.
        limit: u64,
    },
    /// A thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The gateway refused to set up the run's devices.
    #[error("gateway: {0}")]
    Gateway(String),
    /// No subscriber could connect.
    #[error("no subscriber could connect to {target}: {errors}")]
    NoSubscribers {
        /// The target.
        target: String,
        /// The errors, by kind.
        errors: String,
    },
}

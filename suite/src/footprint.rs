//! `[idle]`'s parts of a connection: each lean subscription's own state, taken from the build
//! that ran ([`pushbench_servers::footprint`]), kept in `summary.json` beside the memory the run
//! measured; [`crate::footprint_report`] sets them side by side.

use pushbench_servers::Transport;
use serde::{Deserialize, Serialize};

/// One technique's lean subscription in the build that ran, in bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Footprint {
    pub transport: Transport,
    /// Its task's future: the subscription's whole state but what it allocates.
    pub task_state_bytes: u64,
    /// Its entry with the topic's fan-out; 0 for a long poll.
    pub fanout_entry_bytes: u64,
}

/// The footprints of this build's lean subscriptions.
pub async fn measure() -> std::io::Result<Vec<Footprint>> {
    Ok(pushbench_servers::footprint()
        .await?
        .into_iter()
        .map(|f| Footprint {
            transport: f.transport,
            task_state_bytes: f.task_state as u64,
            fanout_entry_bytes: f.fanout_entry as u64,
        })
        .collect())
}

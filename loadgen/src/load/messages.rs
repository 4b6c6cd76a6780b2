//! What the collector and a worker say to each other: the worker's plan, the collector's
//! control messages, and the worker's reports (which serialise, so a worker may be another
//! process). Apart from `worker.rs` so the readiness loop (`hot.rs`) and the accounting
//! (`account.rs`) can use them without depending on the worker that drives them.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::recorder::{hist_serde, Recorder};
use super::schedule::Clock;
use crate::client::ClientConfig;
use crate::counters::CountersSnapshot;
use crate::target::Target;

/// How often a worker hands its interval histogram to the collector.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How often a worker (and its readiness loop) checks its own timer lateness.
pub(super) const LAG_PROBE: Duration = Duration::from_millis(10);

/// What a worker must do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Worker number, from 0.
    pub index: usize,
    /// Subscribers this worker runs.
    pub clients: usize,
    /// New subscriptions per second on this worker.
    pub ramp: f64,
    /// Where to subscribe.
    pub target: Target,
    /// How each client subscribes.
    pub client: ClientConfig,
    /// Events due before the window (their deliveries are not measured).
    pub warmup_events: u64,
    /// Events in the window.
    pub window_events: u64,
    /// The run's clock, to convert receive instants to Unix time.
    pub clock: Clock,
    /// Against the gateway when sending to tokens: the run's device number of this worker's
    /// first client, so client `i` uses token `first_device + i`.
    pub first_device: usize,
    /// Read streaming, SSE and WebSocket subscriptions in their steady state in one readiness
    /// loop ([`super::hot`]) rather than as a task each.
    pub hot: bool,
    /// How long the readiness loop lets deliveries gather after a batch of reads
    /// ([`super::hot`]); zero reads each as soon as it comes.
    pub coalesce: Duration,
}

/// What the collector tells a worker.
#[derive(Debug, Clone, Copy)]
pub enum Control {
    /// The measurement window opens at this instant: take the counter marks then.
    Window(Instant),
    /// Against the gateway: the devices chosen to go offline are away from `from` to `until`.
    Offline {
        /// When they go.
        from: Instant,
        /// When they come back.
        until: Instant,
    },
    /// Stop every subscriber and report.
    Stop,
}

/// What a worker tells the collector.
#[derive(Debug, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Every client of the worker has subscribed or failed to.
    Subscribed {
        /// Worker number.
        worker: usize,
        /// Clients that subscribed (the others failed).
        #[serde(default)]
        connected: u64,
    },
    /// Live counts of this worker (absolute).
    Progress {
        /// Worker number.
        worker: usize,
        /// First deliveries of window events so far.
        delivered: u64,
        /// Clients subscribed so far.
        connected: u64,
        /// Reconnects of its subscribers so far (the timeline of a mass drop's recovery).
        #[serde(default)]
        reconnects: u64,
    },
    /// Latencies recorded since the previous interval.
    Interval {
        /// Worker number.
        worker: usize,
        /// The interval's latencies.
        #[serde(with = "hist_serde")]
        histogram: Histogram<u64>,
    },
    /// The worker's totals; the last message it sends.
    Done {
        /// Worker number.
        worker: usize,
        /// Everything it recorded.
        recorder: Box<Recorder>,
        /// Socket counters from the window's opening to the stop.
        window: CountersSnapshot,
        /// Socket counters of the whole run.
        total: CountersSnapshot,
        /// CPU of the worker's thread from the window's opening to the stop, ns.
        #[serde(default)]
        window_cpu_ns: u64,
    },
}

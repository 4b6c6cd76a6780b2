//! The headline numbers: one value per metric and technique, read from a [`Summary`]. The
//! report's summary table shows them; `compare` checks them between runs.

use pushbench_servers::Transport;

use crate::plan::Experiment;
use crate::summary::{Server, Summary};

/// Which way is better.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (latency, cost).
    Lower,
    /// Larger is better (capacity).
    Higher,
}

/// One headline metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// Stable key (`compare` output, tests).
    pub key: &'static str,
    /// Column title.
    pub title: &'static str,
    /// Unit shown after values.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Whether `compare` checks its ratios between techniques. Step-quantised limits
    /// (capacity, throughput) move by a whole step on noise, so they are shown, not checked.
    pub checked: bool,
    /// Whether short polling's figure is set by its poll interval (a latency waits on average
    /// half of it), not by how fast the machine is: `compare` then judges that figure against
    /// the published one directly, and leaves it out of the median that says how the machine
    /// moved. (A machine 19% slower would otherwise flag short polling as having moved 26%.)
    pub poll_interval_bound: bool,
    /// Reads the value.
    pub read: fn(&Summary, Transport) -> Option<f64>,
}

/// Every headline metric, in table order.
pub const METRICS: [Metric; 11] = [
    Metric {
        key: "latency_p50_ms",
        title: "p50, 1 sub",
        unit: "ms",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: true,
        read: |s, t| ms(s.latency_run(Server::Pushbench, t)?.latency_us.p50),
    },
    Metric {
        key: "latency_p99_ms",
        title: "p99, 1 sub",
        unit: "ms",
        better: Better::Lower,
        checked: false,
        poll_interval_bound: true,
        read: |s, t| ms(s.latency_run(Server::Pushbench, t)?.latency_us.p99),
    },
    Metric {
        key: "fanout_p99_ms",
        title: "p99, most subs",
        unit: "ms",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: true,
        read: |s, t| ms(s.fanout_top(Server::Pushbench, t)?.latency_us.p99),
    },
    Metric {
        key: "cpu_ms_per_1k",
        title: "server CPU per 1k deliveries",
        unit: "ms",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: false,
        // 0 means less than one CPU tick (10 ms) in the window: below resolution.
        read: |s, t| nonzero(s.fanout_top(Server::Pushbench, t)?.server_cpu_ms_per_1k?),
    },
    Metric {
        key: "rss_per_conn_kib",
        title: "server RSS per idle conn",
        unit: "KiB",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: false,
        read: |s, t| Some(s.idle_run(t)?.rss_per_conn_bytes? / 1024.0),
    },
    Metric {
        key: "bytes_per_event",
        title: "bytes per delivery",
        unit: "B",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: false,
        read: |s, t| nonzero(s.fanout_top(Server::Pushbench, t)?.bytes_down_per_event),
    },
    Metric {
        key: "requests_per_event",
        title: "requests per delivery",
        unit: "",
        better: Better::Lower,
        checked: false,
        poll_interval_bound: false,
        read: |s, t| Some(s.fanout_top(Server::Pushbench, t)?.requests_per_event),
    },
    Metric {
        key: "idle_bytes_per_conn_min",
        title: "idle traffic per conn",
        unit: "B/min",
        better: Better::Lower,
        checked: false,
        poll_interval_bound: false,
        read: |s, t| {
            let r = s.idle_run(t)?;
            let per = r.bytes_down as f64 / r.clients_connected.max(1) as f64;
            Some(per * 60.0 / r.window_s.max(1e-9))
        },
    },
    Metric {
        key: "capacity_subs",
        title: "capacity",
        unit: "subs",
        better: Better::Higher,
        checked: false,
        poll_interval_bound: false,
        read: |s, t| Some(s.limit(Experiment::Capacity, t)?.value),
    },
    Metric {
        key: "throughput_per_s",
        title: "max deliveries/s",
        unit: "/s",
        better: Better::Higher,
        checked: false,
        poll_interval_bound: false,
        read: |s, t| Some(s.limit(Experiment::Throughput, t)?.value),
    },
    Metric {
        key: "upstream_p50_ms",
        title: "upstream RTT p50",
        unit: "ms",
        better: Better::Lower,
        checked: true,
        poll_interval_bound: false,
        read: |s, t| ms(s.upstream_of(t)?.rtt_us.p50),
    },
];

fn ms(us: u64) -> Option<f64> {
    (us > 0).then(|| us as f64 / 1000.0)
}

fn nonzero(v: f64) -> Option<f64> {
    (v > 0.0).then_some(v)
}

/// Whether the run behind a headline figure had the load generator saturated: then the figure
/// may be the load generator's, not the server's, and is marked as a floor (a limit is at
/// least that; a latency or cost is what a saturated instrument read, an upper bound).
pub fn generator_limited(key: &str, s: &Summary, t: Transport) -> bool {
    let p = Server::Pushbench;
    let run = match key {
        "latency_p50_ms" | "latency_p99_ms" => s.latency_run(p, t),
        "fanout_p99_ms" | "cpu_ms_per_1k" | "bytes_per_event" | "requests_per_event" => {
            s.fanout_top(p, t)
        }
        "rss_per_conn_kib" | "idle_bytes_per_conn_min" => s.idle_run(t),
        "capacity_subs" => {
            return s
                .limit(Experiment::Capacity, t)
                .is_some_and(|l| l.loadgen_limited)
        }
        "throughput_per_s" => {
            return s
                .limit(Experiment::Throughput, t)
                .is_some_and(|l| l.loadgen_limited)
        }
        _ => None,
    };
    run.is_some_and(|r| r.loadgen_saturated)
}

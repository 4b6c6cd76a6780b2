//! Server counters, served as JSON on `/stats` and as Prometheus text on `/metrics`.
//!
//! Plain relaxed atomics: each counter is independent, and readers only need a recent value.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Declares the counters once, so the struct, the JSON and the Prometheus output cannot disagree.
/// Used again for the gateway's own counters (`gateway::stats`), with another prefix.
macro_rules! counters {
    (
        $(#[doc = $sdoc:literal])* $stats:ident, $snapshot:ident, $prefix:literal;
        $( $(#[doc = $doc:literal])* $name:ident : $kind:literal ),* $(,)?
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Debug, Default)]
        pub struct $stats {
            $( $(#[doc = $doc])* pub $name: std::sync::atomic::AtomicU64, )*
        }

        #[doc = concat!("A point-in-time copy of [`", stringify!($stats), "`].")]
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
        pub struct $snapshot {
            $( $(#[doc = $doc])* pub $name: u64, )*
        }

        impl $stats {
            /// Reads every counter.
            pub fn snapshot(&self) -> $snapshot {
                $snapshot { $( $name: self.$name.load(std::sync::atomic::Ordering::Relaxed), )* }
            }
        }

        impl $snapshot {
            #[doc = concat!("Prometheus text exposition format, every name prefixed `", $prefix, "`.")]
            pub fn prometheus(&self, transport: &str) -> String {
                use std::fmt::Write as _;
                let mut out = String::with_capacity(2048);
                $(
                    let help = concat!($($doc),*).trim();
                    let metric = if $kind == "counter" {
                        concat!($prefix, stringify!($name), "_total")
                    } else {
                        concat!($prefix, stringify!($name))
                    };
                    let _ = writeln!(out, "# HELP {metric} {help}");
                    let _ = writeln!(out, "# TYPE {metric} {}", $kind);
                    let _ = writeln!(out, "{metric}{{transport=\"{transport}\"}} {}", self.$name);
                )*
                out
            }
        }
    };
}

pub(crate) use counters;

counters! {
    /// Live counters shared by every connection of one server.
    Stats, Snapshot, "pushbench_";
    /// Connections open now.
    connections_open: "gauge",
    /// Connections accepted since start.
    connections: "counter",
    /// Connections refused because the connection cap was reached: answered 503, or closed
    /// unanswered when too many refusals are already in progress.
    connections_rejected: "counter",
    /// Subscribers (streams, WebSockets, held long polls) open now.
    subscribers_open: "gauge",
    /// HTTP requests handled.
    requests: "counter",
    /// Requests answered with a 4xx status.
    bad_requests: "counter",
    /// Events accepted by publish.
    events_published: "counter",
    /// Events handed to subscribers (one per event per subscriber).
    deliveries: "counter",
    /// Events skipped for slow subscribers under the drop policy.
    drops: "counter",
    /// Events a resuming subscriber asked for that the replay buffer no longer held.
    replay_misses: "counter",
    /// Gap signals sent, for either reason above.
    gaps: "counter",
    /// Subscribers disconnected under the disconnect policy.
    slow_disconnects: "counter",
    /// Events evicted from replay buffers.
    evicted: "counter",
    /// Topics that exist now.
    topics: "gauge",
    /// accept() calls that failed (for example, out of file descriptors).
    accept_errors: "counter",
    /// Connections cut because the peer read nothing for the write timeout.
    write_timeouts: "counter",
    /// Streaming subscribers the publishing side's fan-out handed back to their own task: their
    /// socket was full, or the fan-out itself fell behind.
    handbacks: "counter",
}

impl Stats {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// Adds `n` to a counter. Adding nothing touches nothing: a fan-out counts once per
    /// subscriber, mostly zeros, and each touch is an atomic read-modify-write.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Subtracts one from a gauge.
    pub fn dec(counter: &AtomicU64) {
        counter.fetch_sub(1, Relaxed);
    }
}

/// Selects one gauge of [`Stats`] (or of another counter set, such as the gateway's).
pub type Gauge<S = Stats> = fn(&S) -> &AtomicU64;

/// Holds a gauge up for as long as it lives, so every exit path (error, panic, cancel) brings it
/// back down.
#[derive(Debug)]
pub struct GaugeGuard<S: 'static = Stats> {
    stats: Arc<S>,
    gauge: Gauge<S>,
}

impl<S> GaugeGuard<S> {
    /// Increments the gauge now and decrements it on drop.
    pub fn new(stats: Arc<S>, gauge: Gauge<S>) -> Self {
        Stats::inc(gauge(&stats));
        GaugeGuard { stats, gauge }
    }
}

impl<S> Drop for GaugeGuard<S> {
    fn drop(&mut self) {
        Stats::dec((self.gauge)(&self.stats));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_lists_every_counter() {
        let s = Arc::new(Stats::default());
        Stats::add(&s.deliveries, 7);
        {
            let _g = GaugeGuard::new(s.clone(), |s| &s.connections_open);
            assert_eq!(s.snapshot().connections_open, 1);
        }
        let snap = s.snapshot();
        assert_eq!(snap.connections_open, 0);
        let text = snap.prometheus("sse");
        assert!(text.contains("# TYPE pushbench_deliveries_total counter"));
        assert!(text.contains("pushbench_deliveries_total{transport=\"sse\"} 7"));
        assert!(text.contains("# TYPE pushbench_connections_open gauge"));
        let json = serde_json::to_value(snap).unwrap();
        assert_eq!(json["deliveries"], 7);
    }
}

//! `[faults]`: what a run measured about its fault, read from the load report's time series
//! (every 250 ms: reconnects, server CPU and RSS) and per-second latency histograms, plus what
//! the suite saw itself (the restart's gap, the stalled readers, the server's counters).
//! Its charts and reading are in [`crate::faults_report`].

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use pushbench_loadgen::load::{LoadReport, Timing};
use serde::{Deserialize, Serialize};

use crate::plan::{Fault, FaultStep};
use crate::stall::StallCount;

/// Share of subscribers whose return counts as recovered.
pub const BACK: f64 = 0.99;

/// What a `[faults]` run measured about its fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRun {
    /// What broke.
    pub fault: Option<Fault>,
    /// When, in seconds after the window opened.
    pub at_s: f64,
    /// The subscribers' reconnect policy: `fixed` or `jitter`, and its delay.
    pub backoff: String,
    /// Its delay (fixed) or first cap (jitter), seconds.
    pub reconnect_delay_s: f64,
    /// Restart: from the kill to the new life listening, seconds.
    pub restart_s: Option<f64>,
    /// Subscribers the fault cut (drop, restart): every connected one.
    pub affected: u64,
    /// Seconds from the fault until reconnects since it reached 99% of `affected`, read from
    /// samples 250 ms apart; `None`: not within the run.
    pub back_99_s: Option<f64>,
    /// Reconnects from the fault to the end of the run.
    pub reconnects: u64,
    /// The most reconnects per second over one 250 ms sample.
    pub peak_reconnects_per_s: f64,
    /// Reset signals the subscribers got (restart: one each).
    pub resets: u64,
    /// p99 (µs) of deliveries in the seconds that ended within the window, before the fault
    /// (the load generator's per-second histograms).
    pub p99_before_us: Option<u64>,
    /// p99 (µs) of deliveries from the fault to the recovery's end (drop, restart: 99% back,
    /// plus a second; stall: the end of the window).
    pub p99_after_us: Option<u64>,
    /// The server's CPU (cores) at its busiest 250 ms after the fault (restart: the new life's,
    /// over the rest of the run).
    pub server_cpu_peak_cores: Option<f64>,
    /// Server RSS at the last sample before the fault.
    pub server_rss_before: Option<u64>,
    /// Its peak after the fault.
    pub server_rss_peak: Option<u64>,
    /// Stall: what became of the stalled readers and what the server counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall: Option<StallRun>,
    /// `[t − fault (s), reconnects/s]` per sample, from a second before the fault on.
    pub reconnect_series: Vec<[f64; 2]>,
}

/// What became of the stalled readers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StallRun {
    /// Readers that stalled.
    pub stalled: u64,
    /// Of those, the ones the server closed or reset by the end, as the readers saw it.
    pub cut_by_server: u64,
    /// The server's count of connections cut by its write timeout during the run.
    pub write_timeouts: u64,
    /// The server's count of subscribers disconnected by its slow-subscriber policy.
    pub slow_disconnects: u64,
    /// The server's count of events skipped for slow subscribers (the drop policy).
    pub dropped_events: u64,
}

/// What the suite knows about a fault beside the load report.
#[derive(Debug)]
pub struct Struck {
    /// The fault.
    pub step: FaultStep,
    /// The run's clock.
    pub timing: Timing,
    /// When it struck.
    pub at: Instant,
    /// Restart: how long the server was gone.
    pub restart: Option<Duration>,
    /// Restart: the new life's CPU and memory, which the load generator (sampling the server
    /// it started with) does not see.
    pub new_life: Option<NewLife>,
    /// Stall: the readers' count, and the server's counters' change over the run.
    pub stall: Option<(StallCount, ServerCounts)>,
}

/// A restarted server's peaks, sampled every 250 ms from its start to the run's end.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NewLife {
    /// Its busiest 250 ms, in cores.
    pub cpu_peak: Option<f64>,
    /// Its RSS peak.
    pub rss_peak: Option<u64>,
}

/// The server's counters a stall moves (its `/stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// `write_timeouts`.
    pub write_timeouts: u64,
    /// `slow_disconnects`.
    pub slow_disconnects: u64,
    /// `drops`.
    pub drops: u64,
}

impl ServerCounts {
    /// Reads them from a `/stats` body.
    pub fn parse(stats: &serde_json::Value) -> ServerCounts {
        let get = |k: &str| {
            stats
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0)
        };
        ServerCounts {
            write_timeouts: get("write_timeouts"),
            slow_disconnects: get("slow_disconnects"),
            drops: get("drops"),
        }
    }

    /// `self − earlier`.
    pub fn since(self, earlier: ServerCounts) -> ServerCounts {
        ServerCounts {
            write_timeouts: self.write_timeouts.saturating_sub(earlier.write_timeouts),
            slow_disconnects: self
                .slow_disconnects
                .saturating_sub(earlier.slow_disconnects),
            drops: self.drops.saturating_sub(earlier.drops),
        }
    }
}

impl FaultRun {
    /// Reads what `report` says about the fault `struck`.
    pub fn measure(report: &LoadReport, struck: &Struck) -> FaultRun {
        let since = |i: Instant| i.saturating_duration_since(struck.timing.run_start);
        let fault_t = since(struck.at).as_secs_f64();
        let window_t = since(struck.timing.window_start).as_secs_f64();
        let series = &report.timeseries;
        let before = series.iter().rev().find(|s| s.t_s <= fault_t);
        let base = before.map_or(0, |s| s.reconnects);
        let stalled = struck.step.fault == Fault::Stall;
        let affected = if stalled { 0 } else { report.clients_connected };
        let target = (affected as f64 * BACK).ceil() as u64;
        let back_99_s = (affected > 0)
            .then(|| {
                series
                    .iter()
                    .find(|s| s.t_s > fault_t && s.reconnects.saturating_sub(base) >= target)
                    .map(|s| s.t_s - fault_t)
            })
            .flatten();
        let mut peak = 0f64;
        let mut reconnect_series = Vec::new();
        for w in series.windows(2) {
            let dt = w[1].t_s - w[0].t_s;
            if w[1].t_s < fault_t - 1.0 || dt <= 0.0 {
                continue;
            }
            let rate = w[1].reconnects.saturating_sub(w[0].reconnects) as f64 / dt;
            if w[1].t_s > fault_t {
                peak = peak.max(rate);
            }
            reconnect_series.push([w[1].t_s - fault_t, rate]);
        }
        let end_t = series.last().map_or(fault_t, |s| s.t_s);
        let recovered_t = if stalled {
            end_t
        } else {
            fault_t + back_99_s.unwrap_or(end_t - fault_t) + 1.0
        };
        let after: Vec<_> = series.iter().filter(|s| s.t_s > fault_t).collect();
        // Before: the seconds that ended in the window, before the fault. After: every second
        // that overlaps the recovery, the fault's own included.
        let p99_before_us = p99_of(report, |_, e| e > window_t && e <= fault_t + 1e-3);
        let p99_after_us = p99_of(report, |s, e| e > fault_t && s < recovered_t);
        FaultRun {
            fault: Some(struck.step.fault),
            at_s: struck.step.at.as_secs_f64(),
            backoff: report.config.reconnect.backoff.name().to_owned(),
            reconnect_delay_s: report.config.reconnect.delay.as_secs_f64(),
            restart_s: struck.restart.map(|d| d.as_secs_f64()),
            affected,
            back_99_s,
            reconnects: series
                .last()
                .map_or(0, |s| s.reconnects.saturating_sub(base)),
            peak_reconnects_per_s: peak,
            resets: report.resets,
            p99_before_us,
            p99_after_us,
            server_cpu_peak_cores: match struck.new_life {
                Some(life) => life.cpu_peak,
                None => after
                    .iter()
                    .filter(|s| s.t_s <= recovered_t)
                    .filter_map(|s| s.server_cpu_cores)
                    .reduce(f64::max),
            },
            server_rss_before: before.and_then(|s| s.server_rss_bytes),
            server_rss_peak: match struck.new_life {
                Some(life) => life.rss_peak,
                None => after.iter().filter_map(|s| s.server_rss_bytes).max(),
            },
            stall: struck.stall.map(|(count, server)| StallRun {
                stalled: count.stalled,
                cut_by_server: count.cut_by_server,
                write_timeouts: server.write_timeouts,
                slow_disconnects: server.slow_disconnects,
                dropped_events: server.drops,
            }),
            reconnect_series,
        }
    }

    /// The others' p99 after the fault over before it (stall: the bound is 1.2).
    pub fn p99_ratio(&self) -> Option<f64> {
        match (self.p99_before_us, self.p99_after_us) {
            (Some(b), Some(a)) if b > 0 => Some(a as f64 / b as f64),
            _ => None,
        }
    }

    /// The server's RSS peak after the fault over its RSS before (stall: the bound is 1.5).
    pub fn rss_ratio(&self) -> Option<f64> {
        match (self.server_rss_before, self.server_rss_peak) {
            (Some(b), Some(p)) if b > 0 => Some(p as f64 / b as f64),
            _ => None,
        }
    }
}

/// p99 (µs) of the per-second histograms `take(start, end)` picks (seconds of the run).
fn p99_of(report: &LoadReport, take: impl Fn(f64, f64) -> bool) -> Option<u64> {
    let mut merged: Option<Histogram<u64>> = None;
    for (start, length, h) in &report.intervals {
        if !take(start.as_secs_f64(), (*start + *length).as_secs_f64()) {
            continue;
        }
        match merged.as_mut() {
            Some(m) => {
                let _ = m.add(h);
            }
            None => merged = Some(h.clone()),
        }
    }
    merged
        .filter(|h| !h.is_empty())
        .map(|h| h.value_at_quantile(0.99))
}

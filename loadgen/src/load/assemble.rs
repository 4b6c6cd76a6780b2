//! Report assembly: what the run gathered, turned into a [`LoadReport`] with its derived
//! figures (per-delivery costs, memory per connection, saturation and its warnings).

use std::time::{Duration, Instant};

use super::collector::{Collector, Marks, Totals};
use super::config::LoadConfig;
use super::env::Environment;
use super::publish::PublishResult;
use super::report::*;
use super::sampler::{usable_cores, ProcSample};
use super::saturation::{self, Signs, LAG_SATURATED_US};
use super::schedule::Schedule;
use crate::gateway::counters_delta;

/// The share of the machine's CPU time stolen by the hypervisor in the window past which a
/// report warns: at 1% the stalls already reach every p99 of a paced run.
const STEAL_WARNED: f64 = 0.01;

/// A gateway run's own section: the devices sent offline for `period` (`at` as asked, `from`
/// as scheduled, `away`), what was held for them, and the gateway's counters over the run.
pub(super) fn gateway_summary(
    r: &super::recorder::Recorder,
    schedule: &Schedule,
    (at, from, away): (Duration, Instant, Duration),
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
) -> GatewaySummary {
    let window = schedule.warmup_events..schedule.warmup_events + schedule.window_events;
    let held_events = window
        .filter(|&k| (from..from + away).contains(&schedule.due(k)))
        .count() as u64;
    GatewaySummary {
        offline_clients: r.offline_clients,
        offline_at_s: at.as_secs_f64(),
        offline_for_s: away.as_secs_f64(),
        held_expected: held_events * r.offline_clients,
        held_delivered: r.held_delivered,
        held_latency_us: Percentiles::of(&r.held_latency),
        server: counters_delta(before, after),
    }
}

pub(super) struct Built {
    pub(super) started_at_unix_ms: u64,
    pub(super) interrupted: bool,
    pub(super) server_pid: Option<u32>,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_connected: Option<u64>,
    /// The load generator's own RSS before its subscribers and once they connected.
    pub(super) loadgen_rss: (Option<u64>, Option<u64>),
    pub(super) window_open: Marks,
    pub(super) window_close: Marks,
    pub(super) publish: PublishResult,
    pub(super) totals: Totals,
    pub(super) col: Collector,
    pub(super) gateway: Option<GatewaySummary>,
}

pub(super) fn build_report(config: LoadConfig, b: Built) -> LoadReport {
    let r = &b.totals.recorder;
    let window = b
        .window_close
        .at
        .saturating_duration_since(b.window_open.at);
    let window_s = window.as_secs_f64();
    let counters = b.totals.window;
    let delivered = r.delivered;
    let per = |n: u64| {
        if delivered > 0 {
            n as f64 / delivered as f64
        } else {
            0.0
        }
    };
    let expected = r.clients_connected * b.publish.window_ok;
    let cpu_delta = |a: Option<ProcSample>, z: Option<ProcSample>| match (a, z) {
        (Some(a), Some(z)) => Some(z.cpu.saturating_sub(a.cpu)),
        _ => None,
    };
    let server_cpu = cpu_delta(b.window_open.server, b.window_close.server);
    let loadgen_cpu = cpu_delta(b.window_open.loadgen, b.window_close.loadgen).unwrap_or_default();
    let cores = usable_cores();
    let share = |cpu: Duration| {
        if window_s > 0.0 {
            cpu.as_secs_f64() / (window_s * cores as f64)
        } else {
            0.0
        }
    };
    let loadgen_util = share(loadgen_cpu);
    // Saturation is judged by the subscribers' threads: the publisher spins before each due
    // time, giving way to them at every turn, so its CPU says nothing of whether they kept up.
    // Worker processes report theirs the same way; a worker that reported nothing counts 0.
    let subscriber_util = share(b.totals.subscriber_cpu);
    let cost = Cost::new(loadgen_cpu, server_cpu, delivered, counters.requests);
    let loop_lag = Percentiles::of(&r.loop_lag);
    let lateness = Percentiles::of(&b.publish.lateness);

    let mut warnings = Vec::new();
    let saturated = saturation::judge(
        &Signs {
            transport: config.transport,
            subscriber_util,
            cores,
            delivered,
            waited_for_generator: r.waited_for_generator,
            loop_lag_p99_us: loop_lag.p99,
        },
        &mut warnings,
    );
    if lateness.p99 > LAG_SATURATED_US {
        warnings.push(format!(
            "publishes started {:.1} ms late at p99 (more --publishers may help); latency \
             still counts from the due time",
            lateness.p99 as f64 / 1000.0
        ));
    }
    if counters.unstamped_reads > 0 {
        warnings.push(format!(
            "{} reads had no kernel arrival stamp and were timed when read, which is later",
            counters.unstamped_reads
        ));
    }
    let steal_share = match (b.window_open.steal, b.window_close.steal) {
        (Some((a, cpus)), Some((z, _))) if window_s > 0.0 && cpus > 0 => {
            Some(z.saturating_sub(a).as_secs_f64() / (window_s * cpus as f64))
        }
        _ => None,
    };
    if let Some(steal) = steal_share.filter(|&s| s > STEAL_WARNED) {
        warnings.push(format!(
            "the hypervisor held this machine's CPUs off for {:.1}% of the window (steal): \
             timings on both sides include those stalls",
            steal * 100.0
        ));
    }
    if b.publish.skipped > 0 {
        warnings.push(format!(
            "{} events were never published: every publish connection was backed up",
            b.publish.skipped
        ));
    }
    if b.server_pid.is_none() {
        warnings.push(
            "server CPU and memory not measured: give --server-pid for a server that does not \
             report its pid in /stats"
                .into(),
        );
    }
    if r.clients_failed > 0 {
        warnings.push(format!(
            "{} subscribers failed to connect",
            r.clients_failed
        ));
    }

    let rss_per_conn = per_conn((b.rss_before, b.rss_connected), r.clients_connected);
    LoadReport {
        schema: SCHEMA.to_owned(),
        interrupted: b.interrupted,
        started_at_unix_ms: b.started_at_unix_ms,
        environment: Environment::detect(),
        window_s,
        publish: PublishSummary {
            planned_rate: config.rate,
            achieved_rate: b.publish.achieved_rate(config.rate),
            scheduled: b.publish.scheduled,
            published: b.publish.ok,
            window_published: b.publish.window_ok,
            failed: b.publish.failed.clone(),
            skipped: b.publish.skipped,
            lateness_us: lateness,
            bytes_up: b.publish.counters.bytes_up,
            bytes_down: b.publish.counters.bytes_down,
        },
        latency_us: Percentiles::of(&r.latency),
        latency_from_sent_us: Percentiles::of(&r.latency_from_sent),
        delivered,
        expected,
        lost: expected.saturating_sub(delivered),
        duplicates: r.duplicates,
        out_of_order: r.out_of_order,
        gaps: r.gaps,
        gap_events: r.gap_events,
        resets: r.resets,
        clients: config.clients as u64,
        clients_connected: r.clients_connected,
        clients_failed: r.clients_failed,
        clients_lost: r.clients_lost,
        bytes_down_per_event: per(counters.bytes_down),
        bytes_up_per_event: per(counters.bytes_up),
        requests_per_event: per(counters.requests),
        bytes_down: counters.bytes_down,
        bytes_up: counters.bytes_up,
        requests: counters.requests,
        empty_responses: counters.empty_responses,
        unstamped_reads: counters.unstamped_reads,
        stamped_reads: counters.stamped_reads,
        late_reads: counters.late_reads,
        waited_for_generator: r.waited_for_generator,
        steal_share,
        reconnects: b.totals.total.reconnects,
        connect_us: Percentiles::of(&r.connect),
        errors: r.errors.clone(),
        clock_anomalies: r.clock_anomalies,
        foreign_events: r.foreign,
        server: ServerSummary {
            pid: b.server_pid,
            cpu_ms_per_1k_events: server_cpu
                .filter(|_| delivered > 0)
                .map(|c| c.as_secs_f64() * 1000.0 * 1000.0 / delivered as f64),
            cpu_cores: server_cpu
                .filter(|_| window_s > 0.0)
                .map(|c| c.as_secs_f64() / window_s),
            rss_before_bytes: b.rss_before,
            rss_connected_bytes: b.rss_connected,
            rss_per_conn_bytes: rss_per_conn,
            rss_peak_bytes: b.col.server_rss_peak,
        },
        loadgen: LoadgenSummary {
            cpu_utilization: loadgen_util,
            subscriber_cpu_utilization: Some(subscriber_util),
            cores,
            threads: if config.workers > 1 {
                config.workers
            } else {
                config.threads
            },
            rss_peak_bytes: b.col.loadgen_rss_peak,
            rss_before_bytes: b.loadgen_rss.0,
            rss_connected_bytes: b.loadgen_rss.1,
            rss_per_client_bytes: per_conn(b.loadgen_rss, r.clients_connected),
            cpu_us_per_delivery: cost.per_delivery_us,
            cpu_us_per_request: cost.per_request_us,
            cpu_vs_server: cost.vs_server,
            loop_lag_us: loop_lag,
            saturated,
            warnings,
        },
        histogram: EncodedHistogram::encode(&r.latency),
        timeseries: b.col.series,
        gateway: b.gateway,
        intervals: b.col.intervals,
        config,
    }
}

/// Memory per connection: the growth from `before` to `connected` over `clients`.
fn per_conn((before, connected): (Option<u64>, Option<u64>), clients: u64) -> Option<f64> {
    match (before, connected) {
        (Some(a), Some(z)) if clients > 0 => Some((z as f64 - a as f64) / clients as f64),
        _ => None,
    }
}

/// The load generator's CPU over the window, per unit of work and against the server's.
struct Cost {
    per_delivery_us: Option<f64>,
    per_request_us: Option<f64>,
    vs_server: Option<f64>,
}

impl Cost {
    fn new(loadgen: Duration, server: Option<Duration>, deliveries: u64, requests: u64) -> Cost {
        let us = loadgen.as_secs_f64() * 1e6;
        let per = |n: u64| (n > 0).then(|| us / n as f64);
        Cost {
            per_delivery_us: per(deliveries),
            per_request_us: per(requests),
            vs_server: server
                .filter(|s| !s.is_zero())
                .map(|s| loadgen.as_secs_f64() / s.as_secs_f64()),
        }
    }
}

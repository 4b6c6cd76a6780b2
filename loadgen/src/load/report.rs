//! The result of a run: the versioned JSON schema (`docs/RESULTS.md`), the summary table, and
//! the HdrHistogram interval log.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::config::LoadConfig;
use super::env::Environment;

/// The schema name and version written into every report.
pub const SCHEMA: &str = "pushbench-load/1";

/// Percentiles of a histogram, in its unit (µs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Smallest value.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// Reads them from `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: h.len(),
            min: h.min(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

/// The publisher's side of the run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PublishSummary {
    /// Events per second the schedule asked for.
    pub planned_rate: f64,
    /// Window events per second the server accepted, over the span they were sent in.
    pub achieved_rate: f64,
    /// Events the schedule called for before the stop (warm-up included).
    pub scheduled: u64,
    /// Events the server accepted (warm-up included).
    pub published: u64,
    /// Window events the server accepted: what every subscriber is expected to receive.
    pub window_published: u64,
    /// Publishes that failed, by kind.
    pub failed: BTreeMap<String, u64>,
    /// Events never sent because every publish connection was backed up.
    pub skipped: u64,
    /// How late publishes started after their due time (µs): the publisher's own health.
    pub lateness_us: Percentiles,

    /// Bytes the publish connections sent.
    pub bytes_up: u64,
    /// Bytes the publish connections received.
    pub bytes_down: u64,
}

/// The server's cost, from `/proc/PID` (absent without a pid).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerSummary {
    /// The process sampled.
    pub pid: Option<u32>,
    /// Server CPU time during the window per 1,000 deliveries, in ms.
    pub cpu_ms_per_1k_events: Option<f64>,
    /// Server CPU during the window, in cores (1.0 = one core busy).
    pub cpu_cores: Option<f64>,
    /// RSS before any subscriber connected.
    pub rss_before_bytes: Option<u64>,
    /// RSS once every subscriber had connected, before publishing.
    pub rss_connected_bytes: Option<u64>,
    /// `(rss_connected - rss_before) / clients_connected`.
    pub rss_per_conn_bytes: Option<f64>,
    /// Largest RSS seen.
    pub rss_peak_bytes: Option<u64>,
}

/// The load generator's own cost and health.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadgenSummary {
    /// CPU during the window as a fraction of the cores it may use (1.0 = all busy).
    pub cpu_utilization: f64,
    /// CPU of the subscribers' worker threads alone during the window, as a fraction of the
    /// cores: what saturation is judged by. The publisher spins before each due time, giving
    /// way to the workers at every turn, so its share says nothing about whether they kept up.
    #[serde(default)]
    pub subscriber_cpu_utilization: Option<f64>,
    /// Cores it may use.
    pub cores: usize,
    /// Worker threads.
    pub threads: usize,
    /// Largest RSS seen.
    pub rss_peak_bytes: u64,
    /// RSS before any subscriber started (this process).
    #[serde(default)]
    pub rss_before_bytes: Option<u64>,
    /// RSS once every subscriber connected (worker processes included).
    #[serde(default)]
    pub rss_connected_bytes: Option<u64>,
    /// `(rss_connected - rss_before) / clients connected`: what one subscriber costs it.
    #[serde(default)]
    pub rss_per_client_bytes: Option<f64>,
    /// Its CPU during the window per first delivery, in µs (the publisher's included).
    #[serde(default)]
    pub cpu_us_per_delivery: Option<f64>,
    /// Its CPU during the window per HTTP request it sent, in µs (polling's cost per poll).
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
    /// Its CPU during the window over the server's: how much cheaper the instrument was than
    /// what it measured (below 1 is cheaper).
    #[serde(default)]
    pub cpu_vs_server: Option<f64>,
    /// How late its worker timers fired (µs). Only polls wait on them; deliveries are timed by
    /// their kernel arrival stamps.
    pub loop_lag_us: Percentiles,
    /// Whether the load generator, not the server, may have limited this run.
    pub saturated: bool,
    /// Why, in words; also printed.
    pub warnings: Vec<String>,
}

/// A histogram serialised for the JSON.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EncodedHistogram {
    /// How `data` is encoded.
    pub encoding: String,
    /// Unit of the values.
    pub unit: String,
    /// The histogram.
    pub data: String,
}

impl EncodedHistogram {
    /// HdrHistogram V2 with deflate, base64: what every HdrHistogram library can decode.
    pub fn encode(h: &Histogram<u64>) -> EncodedHistogram {
        EncodedHistogram {
            encoding: "HdrHistogram V2 compressed (deflate), base64".into(),
            unit: "us".into(),
            data: super::recorder::encode_b64(h),
        }
    }
}

/// What a run against the gateway adds: its devices that went offline, and the gateway's own
/// counts of what happened to the messages.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GatewaySummary {
    /// Devices that went offline on schedule.
    pub offline_clients: u64,
    /// When they went, in seconds after the window opened.
    pub offline_at_s: f64,
    /// How long they stayed away, in seconds.
    pub offline_for_s: f64,
    /// Window events due while they were away, times those devices: what the gateway had to
    /// hold for them.
    pub held_expected: u64,
    /// How many of those reached the devices after they returned.
    pub held_delivered: u64,
    /// Due → received of those deliveries, µs.
    pub held_latency_us: Percentiles,
    /// The gateway's counters (its `/stats`, under `gateway`) over the run, from the moment
    /// every device had connected to the end: `expired`, `collapsed`, `overflowed`, `acked`,
    /// `resent`, ... Gauges (`queued`, `devices_online`) are their change.
    pub server: BTreeMap<String, i64>,
}

/// One sample of the run's time series (every 250 ms).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    /// What the run was doing: `connecting`, `warmup`, `window` or `drain`.
    pub phase: String,
    /// Events accepted so far.
    pub published: u64,
    /// First deliveries of window events so far.
    pub delivered: u64,
    /// Subscribers connected so far.
    pub connected: u64,
    /// Subscribers' reconnects so far: after a mass drop, how fast they come back.
    #[serde(default)]
    pub reconnects: u64,
    /// Server CPU since the previous sample, in cores.
    pub server_cpu_cores: Option<f64>,
    /// Server RSS.
    pub server_rss_bytes: Option<u64>,
    /// Load generator CPU since the previous sample, in cores.
    pub loadgen_cpu_cores: f64,
    /// Load generator RSS.
    pub loadgen_rss_bytes: u64,
}

/// Everything one `pushbench load` run measured. Serialised as the versioned JSON schema.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadReport {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// Whether the run was stopped early (Ctrl-C): the numbers cover what ran.
    pub interrupted: bool,
    /// When the run started, ms since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// The configuration, as run.
    pub config: LoadConfig,
    /// Machine and build.
    pub environment: Environment,
    /// Seconds from the window's start to its end (drain included).
    pub window_s: f64,
    /// Publishing.
    pub publish: PublishSummary,
    /// Due → received latency of every first delivery of a window event, µs.
    pub latency_us: Percentiles,
    /// Sent → received (µs): the same deliveries timed from the moment the publisher sent
    /// them, leaving out its own lateness. `latency_us` stays the headline: timing from due
    /// times is what keeps the schedule open-loop.
    #[serde(default)]
    pub latency_from_sent_us: Percentiles,
    /// First deliveries of window events.
    pub delivered: u64,
    /// `clients_connected × publish.window_published`.
    pub expected: u64,
    /// `expected − delivered`.
    pub lost: u64,
    /// Window events a client received more than once.
    pub duplicates: u64,
    /// Deliveries whose id was lower than one the client already had.
    pub out_of_order: u64,
    /// Gap signals the server sent.
    pub gaps: u64,
    /// Ids those gap signals covered.
    pub gap_events: u64,
    /// Reset signals the server sent: it restarted, and a client's cursor was from its last
    /// life (docs/PROTOCOL.md §5.1).
    #[serde(default)]
    pub resets: u64,
    /// Subscribers asked for.
    pub clients: u64,
    /// Subscribers that connected.
    pub clients_connected: u64,
    /// Subscribers whose subscription failed.
    pub clients_failed: u64,
    /// Subscribers that gave up before the end.
    pub clients_lost: u64,
    /// Subscriber bytes received during the window per delivery.
    pub bytes_down_per_event: f64,
    /// Subscriber bytes sent during the window per delivery.
    pub bytes_up_per_event: f64,
    /// Subscriber HTTP requests during the window per delivery.
    pub requests_per_event: f64,
    /// Subscriber bytes received during the window.
    pub bytes_down: u64,
    /// Subscriber bytes sent during the window.
    pub bytes_up: u64,
    /// Subscriber requests during the window.
    pub requests: u64,
    /// Poll responses without events during the window.
    pub empty_responses: u64,
    /// Subscriber reads during the window that the kernel gave no arrival stamp for, timed by
    /// the clock at the read instead (0 is expected; `client/arrival.rs`).
    #[serde(default)]
    pub unstamped_reads: u64,
    /// Subscriber reads during the window that the kernel stamped.
    #[serde(default)]
    pub stamped_reads: u64,
    /// Of those, the reads that came more than 5 ms after their bytes arrived
    /// ([`crate::client::LATE_READ`]): how far behind its reading the load generator was.
    #[serde(default)]
    pub late_reads: u64,
    /// First deliveries that waited for the load generator: events due before the long poll
    /// that fetched them went out, when it went out late. Over 1% of `delivered` flags the run
    /// (`load/saturation.rs`).
    #[serde(default)]
    pub waited_for_generator: u64,
    /// The share of the machine's CPU time (all CPUs) that the hypervisor gave to other guests
    /// during the window (`steal` of `/proc/stat`); over 1% is warned about. `None` where the
    /// kernel does not report it.
    #[serde(default)]
    pub steal_share: Option<f64>,
    /// Reconnects during the whole run.
    pub reconnects: u64,
    /// Time to subscribe (TCP connect to response head), µs.
    pub connect_us: Percentiles,
    /// Errors by kind, during the whole run.
    pub errors: BTreeMap<String, u64>,
    /// Deliveries timed before their due time (clock trouble), recorded as 1 µs.
    pub clock_anomalies: u64,
    /// Events on the topic that this run did not publish.
    pub foreign_events: u64,
    /// The server's cost.
    pub server: ServerSummary,
    /// The load generator's cost and health.
    pub loadgen: LoadgenSummary,
    /// Against the gateway: offline devices and the gateway's own counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewaySummary>,
    /// The latency histogram, serialised.
    pub histogram: EncodedHistogram,
    /// Samples every 250 ms.
    pub timeseries: Vec<Sample>,
    /// Latency histograms per second (start and length from the run's start), for `--hlog`.
    #[serde(skip)]
    pub intervals: Vec<(Duration, Duration, Histogram<u64>)>,
}

impl LoadReport {
    /// The readable summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let mut s = String::new();
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(
            s,
            "{} → {}  clients {}/{}  rate {}/s  window {:.1}s  payload {} B{}",
            c.transport,
            c.target,
            self.clients_connected,
            self.clients,
            c.rate,
            self.window_s,
            c.payload,
            if self.interrupted {
                "  (INTERRUPTED)"
            } else {
                ""
            }
        );
        let l = &self.latency_us;
        let _ = writeln!(
            s,
            "latency (due → received)  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(l.p50), ms(l.p90), ms(l.p99), ms(l.p999), ms(l.max)
        );
        let f = &self.latency_from_sent_us;
        let _ = writeln!(
            s,
            "latency (sent → received) p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
            ms(f.p50), ms(f.p90), ms(f.p99), ms(f.p999), ms(f.max)
        );
        let _ = writeln!(
            s,
            "delivered {} / expected {}  lost {}  duplicates {}  out-of-order {}  gaps {}{}",
            self.delivered,
            self.expected,
            self.lost,
            self.duplicates,
            self.out_of_order,
            self.gaps,
            if self.resets > 0 {
                format!("  resets {}", self.resets)
            } else {
                String::new()
            }
        );
        let p = &self.publish;
        let _ = writeln!(
            s,
            "publish   planned {:.1}/s  achieved {:.1}/s  window events {}  failed {}  skipped {}  lateness p50 {} µs p99 {} µs",
            p.planned_rate,
            p.achieved_rate,
            p.window_published,
            p.failed.values().sum::<u64>(),
            p.skipped,
            p.lateness_us.p50,
            p.lateness_us.p99
        );
        let _ = writeln!(
            s,
            "per event  {:.1} B down  {:.1} B up  {:.3} requests  (empty responses {}, reconnects {})",
            self.bytes_down_per_event,
            self.bytes_up_per_event,
            self.requests_per_event,
            self.empty_responses,
            self.reconnects
        );
        let sv = &self.server;
        let opt =
            |v: Option<f64>, unit: &str| v.map_or("n/a".to_owned(), |v| format!("{v:.2}{unit}"));
        let _ = writeln!(
            s,
            "server    CPU {} per 1k events  ({} cores)  RSS/conn {}  RSS peak {}",
            opt(sv.cpu_ms_per_1k_events, " ms"),
            opt(sv.cpu_cores, ""),
            opt(sv.rss_per_conn_bytes.map(|b| b / 1024.0), " KiB"),
            opt(sv.rss_peak_bytes.map(|b| b as f64 / 1_048_576.0), " MiB"),
        );
        let lg = &self.loadgen;
        let _ = writeln!(
            s,
            "loadgen   CPU {:.0}% of {} core(s)  loop lag p99 {:.2} ms  late reads {:.2}%  steal {}  connect p50 {:.2} ms p99 {:.2} ms",
            lg.cpu_utilization * 100.0,
            lg.cores,
            ms(lg.loop_lag_us.p99),
            self.late_reads as f64 * 100.0 / self.stamped_reads.max(1) as f64,
            opt(self.steal_share.map(|s| s * 100.0), "%"),
            ms(self.connect_us.p50),
            ms(self.connect_us.p99)
        );
        let _ = writeln!(
            s,
            "loadgen   CPU {} per delivery  {} per request  {} the server's  RSS/client {}",
            opt(lg.cpu_us_per_delivery, " µs"),
            opt(lg.cpu_us_per_request, " µs"),
            opt(lg.cpu_vs_server, "×"),
            opt(lg.rss_per_client_bytes.map(|b| b / 1024.0), " KiB"),
        );
        if let Some(g) = &self.gateway {
            let count = |k: &str| g.server.get(k).copied().unwrap_or(0);
            if g.offline_clients > 0 {
                let _ = writeln!(
                    s,
                    "offline   {} devices away {:.1}s from {:.1}s: held {} / {} delivered  p50 {:.2} ms  p99 {:.2} ms",
                    g.offline_clients,
                    g.offline_for_s,
                    g.offline_at_s,
                    g.held_delivered,
                    g.held_expected,
                    ms(g.held_latency_us.p50),
                    ms(g.held_latency_us.p99)
                );
            }
            let _ = writeln!(
                s,
                "gateway   targeted {}  delivered {}  acked {}  resent {}  expired {}  collapsed {}  overflowed {}",
                count("targeted"),
                count("delivered"),
                count("acked"),
                count("resent"),
                count("expired"),
                count("collapsed"),
                count("overflowed")
            );
        }
        if !self.errors.is_empty() {
            let list: Vec<_> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(s, "errors    {}", list.join(", "));
        }
        for w in &lg.warnings {
            let _ = writeln!(s, "WARNING   {w}");
        }
        s
    }
}

/// Writes an HdrHistogram interval log (the format `HistogramLogProcessor` reads): one
/// histogram per interval, `start` given as seconds since `base_unix_ms`.
pub fn write_hlog(
    out: &mut impl std::io::Write,
    base_unix_ms: u64,
    intervals: &[(Duration, Duration, Histogram<u64>)],
) -> std::io::Result<()> {
    let base = std::time::UNIX_EPOCH + Duration::from_millis(base_unix_ms);
    let mut serializer = V2DeflateSerializer::new();
    let mut writer = IntervalLogWriterBuilder::new()
        .add_comment("pushbench delivery latency (due -> received), microseconds")
        .with_start_time(base)
        .with_base_time(base)
        .with_max_value_divisor(1000.0)
        .begin_log_with(out, &mut serializer)?;
    for (start, length, h) in intervals {
        writer
            .write_histogram(h, *start, *length, Tag::new("latency"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};

    #[test]
    fn histogram_round_trips_through_base64() {
        let mut h = super::super::recorder::latency_histogram();
        for v in [10u64, 200, 3000, 40_000] {
            h.record(v).unwrap();
        }
        let enc = EncodedHistogram::encode(&h);
        let back = super::super::recorder::decode_b64(&enc.data).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn hlog_is_readable_by_the_standard_parser() {
        let mut h = super::super::recorder::latency_histogram();
        h.record(1500).unwrap();
        let mut out = Vec::new();
        let iv = vec![
            (Duration::from_secs(0), Duration::from_secs(1), h.clone()),
            (Duration::from_secs(1), Duration::from_secs(1), h),
        ];
        write_hlog(&mut out, 1_700_000_000_000, &iv).unwrap();
        let histos = IntervalLogIterator::new(&out)
            .filter_map(|e| match e.unwrap() {
                LogEntry::Interval(i) => Some(i.duration()),
                _ => None,
            })
            .count();
        assert_eq!(histos, 2);
    }
}

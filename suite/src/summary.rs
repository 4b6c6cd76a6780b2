//! `summary.json` (schema `pushbench-suite/1`): everything the charts, the report and
//! `compare` need, distilled from the per-run load reports, so `pushbench report` can redraw a
//! run from its JSON alone.

use pushbench_loadgen::gateway::SendTo;
use pushbench_loadgen::load::env::Environment;
use pushbench_loadgen::load::recorder::decode_b64;
use pushbench_loadgen::load::report::{GatewaySummary, Percentiles};
use pushbench_loadgen::load::LoadReport;
use pushbench_loadgen::Profile;
use pushbench_servers::{Footprint, Transport};
use serde::{Deserialize, Serialize};

use crate::crosscheck::Crosscheck;
use crate::fanout_floor::FanoutFloor;
use crate::floor::Floor;
use crate::peer::Peer;
use crate::pin::Pinning;
use crate::plan::{Experiment, Params, Scale, Step};
use crate::plot::Stroke;
use crate::upstream::Upstream;

/// The schema name and version of `summary.json`.
pub const SCHEMA: &str = "pushbench-suite/1";

/// Percentiles the latency spectrum is drawn at.
pub const SPECTRUM: [f64; 12] = [
    0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0,
];

/// Which server a run measured. Written as its name (`pushbench`, `gateway`, `nchan`,
/// `pushpin`), as before peers were a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Server {
    /// pushbench's own servers.
    Pushbench,
    /// pushbench's FCM-style push gateway (`[gateway]`), its devices on WebSocket.
    Gateway,
    /// A production server (`--peers`; [`crate::peer::PEERS`]), by its dialect.
    Peer(Profile),
}

impl Server {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Server::Pushbench => "pushbench",
            Server::Gateway => "gateway",
            Server::Peer(p) => p.name(),
        }
    }

    /// How its lines are drawn: each peer its own style in its technique's colour.
    pub fn stroke(self) -> Stroke {
        match self {
            Server::Pushbench | Server::Gateway => Stroke::Solid,
            Server::Peer(p) => Peer::of(p).map_or(Stroke::Dashed, |peer| peer.stroke),
        }
    }

    /// A run's name in charts and tables: the technique, prefixed by the server unless it is
    /// pushbench's own.
    pub fn label(self, t: Transport) -> String {
        match self {
            Server::Pushbench => t.name().to_owned(),
            other => format!("{} {}", other.name(), t.name()),
        }
    }
}

impl Serialize for Server {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Server {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        match &*name {
            "pushbench" => Ok(Server::Pushbench),
            "gateway" => Ok(Server::Gateway),
            other => other
                .parse::<Profile>()
                .map(Server::Peer)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// One suite run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The command line that made it.
    pub command: String,
    /// Scale.
    pub scale: Scale,
    /// Every size and duration used.
    pub params: Params,
    /// The experiments run.
    pub experiments: Vec<Experiment>,
    /// Whether a production server ran beside pushbench.
    pub peers: bool,
    /// Which (absent before Pushpin joined Nchan: then Nchan, if `peers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_servers: Vec<Server>,
    /// Start and end, ms since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// End.
    pub finished_at_unix_ms: u64,
    /// Stopped early (Ctrl-C): what is here is what ran.
    pub interrupted: bool,
    /// Machine and build.
    pub environment: Environment,
    /// Cores of the server and the load generator.
    pub pinning: Pinning,
    /// `[floor]`.
    pub floor: Option<Floor>,
    /// `[fanout]`'s physical limit (raw `write(2)`), one per size.
    #[serde(default)]
    pub fanout_floor: Vec<FanoutFloor>,
    /// `[latency]`'s independent cross-check client, one per technique it speaks.
    #[serde(default)]
    pub crosscheck: Vec<Crosscheck>,
    /// `[idle]`: what each lean subscription's own state takes in the build that ran.
    #[serde(default)]
    pub footprint: Vec<Footprint>,
    /// Every load run.
    pub runs: Vec<Run>,
    /// `[upstream]`.
    pub upstream: Vec<Upstream>,
    /// Runs that could not be made, and why.
    pub failures: Vec<Failure>,
    /// Anything a reader must know: saturation, missing peers, failures.
    pub warnings: Vec<String>,
}

/// A run that failed to produce a report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    /// Experiment.
    pub experiment: Experiment,
    /// Server.
    pub server: Server,
    /// Technique.
    pub transport: Transport,
    /// The step's label.
    pub label: String,
    /// What went wrong.
    pub error: String,
}

/// One load run, distilled.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Experiment.
    pub experiment: Experiment,
    /// Server measured.
    pub server: Server,
    /// Technique.
    pub transport: Transport,
    /// Label within the experiment (`c1000`, `i100ms`, ...).
    pub label: String,
    /// The full load report, relative to the output directory.
    pub file: String,
    /// Subscribers asked for.
    pub clients: usize,
    /// Subscribers that connected.
    pub clients_connected: u64,
    /// Events/s.
    pub rate: f64,
    /// Short polling interval, s.
    pub poll_interval_s: f64,
    /// Whether polls fetched the latest state only.
    pub poll_latest: bool,
    /// Window (drain included), s.
    pub window_s: f64,
    /// Due → received, µs.
    pub latency_us: Percentiles,
    /// `[percentile, µs]` pairs at [`SPECTRUM`].
    pub spectrum: Vec<[f64; 2]>,
    /// Events published in the window.
    pub window_published: u64,
    /// First deliveries.
    pub delivered: u64,
    /// Expected deliveries.
    pub expected: u64,
    /// Lost deliveries.
    pub lost: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Out of order.
    pub out_of_order: u64,
    /// Gap signals.
    pub gaps: u64,
    /// Subscriber bytes down per delivery.
    pub bytes_down_per_event: f64,
    /// Subscriber requests per delivery.
    pub requests_per_event: f64,
    /// Window totals.
    pub bytes_down: u64,
    /// Window totals.
    pub bytes_up: u64,
    /// Window totals.
    pub requests: u64,
    /// Empty poll answers.
    pub empty_responses: u64,
    /// Reconnects.
    pub reconnects: u64,
    /// Server CPU ms per 1,000 deliveries.
    pub server_cpu_ms_per_1k: Option<f64>,
    /// Server CPU in cores.
    pub server_cpu_cores: Option<f64>,
    /// Server RSS per connection, bytes.
    pub rss_per_conn_bytes: Option<f64>,
    /// Server peak RSS.
    pub rss_peak_bytes: Option<u64>,
    /// Load generator CPU share of its cores.
    pub loadgen_cpu: f64,
    /// Load generator CPU per delivery, µs (its publisher included).
    #[serde(default)]
    pub loadgen_cpu_us_per_delivery: Option<f64>,
    /// Load generator CPU over the server's, in the window: below 1, the instrument was the
    /// cheaper side.
    #[serde(default)]
    pub loadgen_cpu_vs_server: Option<f64>,
    /// Load generator RSS per subscriber, bytes.
    #[serde(default)]
    pub loadgen_rss_per_client_bytes: Option<f64>,
    /// Sent → received, µs: latency without the publisher's own lateness.
    #[serde(default)]
    pub latency_from_sent_us: Option<Percentiles>,
    /// How late the publisher sent, µs.
    #[serde(default)]
    pub publish_lateness_us: Option<Percentiles>,
    /// The load generator may have limited this run.
    pub loadgen_saturated: bool,
    /// The load report's warnings.
    pub warnings: Vec<String>,
    /// Stepped experiments: whether the step met its p99 budget with no loss.
    pub passed: Option<bool>,
    /// `[gateway]` runs through the gateway: how they sent, and what the gateway counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayRun>,
    /// `[faults]`: what the fault did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<crate::faults::FaultRun>,
}

/// A run through the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayRun {
    /// Topic fan-out, or one send per device.
    pub send_to: SendTo,
    /// Every message's TTL, s (`None`: the default, four weeks).
    pub ttl_s: Option<f64>,
    /// Every message's collapse key.
    pub collapse_key: Option<String>,
    /// Offline devices, held deliveries, and the gateway's counters.
    pub summary: GatewaySummary,
}

impl GatewayRun {
    /// A gateway counter over the run (0 when absent).
    pub fn count(&self, name: &str) -> i64 {
        self.summary.server.get(name).copied().unwrap_or(0)
    }

    /// Deliveries the gateway gave up on by its rules, each counted: TTL expiries,
    /// collapse-key replacements, queue overflows.
    pub fn dropped_by_design(&self) -> u64 {
        ["expired", "collapsed", "overflowed"]
            .iter()
            .map(|k| self.count(k).max(0) as u64)
            .sum()
    }
}

impl Run {
    /// Distils `report` of `step`.
    pub fn of(step: &Step, server: Server, file: String, report: &LoadReport) -> Run {
        let spectrum = decode_b64(&report.histogram.data)
            .map(|h| {
                SPECTRUM
                    .iter()
                    .filter(|_| !h.is_empty())
                    .map(|&p| [p, h.value_at_percentile(p) as f64])
                    .collect()
            })
            .unwrap_or_default();
        let lost = report.lost + report.duplicates + report.out_of_order;
        let passed = step.experiment.stepped().then(|| {
            lost == 0
                && report.delivered > 0
                && report.clients_failed == 0
                && report.latency_us.p99 as u128 <= step.p99_budget().as_micros()
        });
        Run {
            experiment: step.experiment,
            server,
            transport: step.transport,
            label: step.label.clone(),
            file,
            clients: step.clients,
            clients_connected: report.clients_connected,
            rate: step.rate,
            poll_interval_s: step.poll_interval.as_secs_f64(),
            poll_latest: step.poll_latest,
            window_s: report.window_s,
            latency_us: report.latency_us,
            spectrum,
            window_published: report.publish.window_published,
            delivered: report.delivered,
            expected: report.expected,
            lost: report.lost,
            duplicates: report.duplicates,
            out_of_order: report.out_of_order,
            gaps: report.gaps,
            bytes_down_per_event: report.bytes_down_per_event,
            requests_per_event: report.requests_per_event,
            bytes_down: report.bytes_down,
            bytes_up: report.bytes_up,
            requests: report.requests,
            empty_responses: report.empty_responses,
            reconnects: report.reconnects,
            server_cpu_ms_per_1k: report.server.cpu_ms_per_1k_events,
            server_cpu_cores: report.server.cpu_cores,
            rss_per_conn_bytes: report.server.rss_per_conn_bytes,
            rss_peak_bytes: report.server.rss_peak_bytes,
            loadgen_cpu: report.loadgen.cpu_utilization,
            loadgen_cpu_us_per_delivery: report.loadgen.cpu_us_per_delivery,
            loadgen_cpu_vs_server: report.loadgen.cpu_vs_server,
            loadgen_rss_per_client_bytes: report.loadgen.rss_per_client_bytes,
            latency_from_sent_us: Some(report.latency_from_sent_us),
            publish_lateness_us: Some(report.publish.lateness_us),
            loadgen_saturated: report.loadgen.saturated,
            warnings: report.loadgen.warnings.clone(),
            passed,
            gateway: report.gateway.clone().map(|summary| {
                let options = report.config.gateway.clone().unwrap_or_default();
                GatewayRun {
                    send_to: options.send_to,
                    ttl_s: options.ttl.map(|d| d.as_secs_f64()),
                    collapse_key: options.collapse_key,
                    summary,
                }
            }),
            fault: None,
        }
    }

    /// Why a stepped run failed, in words.
    pub fn failed_because(&self, budget_ms: f64) -> String {
        let mut why = Vec::new();
        if self.lost + self.duplicates + self.out_of_order > 0 {
            why.push(format!(
                "{} lost, {} duplicated, {} out of order",
                self.lost, self.duplicates, self.out_of_order
            ));
        }
        let p99 = self.latency_us.p99 as f64 / 1000.0;
        if p99 > budget_ms {
            why.push(format!("p99 {p99:.0} ms > {budget_ms:.0} ms"));
        }
        if self.clients_connected < self.clients as u64 {
            why.push(format!(
                "{} of {} subscribers connected",
                self.clients_connected, self.clients
            ));
        }
        if why.is_empty() {
            why.push("no deliveries".into());
        }
        why.join("; ")
    }
}

/// What a stepped experiment found for one technique.
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The largest passing step's value (subscribers, or deliveries/s), 0 when none passed.
    pub value: f64,
    /// Whether the last step passed too, so the limit is at least this (not reached).
    pub open_ended: bool,
    /// Whether the load generator was saturated on the deciding step: the limit may be the
    /// load generator's, not the server's.
    pub loadgen_limited: bool,
    /// Why the first failing step failed.
    pub reason: Option<String>,
    /// Which side reached its limit first.
    pub side: LimitSide,
}

/// Which side of a stepped experiment reached its limit first, read off the deciding step:
/// the first failing one, or the last one when every step passed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitSide {
    /// Every step passed and neither side was saturated: the limit lies beyond the steps.
    Neither,
    /// The load generator was saturated: the value is a floor under the server's limit.
    LoadGenerator,
    /// The server failed the step with its core this busy (cores) while the load generator
    /// was not saturated.
    Server {
        /// The server's CPU, in cores, on that step.
        cpu_cores: Option<f64>,
    },
}

impl LimitSide {
    /// Words for the report.
    pub fn describe(&self) -> String {
        match self {
            LimitSide::Neither => "neither side reached its limit within the steps".into(),
            LimitSide::LoadGenerator => {
                "the load generator reached its limit first: a floor, not the server's limit".into()
            }
            LimitSide::Server { cpu_cores: Some(c) } => format!(
                "the server reached its limit first (its core {:.0}% busy)",
                c * 100.0
            ),
            LimitSide::Server { cpu_cores: None } => "the server reached its limit first".into(),
        }
    }
}

impl Summary {
    /// The peers that ran beside pushbench, in the order of the list (a summary from before
    /// Pushpin joined says only `peers`: then Nchan).
    pub fn peer_list(&self) -> Vec<Server> {
        if !self.peer_servers.is_empty() {
            self.peer_servers.clone()
        } else if self.peers {
            vec![Server::Peer(Profile::Nchan)]
        } else {
            Vec::new()
        }
    }

    /// pushbench and every peer that ran: the servers of `[latency]` and `[fanout]`.
    pub fn servers(&self) -> Vec<Server> {
        let mut all = vec![Server::Pushbench];
        all.extend(self.peer_list());
        all
    }

    /// The runs of one experiment, server and technique, in run order.
    pub fn runs_of(
        &self,
        experiment: Experiment,
        server: Server,
        transport: Transport,
    ) -> impl Iterator<Item = &Run> {
        self.runs.iter().filter(move |r| {
            r.experiment == experiment && r.server == server && r.transport == transport
        })
    }

    /// The techniques with any run of `experiment` on `server`, in protocol order.
    pub fn transports(&self, experiment: Experiment, server: Server) -> Vec<Transport> {
        Transport::ALL
            .into_iter()
            .filter(|&t| self.runs_of(experiment, server, t).next().is_some())
            .collect()
    }

    /// `[capacity]` (subscribers) or `[throughput]` (deliveries/s) of one technique.
    pub fn limit(&self, experiment: Experiment, transport: Transport) -> Option<Limit> {
        let runs: Vec<_> = self
            .runs_of(experiment, Server::Pushbench, transport)
            .collect();
        if runs.is_empty() {
            return None;
        }
        let value = |r: &Run| match experiment {
            Experiment::Throughput => r.rate * r.clients as f64,
            _ => r.clients as f64,
        };
        let mut limit = Limit {
            value: 0.0,
            open_ended: false,
            loadgen_limited: false,
            reason: None,
            side: LimitSide::Neither,
        };
        for r in &runs {
            if r.passed == Some(true) {
                limit.value = value(r);
                limit.loadgen_limited = r.loadgen_saturated;
            } else {
                let interval = std::time::Duration::from_secs_f64(r.poll_interval_s);
                let budget = experiment.p99_budget(transport, interval);
                limit.reason = Some(r.failed_because(budget.as_secs_f64() * 1000.0));
                limit.loadgen_limited |= r.loadgen_saturated;
                limit.side = if limit.loadgen_limited {
                    LimitSide::LoadGenerator
                } else {
                    LimitSide::Server {
                        cpu_cores: r.server_cpu_cores,
                    }
                };
                return Some(limit);
            }
        }
        limit.open_ended = true;
        if limit.loadgen_limited {
            limit.side = LimitSide::LoadGenerator;
        }
        Some(limit)
    }

    /// The largest-N `[fanout]` run of a technique.
    pub fn fanout_top(&self, server: Server, transport: Transport) -> Option<&Run> {
        self.runs_of(Experiment::Fanout, server, transport)
            .max_by_key(|r| r.clients)
    }

    /// The `[latency]` run of a technique (short polling: its shortest interval).
    pub fn latency_run(&self, server: Server, transport: Transport) -> Option<&Run> {
        self.runs_of(Experiment::Latency, server, transport)
            .min_by(|a, b| a.poll_interval_s.total_cmp(&b.poll_interval_s))
    }

    /// The `[idle]` run of a technique.
    pub fn idle_run(&self, transport: Transport) -> Option<&Run> {
        self.runs_of(Experiment::Idle, Server::Pushbench, transport)
            .next()
    }

    /// The `[upstream]` result of a technique.
    pub fn upstream_of(&self, transport: Transport) -> Option<&Upstream> {
        self.upstream.iter().find(|u| u.transport == transport)
    }
}

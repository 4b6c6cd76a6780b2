//! What the suite runs: the experiments, and every size and duration at each scale, in one
//! place so the report can say exactly what was run.

use std::time::Duration;

use pushbench_loadgen::gateway::{Offline, SendTo};
use pushbench_servers::Transport;
use serde::{Deserialize, Serialize};

/// How big a suite run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scale {
    /// The published configuration: about 45 minutes on a 2-core machine (33 before `[faults]`).
    Full,
    /// Every experiment, smaller and shorter: about 7 minutes (2.5 of them `[faults]`).
    Quick,
    /// A few seconds per experiment, for the tests.
    Tiny,
}

impl Scale {
    /// Its name on the command line and in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Quick => "quick",
            Scale::Tiny => "tiny",
        }
    }
}

/// One experiment of the suite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Experiment {
    /// Raw TCP ping-pong on loopback.
    Floor,
    /// One subscriber, 100 events/s.
    Latency,
    /// A steady broadcast to more and more subscribers.
    Fanout,
    /// Subscribers stepped up until p99 or loss fails.
    Capacity,
    /// Publish rate stepped up for 100 subscribers.
    Throughput,
    /// Poll intervals against the analytic model.
    Polling,
    /// Pull-the-latest-state against push, Bozdag et al.
    Coherence,
    /// Client → server → client round trips.
    Upstream,
    /// Idle subscribers: memory and keep-alive traffic.
    Idle,
    /// The FCM-style gateway's relay hop against direct WebSocket: unicast, topic fan-out,
    /// devices that go offline.
    Gateway,
    /// What breaks: every connection cut at once (fixed-delay and jittered reconnects), the
    /// server killed and restarted, readers that stop reading.
    Faults,
}

impl Experiment {
    /// In the order they run and appear in the report.
    pub const ALL: [Experiment; 11] = [
        Experiment::Floor,
        Experiment::Latency,
        Experiment::Fanout,
        Experiment::Capacity,
        Experiment::Throughput,
        Experiment::Polling,
        Experiment::Coherence,
        Experiment::Upstream,
        Experiment::Idle,
        Experiment::Gateway,
        Experiment::Faults,
    ];

    /// Its name (`--only`, file names).
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Floor => "floor",
            Experiment::Latency => "latency",
            Experiment::Fanout => "fanout",
            Experiment::Capacity => "capacity",
            Experiment::Throughput => "throughput",
            Experiment::Polling => "polling",
            Experiment::Coherence => "coherence",
            Experiment::Upstream => "upstream",
            Experiment::Idle => "idle",
            Experiment::Gateway => "gateway",
            Experiment::Faults => "faults",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Result<Experiment, String> {
        Experiment::ALL
            .into_iter()
            .find(|e| e.name() == name)
            .ok_or_else(|| {
                let names: Vec<_> = Experiment::ALL.iter().map(|e| e.name()).collect();
                format!(
                    "unknown experiment {name:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }

    /// The report's "what it shows" paragraph.
    pub fn what_it_shows(self) -> &'static str {
        match self {
            Experiment::Floor => {
                "A raw TCP ping-pong between two sockets on loopback, with no HTTP at all, \
                 measured twice. Back to back, each ping leaving as soon as the last pong \
                 arrived, both cores stay awake: that round trip is the physical floor of this \
                 machine. Paced at [latency]'s event rate (one ping every 10 ms at 100 events/s), \
                 both cores go idle between pings, and every round trip pays for waking them; on \
                 a virtual machine that can cost ten times the back-to-back round trip. An event \
                 published every 10 ms meets the paced floor, so the one-subscriber latencies \
                 below are read as multiples of it."
            }
            Experiment::Latency => {
                "One subscriber, 100 events/s: the latency each technique adds when nothing \
                 competes for the server. Streaming techniques deliver within a few floors; short \
                 polling waits on average half its interval, so its spectrum is the interval's \
                 shape, not the server's. A second, independent client (blocking sockets, \
                 hand-written HTTP/1.1, no async runtime) times SSE and HTTP streaming the same \
                 way, against a fresh server: where its median and the load generator's differ \
                 by more than 15%, the run is flagged."
            }
            Experiment::Fanout => {
                "One event per second (five at quick scale) broadcast to more and more \
                 subscribers (100 to 10,000 in the full suite). p99 grows with the number of sockets one event must be written \
                 to, and the server's CPU per delivery and memory per connection show what each \
                 subscriber costs. Beside them, the physical limit: a plain blocking loop of \
                 write(2), one frame to each of N loopback sockets, with no server at all. Every \
                 server's p99 and CPU per delivery are read as multiples of it."
            }
            Experiment::Capacity => {
                "Subscribers are stepped up, one event per second, until p99 passes 250 ms (for \
                 short polling: 250 ms beyond its interval) or any event is lost. The last step \
                 that passed is the most subscribers the transport holds on one server core."
            }
            Experiment::Throughput => {
                "100 subscribers (full suite) while the publish rate is stepped up, until p99 \
                 passes 100 ms (short polling: 100 ms beyond its interval) or any event is lost. \
                 The last step that passed gives the most deliveries per second the transport \
                 sustains."
            }
            Experiment::Polling => {
                "Short polling at intervals from 50 ms to 5 s (full suite), 10 events/s. Measured \
                 mean latency, requests/s, bytes/s and the share of empty responses are drawn \
                 beside the model: \
                 mean delay ≈ interval/2 + RTT and requests/s = clients/interval. Polling buys \
                 latency with requests, nearly all of them empty at short intervals."
            }
            Experiment::Coherence => {
                "After Bozdag, Mesbah & van Deursen (2007), *A Comparison of Push and Pull \
                 Techniques for Ajax*: a pull client that fetches only the latest state \
                 (`/poll?latest=1`) against push (SSE), over a grid of publish interval × pull \
                 interval. Coherence is the fraction of published events a client saw, staleness \
                 the mean publish-to-receipt time of what it saw, traffic its bytes per second."
            }
            Experiment::Upstream => {
                "The round trip of a client's own message: client → server → client. WebSocket \
                 carries both directions on one connection; every other technique needs a \
                 separate POST beside its subscription, and long polling also a new request \
                 after each event."
            }
            Experiment::Idle => {
                "Idle subscribers held open with nothing published: server memory per connection, \
                 and the keep-alive traffic each technique spends to keep a quiet connection alive \
                 (short polling pays full requests; streams pay a few bytes per keep-alive)."
            }
            Experiment::Gateway => {
                "Firebase Cloud Messaging's architecture, measured: an app server sends through \
                 pushbench's FCM-style gateway (HTTP v1 send API, docs/GATEWAY.md), which fans \
                 out by topic and delivers over one WebSocket per device, acknowledged. Beside \
                 it, the same devices subscribe to a plain WebSocket server directly. Unicast \
                 and topic fan-out show what the relay hop costs; devices that go offline show \
                 what it buys: messages held and delivered on return, minus TTL expiries and \
                 collapse-key replacements, which the gateway counts."
            }
            Experiment::Faults => {
                "What happens when things break, at 10 events/s (10,000 subscribers in the full \
                 suite). **Mass drop:** the server cuts every connection at once (SIGUSR1, the \
                 demo's drop-all) and keeps serving; subscribers reconnect after a fixed delay \
                 (all at once: the thundering herd) or after a random wait up to the same delay \
                 (exponential backoff with full jitter), and resume from their cursor. \
                 **Restart:** the server is killed (SIGKILL) and started again on the same port; \
                 its new life has a new epoch, so every resume is answered with a reset. \
                 **Stalled readers:** a tenth of the subscribers stop reading (1 KiB events); the \
                 server must cut them without growing or slowing the others. Reported: the time \
                 until 99% of subscribers are back (from reconnects sampled every 250 ms), the \
                 peak reconnects per second, events lost and duplicated, p99 before the fault \
                 and during the recovery, and the server's CPU and memory peaks."
            }
        }
    }

    /// The p99 a step of this experiment may reach: 100 ms for throughput, 250 ms otherwise.
    /// Short polling waits up to an interval by design, so its budget starts there.
    pub fn p99_budget(self, transport: Transport, poll_interval: Duration) -> Duration {
        let base = match self {
            Experiment::Throughput => Duration::from_millis(100),
            _ => Duration::from_millis(250),
        };
        if transport == Transport::Poll {
            base + poll_interval
        } else {
            base
        }
    }

    /// Whether the experiment steps up until a step fails.
    pub fn stepped(self) -> bool {
        matches!(self, Experiment::Capacity | Experiment::Throughput)
    }
}

/// One load run of an experiment: what `pushbench load` is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Its experiment.
    pub experiment: Experiment,
    /// The technique.
    pub transport: Transport,
    /// Subscribers.
    pub clients: usize,
    /// Events/s (0: idle).
    pub rate: f64,
    /// Measurement window.
    pub window: Duration,
    /// Warm-up.
    pub warmup: Duration,
    /// Short polling interval.
    pub poll_interval: Duration,
    /// Short polling fetches the latest state only (`[coherence]`).
    pub poll_latest: bool,
    /// A distinguishing label within the experiment and transport, for the file name.
    pub label: String,
    /// `[gateway]`: the run goes through the gateway, sending like this (`None`: direct).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<GatewayStep>,
    /// `[faults]`: what breaks, and when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultStep>,
}

/// What `[faults]` breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Every connection cut at once; subscribers wait a fixed delay.
    DropFixed,
    /// Every connection cut at once; subscribers back off with full jitter.
    DropJitter,
    /// The server is killed (SIGKILL) and started again on the same port.
    Restart,
    /// Some subscribers stop reading.
    Stall,
}

impl Fault {
    /// Every fault, in the order they run and are reported.
    pub const ALL: [Fault; 4] = [
        Fault::DropFixed,
        Fault::DropJitter,
        Fault::Restart,
        Fault::Stall,
    ];

    /// Its label (file names).
    pub fn name(self) -> &'static str {
        match self {
            Fault::DropFixed => "drop-fixed",
            Fault::DropJitter => "drop-jitter",
            Fault::Restart => "restart",
            Fault::Stall => "stall",
        }
    }

    /// In the report's words.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::DropFixed => "mass drop, fixed delay",
            Fault::DropJitter => "mass drop, jittered backoff",
            Fault::Restart => "restart (SIGKILL)",
            Fault::Stall => "stalled readers",
        }
    }
}

/// One `[faults]` run's fault.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultStep {
    /// What breaks.
    pub fault: Fault,
    /// When, after the window opened.
    pub at: Duration,
    /// The subscribers' reconnect delay (fixed), or the first cap of their jittered backoff.
    pub reconnect_delay: Duration,
    /// Stalled readers beside the load generator's subscribers (stall only).
    pub stalled: usize,
    /// Payload size of the run.
    pub payload: usize,
}

/// How a `[gateway]` run sends through the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayStep {
    /// Topic fan-out, or one send per device.
    pub send_to: SendTo,
    /// Devices that go offline.
    pub offline: Option<Offline>,
    /// Every message's TTL.
    pub ttl: Option<Duration>,
    /// Every message's collapse key.
    pub collapse_key: Option<String>,
}

impl Step {
    /// The JSON file of this step, relative to the output directory.
    /// A peer's runs are prefixed with its name (`peer`); the gateway's and ours are not.
    pub fn file(&self, peer: Option<&str>) -> String {
        let who = peer.map(|p| format!("{p}-")).unwrap_or_default();
        format!(
            "{}/{who}{}-{}.json",
            self.experiment.name(),
            self.transport.name(),
            self.label
        )
    }

    /// The p99 a stepped experiment allows.
    pub fn p99_budget(&self) -> Duration {
        self.experiment
            .p99_budget(self.transport, self.poll_interval)
    }
}

/// The `[fanout]` rate of summaries written before it had its own.
fn one_per_second() -> f64 {
    1.0
}

/// Every size and duration at one scale.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Params {
    /// The scale.
    pub scale: Scale,
    /// `[floor]` back-to-back round trips (the paced ones: as many, within
    /// `floor_paced_budget`).
    pub floor_round_trips: usize,
    /// Longest `[floor]` spends on its round trips paced at `latency_rate`.
    #[serde(default)]
    pub floor_paced_budget: Duration,
    /// Warm-up of every load run.
    pub warmup: Duration,
    /// Longest wait for deliveries after the last due time (a run ends sooner once everything
    /// arrived; short polling always waits two intervals).
    pub drain: Duration,
    /// `[latency]` window.
    pub latency_window: Duration,
    /// `[latency]` events per second, also the pace of `[floor]`'s paced round trips and of
    /// the cross-check client.
    #[serde(default = "latency_rate")]
    pub latency_rate: f64,
    /// `[latency]` cross-check: events the independent client times per technique.
    #[serde(default)]
    pub crosscheck_events: usize,
    /// `[latency]` poll intervals (short polling runs once per interval).
    pub latency_poll_intervals: Vec<Duration>,
    /// `[fanout]` subscriber counts.
    pub fanout_clients: Vec<usize>,
    /// `[capacity]` publish rate.
    pub broadcast_rate: f64,
    /// `[fanout]` publish rate: 1 event/s in the full suite. More at quick scale, whose window is
    /// a few seconds: there a p99 over three events was one event's tail, and the server's CPU a
    /// handful of 10 ms ticks, so two runs disagreed by up to 3×. At 5 events/s (15 events) one
    /// slow event still moved a p99 by 2.6× between two back-to-back runs; at 20/s the largest
    /// quick size (1,000 subscribers, about 15 ms per event) still finishes each event's fan-out
    /// well before the next.
    #[serde(default = "one_per_second")]
    pub fanout_rate: f64,
    /// `[fanout]` window.
    pub fanout_window: Duration,
    /// `[fanout]`'s physical limit (raw `write(2)` to every socket): events per size.
    #[serde(default)]
    pub fanout_floor_events: usize,
    /// `[fanout]`'s physical limit: time between its events, long enough for the cores to go
    /// idle as between `[fanout]`'s own and for the largest size's writes and reads to end
    /// before the next event (about 80 ms and 150 ms at 10,000 on a 2-core VM), short enough
    /// to keep the measurement brief.
    #[serde(default)]
    pub fanout_floor_gap: Duration,
    /// `[capacity]` steps.
    pub capacity_clients: Vec<usize>,
    /// `[capacity]` window.
    pub capacity_window: Duration,
    /// `[throughput]` subscribers.
    pub throughput_clients: usize,
    /// `[throughput]` rate steps.
    pub throughput_rates: Vec<f64>,
    /// `[throughput]` window.
    pub throughput_window: Duration,
    /// `[polling]` subscribers.
    pub polling_clients: usize,
    /// `[polling]` intervals.
    pub polling_intervals: Vec<Duration>,
    /// `[polling]` shortest window (longer intervals get four intervals).
    pub polling_window: Duration,
    /// `[coherence]` publish intervals.
    pub coherence_publish: Vec<Duration>,
    /// `[coherence]` pull intervals.
    pub coherence_pull: Vec<Duration>,
    /// `[coherence]` subscribers.
    pub coherence_clients: usize,
    /// `[coherence]` window.
    pub coherence_window: Duration,
    /// `[upstream]` round trips per technique.
    pub upstream_round_trips: usize,
    /// `[idle]` subscribers.
    pub idle_clients: usize,
    /// `[idle]` window.
    pub idle_window: Duration,
    /// Poll interval of the broadcast experiments (fanout, capacity, throughput, idle).
    pub poll_interval: Duration,
    /// `[gateway]` unicast window (one device, 100 events/s).
    #[serde(default)]
    pub gateway_unicast_window: Duration,
    /// `[gateway]` topic fan-out sizes (at `gateway_fanout_rate`), each also run directly over
    /// WebSocket.
    #[serde(default)]
    pub gateway_fanout_devices: Vec<usize>,
    /// `[gateway]` fan-out window.
    #[serde(default)]
    pub gateway_fanout_window: Duration,
    /// `[gateway]` fan-out publish rate: 1 event/s in the full suite. At quick scale 5: its 3 s
    /// window held 3 events at 1/s, and one slow event of 10,000 deliveries set a p99 (direct
    /// WebSocket's moved 50 → 68 ms between two runs whose p50 agreed within 2%), which
    /// `compare` then read as the gateway moving against direct.
    #[serde(default = "one_per_second")]
    pub gateway_fanout_rate: f64,
    /// `[gateway]` devices of the offline runs.
    #[serde(default)]
    pub gateway_offline_devices: usize,
    /// `[gateway]` publish rate of the offline runs.
    #[serde(default)]
    pub gateway_offline_rate: f64,
    /// `[gateway]` window of the offline runs.
    #[serde(default)]
    pub gateway_offline_window: Duration,
    /// `[gateway]` who goes offline, when, for how long.
    #[serde(default = "no_offline")]
    pub gateway_offline: Offline,
    /// `[gateway]` the TTL of the TTL run (shorter than the time away).
    #[serde(default)]
    pub gateway_offline_ttl: Duration,
    /// `[faults]` subscribers of each run (a stall run: the readers plus the stalled).
    #[serde(default)]
    pub faults_clients: usize,
    /// `[faults]` events per second.
    #[serde(default)]
    pub faults_rate: f64,
    /// `[faults]` window of the drop and restart runs.
    #[serde(default)]
    pub faults_window: Duration,
    /// `[faults]` when the fault strikes, after the window opened.
    #[serde(default)]
    pub faults_at: Duration,
    /// `[faults]` subscribers' reconnect delay (fixed) or first backoff cap (jitter). The same
    /// as SSE's `retry:` hint (1 s), which `EventSource` and the SSE subscribers use instead.
    #[serde(default)]
    pub faults_reconnect_delay: Duration,
    /// `[faults]` window of the stall runs: long enough for the stalled readers' socket
    /// buffers to fill and the server's write timeout to cut them.
    #[serde(default)]
    pub faults_stall_window: Duration,
    /// `[faults]` readers that stall.
    #[serde(default)]
    pub faults_stalled: usize,
    /// `[faults]` payload of the stall runs.
    #[serde(default)]
    pub faults_stall_payload: usize,
    /// `[faults]` the stall runs' server write timeout (`serve --write-timeout`).
    #[serde(default)]
    pub faults_write_timeout: Duration,
    /// `[faults]` the stall runs' server socket send buffer (`serve --send-buffer`), so a
    /// stalled socket fills within seconds rather than the minutes loopback autotuning's
    /// megabytes take at 10 KiB/s.
    #[serde(default)]
    pub faults_send_buffer: usize,
}

fn no_offline() -> Offline {
    Offline {
        fraction: 0.0,
        at: Duration::ZERO,
        duration: Duration::ZERO,
    }
}

/// `[latency]`'s rate in summaries made before it was a parameter.
fn latency_rate() -> f64 {
    100.0
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn s(n: u64) -> Duration {
    Duration::from_secs(n)
}

impl Params {
    /// The parameters of `scale`.
    pub fn of(scale: Scale) -> Params {
        match scale {
            Scale::Full => Params {
                scale,
                floor_round_trips: 20_000,
                floor_paced_budget: s(5),
                warmup: s(1),
                drain: s(2),
                latency_window: s(15),
                latency_rate: 100.0,
                crosscheck_events: 1_000,
                latency_poll_intervals: vec![ms(100), s(1)],
                fanout_clients: vec![100, 1_000, 5_000, 10_000],
                broadcast_rate: 1.0,
                fanout_rate: 1.0,
                fanout_window: s(10),
                fanout_floor_events: 10,
                fanout_floor_gap: ms(300),
                capacity_clients: vec![2_500, 5_000, 10_000, 15_000, 18_500],
                capacity_window: s(5),
                throughput_clients: 100,
                throughput_rates: vec![100.0, 300.0, 1_000.0, 3_000.0, 10_000.0, 30_000.0],
                throughput_window: s(5),
                polling_clients: 100,
                polling_intervals: vec![ms(50), ms(100), ms(250), ms(500), s(1), s(2), s(5)],
                polling_window: s(10),
                coherence_publish: vec![ms(50), ms(250), s(1)],
                coherence_pull: vec![ms(100), ms(500), s(2)],
                coherence_clients: 10,
                coherence_window: s(12),
                upstream_round_trips: 1_000,
                idle_clients: 10_000,
                idle_window: s(60),
                poll_interval: s(1),
                gateway_unicast_window: s(15),
                gateway_fanout_devices: vec![1_000, 10_000],
                gateway_fanout_window: s(10),
                gateway_fanout_rate: 1.0,
                gateway_offline_devices: 1_000,
                gateway_offline_rate: 10.0,
                gateway_offline_window: s(10),
                gateway_offline: Offline {
                    fraction: 0.2,
                    at: s(2),
                    duration: s(4),
                },
                gateway_offline_ttl: s(2),
                faults_clients: 10_000,
                faults_rate: 10.0,
                faults_window: s(20),
                faults_at: s(5),
                faults_reconnect_delay: s(1),
                faults_stall_window: s(30),
                faults_stalled: 1_000,
                faults_stall_payload: 1024,
                faults_write_timeout: s(5),
                faults_send_buffer: 32 * 1024,
            },
            Scale::Quick => Params {
                scale,
                floor_round_trips: 5_000,
                floor_paced_budget: s(2),
                warmup: ms(500),
                drain: s(1),
                latency_window: s(4),
                latency_rate: 100.0,
                crosscheck_events: 300,
                latency_poll_intervals: vec![ms(100), s(1)],
                fanout_clients: vec![100, 1_000],
                broadcast_rate: 1.0,
                fanout_rate: 20.0,
                fanout_window: s(3),
                fanout_floor_events: 10,
                fanout_floor_gap: ms(100),
                capacity_clients: vec![1_000, 4_000],
                capacity_window: s(2),
                throughput_clients: 100,
                throughput_rates: vec![300.0, 3_000.0],
                throughput_window: s(2),
                polling_clients: 100,
                polling_intervals: vec![ms(100), s(1)],
                polling_window: s(2),
                coherence_publish: vec![ms(100), s(1)],
                coherence_pull: vec![ms(250), s(1)],
                coherence_clients: 10,
                coherence_window: s(3),
                upstream_round_trips: 200,
                idle_clients: 2_000,
                idle_window: s(4),
                poll_interval: s(1),
                gateway_unicast_window: s(2),
                gateway_fanout_devices: vec![1_000, 10_000],
                gateway_fanout_window: s(3),
                gateway_fanout_rate: 5.0,
                gateway_offline_devices: 200,
                gateway_offline_rate: 10.0,
                gateway_offline_window: s(4),
                gateway_offline: Offline {
                    fraction: 0.2,
                    at: s(1),
                    duration: s(2),
                },
                gateway_offline_ttl: s(1),
                faults_clients: 1_000,
                faults_rate: 10.0,
                faults_window: s(5),
                faults_at: s(2),
                faults_reconnect_delay: s(1),
                faults_stall_window: s(10),
                faults_stalled: 100,
                faults_stall_payload: 1024,
                faults_write_timeout: s(2),
                faults_send_buffer: 16 * 1024,
            },
            Scale::Tiny => Params {
                scale,
                floor_round_trips: 200,
                floor_paced_budget: ms(300),
                warmup: ms(100),
                drain: ms(500),
                latency_window: ms(500),
                latency_rate: 100.0,
                crosscheck_events: 30,
                latency_poll_intervals: vec![ms(50), ms(200)],
                fanout_clients: vec![10],
                broadcast_rate: 10.0,
                fanout_rate: 10.0,
                fanout_window: ms(500),
                fanout_floor_events: 5,
                fanout_floor_gap: ms(50),
                capacity_clients: vec![5, 20],
                capacity_window: ms(500),
                throughput_clients: 5,
                throughput_rates: vec![20.0, 100.0],
                throughput_window: ms(500),
                polling_clients: 5,
                polling_intervals: vec![ms(50), ms(200)],
                polling_window: ms(500),
                coherence_publish: vec![ms(50)],
                coherence_pull: vec![ms(100), ms(200)],
                coherence_clients: 3,
                coherence_window: ms(600),
                upstream_round_trips: 10,
                idle_clients: 10,
                idle_window: ms(500),
                poll_interval: ms(200),
                gateway_unicast_window: ms(500),
                gateway_fanout_devices: vec![20],
                gateway_fanout_window: ms(500),
                gateway_fanout_rate: 1.0,
                gateway_offline_devices: 10,
                gateway_offline_rate: 20.0,
                gateway_offline_window: ms(1200),
                gateway_offline: Offline {
                    fraction: 0.5,
                    at: ms(200),
                    duration: ms(600),
                },
                gateway_offline_ttl: ms(300),
                faults_clients: 20,
                faults_rate: 20.0,
                faults_window: ms(2500),
                faults_at: ms(500),
                faults_reconnect_delay: ms(100),
                faults_stall_window: s(4),
                faults_stalled: 4,
                faults_stall_payload: 1024,
                faults_write_timeout: ms(500),
                faults_send_buffer: 4096,
            },
        }
    }

    /// The load runs of `experiment` for `transport`, in order (none for the experiments that
    /// are not load runs, and none for coherence's pull grid unless `transport` is short
    /// polling or SSE, its push reference).
    pub fn steps(&self, experiment: Experiment, transport: Transport) -> Vec<Step> {
        let step = |clients: usize, rate: f64, window: Duration, label: String| Step {
            experiment,
            transport,
            clients,
            rate,
            window,
            warmup: self.warmup,
            poll_interval: self.poll_interval,
            poll_latest: false,
            label,
            gateway: None,
            fault: None,
        };
        match experiment {
            Experiment::Floor | Experiment::Upstream => Vec::new(),
            Experiment::Latency => {
                let one = |label: String| step(1, self.latency_rate, self.latency_window, label);
                if transport == Transport::Poll {
                    self.latency_poll_intervals
                        .iter()
                        .map(|&i| Step {
                            poll_interval: i,
                            ..one(format!("i{}ms", i.as_millis()))
                        })
                        .collect()
                } else {
                    vec![one("c1".into())]
                }
            }
            Experiment::Fanout => self
                .fanout_clients
                .iter()
                .map(|&c| step(c, self.fanout_rate, self.fanout_window, format!("c{c}")))
                .collect(),
            Experiment::Capacity => self
                .capacity_clients
                .iter()
                .map(|&c| {
                    step(
                        c,
                        self.broadcast_rate,
                        self.capacity_window,
                        format!("c{c}"),
                    )
                })
                .collect(),
            Experiment::Throughput => self
                .throughput_rates
                .iter()
                .map(|&r| {
                    step(
                        self.throughput_clients,
                        r,
                        self.throughput_window,
                        format!("r{r}"),
                    )
                })
                .collect(),
            Experiment::Polling if transport == Transport::Poll => self
                .polling_intervals
                .iter()
                .map(|&i| Step {
                    poll_interval: i,
                    window: self.polling_window.max(i * 4),
                    ..step(
                        self.polling_clients,
                        10.0,
                        self.polling_window,
                        format!("i{}ms", i.as_millis()),
                    )
                })
                .collect(),
            Experiment::Polling => Vec::new(),
            Experiment::Coherence => {
                let mut steps = Vec::new();
                for &p in &self.coherence_publish {
                    let rate = 1.0 / p.as_secs_f64();
                    let base = step(
                        self.coherence_clients,
                        rate,
                        self.coherence_window,
                        "".into(),
                    );
                    match transport {
                        Transport::Poll => {
                            for &q in &self.coherence_pull {
                                steps.push(Step {
                                    poll_interval: q,
                                    poll_latest: true,
                                    window: self.coherence_window.max(q * 4),
                                    label: format!("p{}ms-q{}ms", p.as_millis(), q.as_millis()),
                                    ..base.clone()
                                });
                            }
                        }
                        Transport::Sse => steps.push(Step {
                            label: format!("p{}ms-push", p.as_millis()),
                            ..base
                        }),
                        _ => {}
                    }
                }
                steps
            }
            Experiment::Idle => vec![step(
                self.idle_clients,
                0.0,
                self.idle_window,
                format!("c{}", self.idle_clients),
            )],
            Experiment::Gateway if transport == Transport::Ws => self.gateway_steps(&step),
            Experiment::Gateway => Vec::new(),
            Experiment::Faults => self.faults_steps(&step),
        }
    }

    /// `[faults]`'s runs for one technique: each fault in turn.
    fn faults_steps(&self, step: &dyn Fn(usize, f64, Duration, String) -> Step) -> Vec<Step> {
        Fault::ALL
            .into_iter()
            .map(|fault| {
                let stall = fault == Fault::Stall;
                let (clients, window, payload, stalled) = if stall {
                    let stalled = self.faults_stalled.min(self.faults_clients / 2);
                    let n = self.faults_clients - stalled;
                    (
                        n,
                        self.faults_stall_window,
                        self.faults_stall_payload,
                        stalled,
                    )
                } else {
                    (self.faults_clients, self.faults_window, 64, 0)
                };
                Step {
                    fault: Some(FaultStep {
                        fault,
                        // Half an event gap late, so the fault never races a publish due at
                        // the same instant (which side of it the event lands on would be luck).
                        at: self.faults_at + Duration::from_secs_f64(0.5 / self.faults_rate),
                        reconnect_delay: self.faults_reconnect_delay,
                        stalled,
                        payload,
                    }),
                    ..step(
                        clients,
                        self.faults_rate,
                        window,
                        format!("{}-c{}", fault.name(), self.faults_clients),
                    )
                }
            })
            .collect()
    }

    /// `[gateway]`'s runs: unicast and fan-out, each through the gateway and directly, then
    /// the offline runs (held, with a TTL, with a collapse key).
    fn gateway_steps(&self, step: &dyn Fn(usize, f64, Duration, String) -> Step) -> Vec<Step> {
        let via = |send_to: SendTo| GatewayStep {
            send_to,
            offline: None,
            ttl: None,
            collapse_key: None,
        };
        let w = self.gateway_unicast_window;
        let mut steps = vec![
            step(1, 100.0, w, "direct-c1".into()),
            Step {
                gateway: Some(via(SendTo::Token)),
                ..step(1, 100.0, w, "unicast-c1".into())
            },
        ];
        for &n in &self.gateway_fanout_devices {
            let w = self.gateway_fanout_window;
            let r = self.gateway_fanout_rate;
            steps.push(step(n, r, w, format!("direct-c{n}")));
            steps.push(Step {
                gateway: Some(via(SendTo::Topic)),
                ..step(n, r, w, format!("topic-c{n}"))
            });
        }
        let offline = |label: &str, ttl: Option<Duration>, key: Option<&str>| Step {
            gateway: Some(GatewayStep {
                offline: Some(self.gateway_offline),
                ttl,
                collapse_key: key.map(str::to_owned),
                ..via(SendTo::Topic)
            }),
            ..step(
                self.gateway_offline_devices,
                self.gateway_offline_rate,
                self.gateway_offline_window,
                format!("offline-{label}-c{}", self.gateway_offline_devices),
            )
        };
        steps.push(offline("held", None, None));
        steps.push(offline("ttl", Some(self.gateway_offline_ttl), None));
        steps.push(offline("collapse", None, Some("latest")));
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_experiment_has_runs_at_every_scale() {
        for scale in [Scale::Full, Scale::Quick, Scale::Tiny] {
            let p = Params::of(scale);
            for e in Experiment::ALL {
                let n: usize = Transport::ALL.iter().map(|&t| p.steps(e, t).len()).sum();
                let load_run = !matches!(e, Experiment::Floor | Experiment::Upstream);
                if e == Experiment::Gateway {
                    assert_eq!(
                        p.steps(e, Transport::Ws).len(),
                        5 + 2 * p.gateway_fanout_devices.len()
                    );
                }
                assert_eq!(n > 0, load_run, "{scale:?} {e:?}");
            }
        }
    }

    #[test]
    fn files_are_unique() {
        let p = Params::of(Scale::Full);
        let mut files = std::collections::BTreeSet::new();
        for e in Experiment::ALL {
            for t in Transport::ALL {
                for s in p.steps(e, t) {
                    assert!(files.insert(s.file(None)), "{}", s.file(None));
                }
            }
        }
    }

    #[test]
    fn polling_budget_includes_the_interval() {
        let p = Params::of(Scale::Full);
        let poll = &p.steps(Experiment::Capacity, Transport::Poll)[0];
        let ws = &p.steps(Experiment::Capacity, Transport::Ws)[0];
        assert_eq!(poll.p99_budget(), Duration::from_millis(1250));
        assert_eq!(ws.p99_budget(), Duration::from_millis(250));
        assert_eq!(Experiment::parse("fanout"), Ok(Experiment::Fanout));
        assert!(Experiment::parse("nope").is_err());
    }
}

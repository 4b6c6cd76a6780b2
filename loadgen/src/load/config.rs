//! What one load run does.

use std::time::Duration;

use pushbench_protocol::{Transport, DEFAULT_TOPIC};
use serde::{Deserialize, Serialize};

use crate::client::{Backoff, ClientConfig};

/// The readiness loop's default coalescing interval ([`LoadConfig::coalesce`]): 1 ms, under the
/// loop-lag budget and the timer resolution polls keep anyway, and enough for a wake-up to read
/// tens of deliveries at 10,000 subscribers (its CPU per SSE delivery fell from 0.62x to 0.45x
/// the server's: results/load-10k).
pub const DEFAULT_COALESCE: Duration = Duration::from_millis(1);

/// The configuration of one `pushbench load` run. Serialised into the report as given.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The technique every subscriber uses.
    pub transport: Transport,
    /// The server, `http://HOST:PORT`.
    pub target: String,
    /// The server's dialect: pushbench's protocol, Nchan's, Pushpin's or the gateway's.
    #[serde(default)]
    pub target_profile: crate::profile::Profile,
    /// Where events are published, when not at `target` (Pushpin's origin): `http://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish_target: Option<String>,
    /// Subscribers.
    pub clients: usize,
    /// Events published per second (open loop); 0 is an idle run that publishes nothing and
    /// measures what open subscriptions cost (memory, keep-alive traffic).
    pub rate: f64,
    /// Length of the measurement window.
    #[serde(with = "secs")]
    pub duration: Duration,
    /// Payload size in bytes (the stamp is at least 47).
    pub payload: usize,
    /// Topic to publish to and subscribe to.
    pub topic: String,
    /// Short polling: time between polls.
    #[serde(with = "secs")]
    pub poll_interval: Duration,
    /// Long polling: how long the server may hold a request.
    #[serde(with = "secs")]
    pub longpoll_timeout: Duration,
    /// Short polling: fetch only the newest event (the current state) on each poll, so
    /// events published between two polls are skipped by design (`[coherence]`).
    #[serde(default)]
    pub poll_latest: bool,
    /// Run every subscriber as an async task of its own, as the instrument did before its
    /// readiness loop (`load/hot.rs`): kept to compare the two side by side.
    #[serde(default)]
    pub task_per_subscriber: bool,
    /// How long the readiness loop lets deliveries gather after a batch of reads, so one
    /// wake-up of the load generator reads many (`load/hot.rs`). Deliveries are timed by the
    /// kernel's arrival stamps, so it moves no latency; an event read together with later ones
    /// is timed by the latest of them, later by at most this much. Zero in reports from before
    /// it existed.
    #[serde(default, with = "secs")]
    pub coalesce: Duration,
    /// New subscriptions per second while connecting.
    pub ramp: f64,
    /// Events published before the window opens, and not measured.
    #[serde(with = "secs")]
    pub warmup: Duration,
    /// How long to wait after the last due time for deliveries still on the way.
    #[serde(with = "secs")]
    pub drain: Duration,
    /// Concurrent publish connections, so one slow publish never delays the next.
    pub publishers: usize,
    /// Worker threads that run the subscribers (in this process, when `workers` is 1).
    pub threads: usize,
    /// Worker processes; more than 1 runs the subscribers in that many child processes (one
    /// thread each), for more sockets than one process may open.
    #[serde(default = "one")]
    pub workers: usize,
    /// The server's process id, to sample its CPU and memory.
    pub server_pid: Option<u32>,
    /// Connect from this address (worker `i` from this address + `i`) instead of letting the
    /// kernel choose. Runs in quick succession each given their own loopback address never
    /// meet the TIME_WAIT sockets the previous runs left on theirs.
    #[serde(default)]
    pub source_ip: Option<std::net::Ipv4Addr>,
    /// Against the gateway (`target_profile` gateway): how to send, and which devices go
    /// offline when.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<crate::gateway::GatewayOptions>,
    /// How subscribers wait before reconnecting after a lost connection.
    #[serde(default)]
    pub reconnect: ReconnectPolicy,
}

/// How every subscriber of a run waits before reconnecting (`--reconnect-delay`,
/// `--reconnect-backoff`, `--reconnect-max-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ReconnectPolicy {
    /// The wait before an attempt (fixed), or the first cap (jitter). SSE subscribers use the
    /// server's `retry:` hint in its place, as `EventSource` does.
    #[serde(with = "secs")]
    pub delay: Duration,
    /// Fixed, or exponential backoff with full jitter.
    pub backoff: Backoff,
    /// The longest jittered wait.
    #[serde(with = "secs")]
    pub max_delay: Duration,
}

impl Default for ReconnectPolicy {
    /// The clients' own defaults (250 ms, fixed, 30 s cap), as in reports from before the
    /// policy was recorded.
    fn default() -> Self {
        let c = ClientConfig::default();
        ReconnectPolicy {
            delay: c.reconnect_delay,
            backoff: c.reconnect_backoff,
            max_delay: c.reconnect_max_delay,
        }
    }
}

impl ReconnectPolicy {
    /// `client` with this policy.
    pub fn apply(self, client: ClientConfig) -> ClientConfig {
        ClientConfig {
            reconnect_delay: self.delay,
            reconnect_backoff: self.backoff,
            reconnect_max_delay: self.max_delay,
            ..client
        }
    }
}

impl LoadConfig {
    /// Defaults for everything but what the run must name.
    pub fn new(transport: Transport, target: impl Into<String>) -> LoadConfig {
        LoadConfig {
            transport,
            target: target.into(),
            target_profile: crate::profile::Profile::Pushbench,
            publish_target: None,
            clients: 100,
            rate: 10.0,
            duration: Duration::from_secs(10),
            payload: 64,
            topic: DEFAULT_TOPIC.to_owned(),
            poll_interval: Duration::from_secs(1),
            longpoll_timeout: Duration::from_secs(30),
            poll_latest: false,
            task_per_subscriber: false,
            coalesce: DEFAULT_COALESCE,
            ramp: 2000.0,
            warmup: Duration::from_secs(1),
            drain: Duration::from_secs(2),
            publishers: 4,
            threads: 1,
            workers: 1,
            server_pid: None,
            source_ip: None,
            gateway: None,
            reconnect: ReconnectPolicy::default(),
        }
    }

    /// The drain actually used: never shorter than what the transport needs to deliver an
    /// event published at the very end (a poll interval, or a long poll's round).
    pub fn effective_drain(&self) -> Duration {
        let floor = match self.transport {
            Transport::Poll => self.poll_interval * 2,
            _ => Duration::ZERO,
        };
        // Devices still offline when the window ends get their messages when they return.
        let back = self
            .gateway
            .as_ref()
            .and_then(|g| g.offline)
            .map_or(Duration::ZERO, |o| {
                (o.at + o.duration).saturating_sub(self.duration) + self.drain
            });
        self.drain.max(floor).max(back)
    }

    /// Refuses settings that cannot make a meaningful run.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |ok: bool, what: &str| if ok { Ok(()) } else { Err(what.to_owned()) };
        positive(self.clients > 0, "--clients must be at least 1")?;
        positive(
            self.rate.is_finite() && self.rate >= 0.0 && self.rate <= 1_000_000.0,
            "--rate must be from 0 (idle) to 1000000 events/s",
        )?;
        positive(!self.duration.is_zero(), "--duration must be more than 0")?;
        positive(
            self.ramp.is_finite() && self.ramp > 0.0,
            "--ramp must be more than 0 connections/s",
        )?;
        positive(self.publishers > 0, "--publishers must be at least 1")?;
        positive(self.threads > 0, "--threads must be at least 1")?;
        positive(
            self.workers > 0 && self.workers <= 64,
            "--workers must be from 1 to 64",
        )?;
        positive(
            self.coalesce <= Duration::from_millis(100),
            "--coalesce must be at most 100ms",
        )?;
        positive(
            self.reconnect.max_delay >= self.reconnect.delay,
            "--reconnect-max-delay must be at least --reconnect-delay",
        )?;
        positive(
            !self.poll_interval.is_zero(),
            "--poll-interval must be more than 0",
        )?;
        positive(
            self.payload <= pushbench_protocol::MAX_PAYLOAD_BYTES,
            "--payload must be at most 65536 bytes",
        )?;
        if let Some(ip) = self.source_ip {
            let last = u32::from(ip).checked_add(self.workers as u32 - 1);
            positive(
                ip.is_loopback() && last.is_some_and(|l| std::net::Ipv4Addr::from(l).is_loopback()),
                "--source-ip must be a loopback address (127.x.y.z) with room for every worker",
            )?;
        }
        pushbench_protocol::validate_topic(&self.topic).map_err(|e| format!("--topic: {e}"))?;
        positive(
            self.target_profile.dialect().publish_elsewhere == self.publish_target.is_some(),
            "--publish-target is where a Pushpin origin takes publishes: --target-profile pushpin \
             needs it, and other profiles publish to --target",
        )?;
        let gateway = self.target_profile == crate::profile::Profile::Gateway;
        positive(
            gateway == self.gateway.is_some(),
            "gateway options need --target-profile gateway, and it needs them",
        )?;
        if let Some(g) = &self.gateway {
            positive(
                self.transport == Transport::Ws,
                "--target-profile gateway: devices hold a WebSocket each; use --transport ws",
            )?;
            if let Some(o) = g.offline {
                positive(
                    o.fraction > 0.0 && o.fraction <= 1.0,
                    "--offline-fraction must be more than 0 and at most 1",
                )?;
                positive(
                    o.at < self.duration && !o.duration.is_zero(),
                    "--offline-at must fall inside --duration, and --offline-for must be more than 0",
                )?;
            }
        }
        let events = (self.warmup + self.duration).as_secs_f64() * self.rate;
        positive(
            events <= 100_000_000.0,
            "--rate × (--warmup + --duration) must be at most 100 million events",
        )?;
        // One bit per (client, window event) for exact loss and duplicate accounting.
        let bits = self.duration.as_secs_f64() * self.rate * self.clients as f64;
        positive(
            bits / 8.0 <= 2.0 * 1024.0 * 1024.0 * 1024.0,
            "--clients × --rate × --duration is too large to account for exactly (over 2 GiB); \
             shorten the run",
        )?;
        Ok(())
    }
}

fn one() -> usize {
    1
}

/// Durations as fractional seconds in JSON (the gateway's options use it too).
pub(crate) mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs: f64 = serde::Deserialize::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}

/// Optional durations as fractional seconds (or null) in JSON.
pub(crate) mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        let secs: Option<f64> = serde::Deserialize::deserialize(d)?;
        secs.map(|s| Duration::try_from_secs_f64(s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

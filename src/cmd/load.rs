//! `pushbench load`: one transport under controlled load, with the summary on stdout and the
//! report in JSON and HdrHistogram log files.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use pushbench_loadgen::client::Backoff;
use pushbench_loadgen::gateway::{GatewayOptions, Offline, SendTo};
use pushbench_loadgen::load::{self, report::write_hlog, LoadConfig, LoadReport, ReconnectPolicy};
use pushbench_servers::Transport;

use crate::duration;

/// Options of `pushbench load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Technique every subscriber uses: poll, longpoll, stream, sse or ws.
    #[arg(long, short = 't')]
    pub transport: Transport,
    /// The server, `http://HOST:PORT` (any server that speaks docs/PROTOCOL.md).
    #[arg(long)]
    pub target: String,
    /// The server's dialect: pushbench (docs/PROTOCOL.md), nchan (deploy/nchan/nginx.conf),
    /// pushpin (scripts/pushpin.sh: Pushpin before `pushbench serve grip`; needs
    /// --publish-target) or gateway (`pushbench serve gateway`, docs/GATEWAY.md; subscribers are
    /// devices, `-t ws`).
    #[arg(long, default_value = "pushbench")]
    pub target_profile: pushbench_loadgen::Profile,
    /// Where events are published when not at --target: Pushpin's origin, `http://HOST:PORT`
    /// (scripts/pushpin.sh prints it as `publish on`).
    #[arg(long)]
    pub publish_target: Option<String>,
    /// Gateway: send each event to the topic (one send, fanned out by the gateway) or to every
    /// device's token (one send per device: unicast).
    #[arg(long, value_name = "topic|token", help_heading = "Gateway")]
    pub send_to: Option<SendTo>,
    /// Gateway: the project in the send path.
    #[arg(long, help_heading = "Gateway")]
    pub project: Option<String>,
    /// Gateway: the app server's bearer token.
    #[arg(
        long,
        env = "PUSHBENCH_AUTH_TOKEN",
        hide_env_values = true,
        help_heading = "Gateway"
    )]
    pub auth_token: Option<String>,
    /// Gateway: the token devices register with, when the gateway requires one.
    #[arg(
        long,
        env = "PUSHBENCH_REGISTRATION_TOKEN",
        hide_env_values = true,
        help_heading = "Gateway"
    )]
    pub registration_token: Option<String>,
    /// Gateway: every message's TTL (`android.ttl`), e.g. 2s; default the gateway's, 4 weeks.
    #[arg(long, value_parser = duration::parse, help_heading = "Gateway")]
    pub ttl: Option<Duration>,
    /// Gateway: every message's collapse key: an offline device gets only the newest.
    #[arg(long, help_heading = "Gateway")]
    pub collapse_key: Option<String>,
    /// Gateway: send notification messages instead of data messages.
    #[arg(long, help_heading = "Gateway")]
    pub notification: bool,
    /// Gateway: share of devices (0 to 1) that go offline during the window, then return.
    #[arg(long, help_heading = "Gateway")]
    pub offline_fraction: Option<f64>,
    /// Gateway: each device acknowledges once per N messages, all at once, as FCM's own
    /// clients do (10); 1 acknowledges every message.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=100), help_heading = "Gateway")]
    pub ack_every: Option<u32>,
    /// Gateway: when they go, after the window opens.
    #[arg(long, default_value = "1s", value_parser = duration::parse, help_heading = "Gateway")]
    pub offline_at: Duration,
    /// Gateway: how long they stay away.
    #[arg(long, default_value = "2s", value_parser = duration::parse, help_heading = "Gateway")]
    pub offline_for: Duration,
    /// Subscribers.
    #[arg(long, short = 'c', default_value_t = 100)]
    pub clients: usize,
    /// Events published per second, on an open-loop schedule.
    #[arg(long, short = 'r', default_value_t = 10.0)]
    pub rate: f64,
    /// Length of the measurement window, e.g. 30s or 2m.
    #[arg(long, short = 'd', default_value = "10s", value_parser = duration::parse)]
    pub duration: Duration,
    /// Payload bytes per event (at least the stamp, about 40 bytes, is sent).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Topic to publish and subscribe to.
    #[arg(long, default_value = "default")]
    pub topic: String,
    /// Short polling: time between polls (ignored by other transports).
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    pub poll_interval: Duration,
    /// Short polling: ask for the newest event only (`latest=1`), the current state rather
    /// than every change, as the suite's [coherence] experiment does.
    #[arg(long)]
    pub poll_latest: bool,
    /// Run every subscriber as an async task of its own instead of reading streaming, SSE and
    /// WebSocket subscriptions in one readiness loop per worker: the instrument before that
    /// loop, kept to compare the two side by side.
    #[arg(long)]
    pub task_per_subscriber: bool,
    /// How long the readiness loop lets deliveries gather after a batch of reads, so one
    /// wake-up reads many (0: read each at once). Deliveries are timed by the kernel's
    /// arrival stamp, so this moves no latency; an event read together with later ones is
    /// timed by the latest, late by at most this much.
    #[arg(long, default_value = "1ms", value_parser = duration::parse)]
    pub coalesce: Duration,
    /// Long polling: how long the server may hold each request (ignored by others).
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub longpoll_timeout: Duration,
    /// Wait before a subscriber reconnects after losing its connection (SSE: the server's
    /// `retry:` hint instead, as EventSource does); with `--reconnect-backoff jitter`, the
    /// first cap of the random wait.
    #[arg(long, default_value = "250ms", value_parser = duration::parse)]
    pub reconnect_delay: Duration,
    /// fixed: wait the delay before every attempt. jitter: before attempt n, a uniform random
    /// wait up to min(max, delay × 2^n) ("full jitter"), which spreads a herd of reconnects.
    #[arg(long, default_value = "fixed", value_name = "fixed|jitter")]
    pub reconnect_backoff: Backoff,
    /// The longest jittered wait.
    #[arg(long, default_value = "30s", value_parser = duration::parse)]
    pub reconnect_max_delay: Duration,
    /// New subscriptions per second while connecting.
    #[arg(long, default_value_t = 2000.0)]
    pub ramp: f64,
    /// Events published, and not measured, before the window opens.
    #[arg(long, default_value = "1s", value_parser = duration::parse)]
    pub warmup: Duration,
    /// How long to wait after the last event for deliveries still on the way (polling waits
    /// at least two intervals).
    #[arg(long, default_value = "2s", value_parser = duration::parse)]
    pub drain: Duration,
    /// Concurrent publish connections.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
    /// Subscriber threads (default: the cores this process may use).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Run the subscribers in K worker processes (one thread each) and merge their histograms,
    /// for more subscribers than one process may hold sockets for (about 19,900 here). Past
    /// 20,000 subscribers against a loopback target, worker i connects from 127.0.0.(i+1), so
    /// each address keeps its own ephemeral ports.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// The server's pid, to sample its CPU and memory (pushbench servers are found via /stats).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Connect from this loopback address (worker i from this address + i), e.g. 127.0.1.1,
    /// so back-to-back runs do not meet the TIME_WAIT sockets of earlier ones.
    #[arg(long)]
    pub source_ip: Option<std::net::Ipv4Addr>,
    /// Write the report as JSON (schema: docs/RESULTS.md).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write an HdrHistogram interval log of the latencies.
    #[arg(long)]
    pub hlog: Option<PathBuf>,
    /// No progress line.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

impl LoadArgs {
    /// The gateway options, when the target is the gateway; an error for gateway flags
    /// against another target.
    fn gateway(&self) -> anyhow::Result<Option<GatewayOptions>> {
        if self.target_profile != pushbench_loadgen::Profile::Gateway {
            let given = self.send_to.is_some()
                || self.project.is_some()
                || self.ttl.is_some()
                || self.collapse_key.is_some()
                || self.notification
                || self.offline_fraction.is_some()
                || self.ack_every.is_some();
            anyhow::ensure!(
                !given,
                "--send-to, --project, --ttl, --collapse-key, --notification, --ack-every and \
                 --offline-* need --target-profile gateway"
            );
            return Ok(None);
        }
        let defaults = GatewayOptions::default();
        Ok(Some(GatewayOptions {
            project: self.project.clone().unwrap_or(defaults.project),
            auth_token: self.auth_token.clone(),
            registration_token: self.registration_token.clone(),
            send_to: self.send_to.unwrap_or_default(),
            ttl: self.ttl,
            collapse_key: self.collapse_key.clone(),
            notification: self.notification,
            offline: self.offline_fraction.map(|fraction| Offline {
                fraction,
                at: self.offline_at,
                duration: self.offline_for,
            }),
            ack_every: self.ack_every.unwrap_or(defaults.ack_every),
            tokens: defaults.tokens,
        }))
    }

    fn config(&self) -> anyhow::Result<LoadConfig> {
        Ok(LoadConfig {
            clients: self.clients,
            rate: self.rate,
            duration: self.duration,
            payload: self.payload,
            topic: self.topic.clone(),
            poll_interval: self.poll_interval,
            longpoll_timeout: self.longpoll_timeout,
            poll_latest: self.poll_latest,
            task_per_subscriber: self.task_per_subscriber,
            coalesce: self.coalesce,
            ramp: self.ramp,
            warmup: self.warmup,
            drain: self.drain,
            publishers: self.publishers,
            threads: self
                .threads
                .unwrap_or_else(load::sampler::usable_cores)
                .max(1),
            workers: self.workers,
            server_pid: self.server_pid,
            source_ip: self.source_ip,
            target_profile: self.target_profile,
            publish_target: self.publish_target.clone(),
            gateway: self.gateway()?,
            reconnect: ReconnectPolicy {
                delay: self.reconnect_delay,
                backoff: self.reconnect_backoff,
                max_delay: self.reconnect_max_delay,
            },
            ..LoadConfig::new(self.transport, self.target.clone())
        })
    }
}

pub(crate) fn run(args: LoadArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{elapsed:>4} [{bar:30}] {pos}/{len} {msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let report = runtime.block_on(load::run(config, &bar, async {
        let _ = tokio::signal::ctrl_c().await;
    }))?;
    write_outputs(&report, args.json.as_deref(), args.hlog.as_deref())?;
    print!("{}", report.summary());
    if report.interrupted {
        anyhow::bail!("interrupted: the results above and in the files cover the run so far");
    }
    Ok(())
}

/// Writes the JSON report and the interval log where asked.
pub(crate) fn write_outputs(
    report: &LoadReport,
    json: Option<&std::path::Path>,
    hlog: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json {
        let text = serde_json::to_string_pretty(report)?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = hlog {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        write_hlog(&mut file, report.started_at_unix_ms, &report.intervals)
            .with_context(|| format!("writing {}", path.display()))?;
        std::io::Write::flush(&mut file)?;
    }
    Ok(())
}

/// Options of the hidden `pushbench load-worker`, which `load --workers K` starts.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The worker's plan, as JSON.
    #[arg(long)]
    pub spec: String,
}

pub(crate) fn run_worker(args: WorkerArgs) -> anyhow::Result<()> {
    load::process::run_child(&args.spec).map_err(anyhow::Error::msg)
}

//! `pushbench serve`: one transport's server, printing `listening on http://ADDR` first.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use pushbench_servers::gateway::GatewayConfig;
use pushbench_servers::grip::GripConfig;
use pushbench_servers::{Hub, HubConfig, ServerConfig, ShutdownReport, SlowPolicy, Transport};
use tokio::sync::Notify;

/// Options of `pushbench serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The transport to serve: poll, longpoll, stream, sse, ws, `all` (every subscribe
    /// endpoint on one port), `gateway` (the FCM-style push gateway, docs/GATEWAY.md), or
    /// `grip` (an origin for Pushpin, which then serves every technique: scripts/pushpin.sh).
    #[arg(value_parser = parse_transports, value_name = "TRANSPORT")]
    pub transport: TransportSet,
    /// Address to listen on; port 0 picks a free port, printed on the first line.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The listen backlog: handshakes the kernel completes before the server accepts them
    /// (capped by net.core.somaxconn). A herd of reconnects past it waits a second per
    /// dropped handshake.
    #[arg(long, default_value_t = LISTEN_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65535))]
    pub backlog: u32,
    /// Events each topic keeps for resume.
    #[arg(long, default_value_t = HubConfig::default().replay_events)]
    pub replay: usize,
    /// Bytes each topic's replay buffer may hold.
    #[arg(long, default_value_t = HubConfig::default().replay_bytes)]
    pub replay_bytes: usize,
    /// Topics that may exist at once.
    #[arg(long, default_value_t = HubConfig::default().max_topics)]
    pub max_topics: usize,
    /// Events a subscriber may have pending before it counts as slow.
    #[arg(long, default_value_t = HubConfig::default().max_lag)]
    pub max_lag: u64,
    /// What to do with a slow subscriber: drop (skip ahead, send a gap signal) or disconnect.
    #[arg(long, default_value = "drop", value_parser = clap::value_parser!(SlowPolicyArg))]
    pub slow_policy: SlowPolicyArg,
    /// Concurrent connections; past this new connections get 503.
    #[arg(long, default_value_t = ServerConfig::default().max_connections)]
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes; past this, 431.
    #[arg(long, default_value_t = ServerConfig::default().max_header_bytes)]
    pub max_header_bytes: usize,
    /// Keep-alive interval on idle streams (SSE comments, NDJSON blank lines, WebSocket pings).
    #[arg(long, default_value = "15s", value_parser = crate::duration::parse)]
    pub keepalive: Duration,
    /// The SSE `retry:` hint in milliseconds.
    #[arg(long, default_value_t = ServerConfig::default().sse_retry_ms)]
    pub sse_retry_ms: u64,
    /// How long graceful shutdown may take before open connections are cut.
    #[arg(long, default_value = "5s", value_parser = crate::duration::parse)]
    pub shutdown_deadline: Duration,
    /// How long a write to a subscriber may make no progress (it stopped reading) before its
    /// connection is cut and counted in `write_timeouts`.
    #[arg(long, default_value = "30s", value_parser = crate::duration::parse)]
    pub write_timeout: Duration,
    /// Each connection's socket send buffer in bytes (SO_SNDBUF; the kernel doubles it).
    /// Default: the kernel's autotuning, which on loopback grows to megabytes per socket.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1024..=64 * 1024 * 1024))]
    pub send_buffer: Option<u32>,
    /// Runtime worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Gateway: the bearer token app servers must send (`Authorization: Bearer TOKEN`);
    /// without it any app server may send.
    #[arg(long, env = "PUSHBENCH_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Gateway: the bearer token a device must send to register; without it anyone may
    /// register devices, up to --max-devices.
    #[arg(long, env = "PUSHBENCH_REGISTRATION_TOKEN", hide_env_values = true)]
    pub registration_token: Option<String>,
    /// Gateway: sends per minute per project before 429 (FCM's default is 600000); 0 for none.
    #[arg(long, default_value_t = GatewayConfig::default().quota_per_minute)]
    pub quota_per_minute: u64,
    /// Gateway: messages each device's store-and-forward queue holds.
    #[arg(long, default_value_t = GatewayConfig::default().queue_capacity)]
    pub device_queue: usize,
    /// Gateway: devices registered at once.
    #[arg(long, default_value_t = GatewayConfig::default().max_devices)]
    pub max_devices: usize,
    /// grip: Pushpin's HTTP publish API (HOST:PORT), where each event goes once stored.
    #[arg(long, value_name = "HOST:PORT")]
    pub grip_publish: Option<SocketAddr>,
}

/// `drop` or `disconnect`.
#[derive(Debug, Clone, Copy)]
pub struct SlowPolicyArg(pub SlowPolicy);

impl std::str::FromStr for SlowPolicyArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SlowPolicyArg)
    }
}

/// One transport, all of them, or the gateway.
#[derive(Debug, Clone)]
pub enum TransportSet {
    /// Subscribe endpoints of the protocol.
    Transports(Vec<Transport>),
    /// The FCM-style push gateway.
    Gateway,
    /// A GRIP origin for Pushpin.
    Grip,
}

fn parse_transports(s: &str) -> Result<TransportSet, String> {
    match s {
        "all" => Ok(TransportSet::Transports(Transport::ALL.to_vec())),
        "gateway" => Ok(TransportSet::Gateway),
        "grip" => Ok(TransportSet::Grip),
        _ => s
            .parse::<Transport>()
            .map(|t| TransportSet::Transports(vec![t]))
            .map_err(|e| format!("{e}, all, gateway or grip")),
    }
}

pub(crate) fn run(args: ServeArgs) -> anyhow::Result<()> {
    let gateway = GatewayConfig {
        auth_token: args.auth_token.clone(),
        registration_token: args.registration_token.clone(),
        quota_per_minute: args.quota_per_minute,
        queue_capacity: args.device_queue,
        max_devices: args.max_devices,
        ..GatewayConfig::default()
    };
    anyhow::ensure!(
        gateway.queue_capacity > 0,
        "--device-queue must be at least 1"
    );
    if !matches!(args.transport, TransportSet::Gateway) {
        let defaults = GatewayConfig::default();
        anyhow::ensure!(
            gateway.quota_per_minute == defaults.quota_per_minute
                && gateway.queue_capacity == defaults.queue_capacity
                && gateway.max_devices == defaults.max_devices
                && gateway.registration_token.is_none(),
            "--quota-per-minute, --device-queue, --max-devices and --registration-token apply \
             to `serve gateway` only"
        );
    }
    let grip = match (&args.transport, args.grip_publish) {
        (TransportSet::Grip, Some(publish)) => Some(GripConfig { publish }),
        (TransportSet::Grip, None) => {
            anyhow::bail!("`serve grip` needs --grip-publish HOST:PORT (Pushpin's publish API)")
        }
        (_, Some(_)) => anyhow::bail!("--grip-publish applies to `serve grip` only"),
        (_, None) => None,
    };
    anyhow::ensure!(
        gateway.auth_token.as_deref() != Some(""),
        "--auth-token must not be empty"
    );
    anyhow::ensure!(
        gateway.registration_token.as_deref() != Some(""),
        "--registration-token must not be empty"
    );
    let mut config = ServerConfig {
        max_connections: args.max_connections,
        max_header_bytes: args.max_header_bytes,
        keepalive: args.keepalive,
        sse_retry_ms: args.sse_retry_ms,
        shutdown_deadline: args.shutdown_deadline,
        write_timeout: args.write_timeout,
        send_buffer: args.send_buffer.map(|b| b as usize),
        drop_all: Some(Arc::new(Notify::new())),
        ..ServerConfig::default()
    };
    anyhow::ensure!(
        !config.keepalive.is_zero(),
        "--keepalive must be more than 0"
    );
    anyhow::ensure!(
        !config.write_timeout.is_zero(),
        "--write-timeout must be more than 0"
    );
    let hub_config = HubConfig {
        replay_events: args.replay,
        replay_bytes: args.replay_bytes,
        max_topics: args.max_topics,
        max_lag: args.max_lag,
        slow_policy: args.slow_policy.0,
    };
    anyhow::ensure!(hub_config.replay_events > 0, "--replay must be at least 1");
    anyhow::ensure!(hub_config.max_lag > 0, "--max-lag must be at least 1");

    // Each connection is a file descriptor: leave room for the listener, stdio and logs.
    let nofile = crate::sys::raise_nofile_limit().context("raising the open-files limit")?;
    let room = nofile.saturating_sub(64) as usize;
    if config.max_connections > room {
        tracing::warn!(
            nofile,
            "--max-connections {} exceeds what the open-files limit allows; using {room}",
            config.max_connections
        );
        config.max_connections = room;
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = runtime.build().context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let listener = bind_announced(args.addr, args.backlog, |addr| {
            format!("listening on http://{addr}")
        })
        .await?;
        let hub = Hub::new(hub_config);
        if let Some(trigger) = config.drop_all.clone() {
            tokio::spawn(drop_all_on_sigusr1(trigger));
        }
        let report = match args.transport {
            TransportSet::Transports(transports) => {
                pushbench_servers::serve(listener, hub, config, &transports, shutdown_signal())
                    .await
            }
            TransportSet::Gateway => {
                pushbench_servers::gateway::serve(listener, hub, config, gateway, shutdown_signal())
                    .await
            }
            TransportSet::Grip => {
                let grip = grip.context("checked above")?;
                pushbench_servers::grip::serve(listener, hub, config, grip, shutdown_signal()).await
            }
        };
        warn_if_forced(report);
        Ok(())
    })
}

/// The listen backlog: connections the kernel completes and queues before the server accepts
/// them (it caps the number at `net.core.somaxconn`, 4096 on current kernels). tokio's
/// `TcpListener::bind` asks for 128, and when every subscriber of a server reconnects at once
/// (a mass drop, a restart) the queue overflows: the kernel drops the handshakes past it, and
/// each of those clients waits a second for its SYN to be sent again (found by `[faults]`).
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with a listen queue of `backlog` and prints `announce(bound address)` as the
/// first line of stdout, flushed, so a script or a test learns where the server listens (port 0
/// picks one) before anything else.
pub(crate) async fn bind_announced(
    addr: SocketAddr,
    backlog: u32,
    announce: impl FnOnce(SocketAddr) -> String,
) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = listen(addr, backlog).with_context(|| format!("cannot listen on {addr}"))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", announce(listener.local_addr()?))?;
    stdout.flush()?;
    Ok(listener)
}

/// A listener on `addr` as `TcpListener::bind` makes one (`SO_REUSEADDR`, so a restarted server
/// gets its port back while the last life's connections are in TIME_WAIT), with `backlog`.
fn listen(addr: SocketAddr, backlog: u32) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Logs connections that graceful shutdown had to cut at its deadline.
pub(crate) fn warn_if_forced(report: ShutdownReport) {
    if report.forced > 0 {
        tracing::warn!(
            forced = report.forced,
            "connections cut at the shutdown deadline"
        );
    }
}

/// Cuts every open connection on each SIGUSR1, as the demo's drop-all button does: the suite's
/// `[faults]` mass drop, and a way to try any client's recovery by hand
/// (`kill -USR1 $(pgrep -f 'pushbench serve')`).
async fn drop_all_on_sigusr1(trigger: Arc<Notify>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut usr1 = match signal(SignalKind::user_defined1()) {
            Ok(s) => s,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGUSR1; no drop-all by signal");
                return;
            }
        };
        while usr1.recv().await.is_some() {
            trigger.notify_one();
        }
    }
    #[cfg(not(unix))]
    let _ = trigger;
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

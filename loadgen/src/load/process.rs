//! Workers as child processes (`--workers K`), for runs that need more sockets than one process
//! may open. A child is the same binary (`pushbench load-worker`): it runs one [`worker`] and
//! speaks JSON lines, [`WorkerMsg`]s on stdout and [`ControlLine`]s on stdin, so the collector
//! treats it exactly like a worker thread.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use pushbench_protocol::Transport;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc as tmpsc;

use super::schedule::Clock;
use super::worker::{self, Control, WorkerMsg, WorkerPlan};
use crate::client::ClientConfig;
use crate::profile::Profile;
use crate::target::Target;

/// What a worker process must do (its command line, as JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    /// Worker number.
    pub index: usize,
    /// Subscribers it runs.
    pub clients: usize,
    /// New subscriptions per second.
    pub ramp: f64,
    /// The server URL.
    pub target: String,
    /// The server's dialect.
    pub profile: Profile,
    /// The technique.
    pub transport: Transport,
    /// The topic.
    pub topic: String,
    /// Short polling interval, ms.
    pub poll_interval_ms: u64,
    /// Long-poll hold time, ms.
    pub longpoll_timeout_ms: u64,
    /// Short polling fetches the newest event only.
    #[serde(default)]
    pub poll_latest: bool,
    /// Every subscriber is a task of its own, with no readiness loop.
    #[serde(default)]
    pub task_per_subscriber: bool,
    /// The readiness loop's coalescing interval, µs.
    #[serde(default)]
    pub coalesce_us: u64,
    /// Events before the window.
    pub warmup_events: u64,
    /// Events in the window.
    pub window_events: u64,
    /// The local address this worker connects from (`None`: the kernel's choice).
    #[serde(default)]
    pub source: Option<std::net::IpAddr>,
    /// Against the gateway: how the run sends (the bearer token comes through the environment,
    /// [`crate::gateway::AUTH_ENV`], not the command line).
    #[serde(default)]
    pub gateway: Option<crate::gateway::GatewayOptions>,
    /// Against the gateway, sending to tokens: this worker's devices' tokens.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// How its subscribers wait before reconnecting.
    #[serde(default)]
    pub reconnect: super::config::ReconnectPolicy,
}

impl WorkerSpec {
    /// The plan this spec describes, resolved in this process.
    pub async fn plan(&self, clock: Clock) -> Result<WorkerPlan, crate::target::TargetError> {
        let gateway = self
            .gateway
            .clone()
            .map(|g| crate::gateway::GatewayOptions {
                auth_token: std::env::var(crate::gateway::AUTH_ENV).ok(),
                registration_token: std::env::var(crate::gateway::REGISTRATION_ENV).ok(),
                tokens: std::sync::Arc::new(self.tokens.clone()),
                ..g
            });
        let target = Target::resolve(&self.target)
            .await?
            .with_profile(self.profile)
            .with_source(self.source)
            .with_gateway(gateway);
        Ok(WorkerPlan {
            index: self.index,
            clients: self.clients,
            ramp: self.ramp,
            target,
            client: self.reconnect.apply(ClientConfig {
                after: None,
                poll_interval: Duration::from_millis(self.poll_interval_ms),
                longpoll_timeout: Duration::from_millis(self.longpoll_timeout_ms),
                latest: self.poll_latest,
                ..ClientConfig::new(self.transport, self.topic.clone())
            }),
            warmup_events: self.warmup_events,
            window_events: self.window_events,
            clock,
            first_device: 0,
            hot: !self.task_per_subscriber,
            coalesce: Duration::from_micros(self.coalesce_us),
        })
    }
}

/// A [`Control`] on the wire: instants travel as Unix nanoseconds, the clock both processes
/// share.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlLine {
    /// The window opens at this Unix time (ns).
    Window(u64),
    /// Chosen devices are offline between these Unix times (ns).
    Offline(u64, u64),
    /// Stop.
    Stop,
}

/// The parent's handle on a worker process.
#[derive(Debug)]
pub struct ProcessWorker {
    child: Child,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ProcessWorker {
    /// Starts `exe load-worker --spec JSON`; its messages go to `tx`. The gateway's bearer
    /// and registration tokens, if any, are passed in the environment so they show in no
    /// process list.
    pub fn spawn(
        exe: &Path,
        spec: &WorkerSpec,
        gateway: Option<&crate::gateway::GatewayOptions>,
        tx: mpsc::Sender<WorkerMsg>,
    ) -> std::io::Result<ProcessWorker> {
        let spec = serde_json::to_string(spec).map_err(std::io::Error::other)?;
        let mut command = Command::new(exe);
        let secrets = [
            (
                crate::gateway::AUTH_ENV,
                gateway.and_then(|g| g.auth_token.as_deref()),
            ),
            (
                crate::gateway::REGISTRATION_ENV,
                gateway.and_then(|g| g.registration_token.as_deref()),
            ),
        ];
        for (name, token) in secrets {
            if let Some(token) = token {
                command.env(name, token);
            }
        }
        let mut child = command
            .args(["load-worker", "--spec", &spec])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let reader = std::thread::Builder::new()
            .name("pushbench-worker-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<WorkerMsg>(&line) {
                        Ok(msg) => {
                            if tx.send(msg).is_err() {
                                break;
                            }
                        }
                        Err(err) => tracing::warn!(%err, "unreadable line from a worker process"),
                    }
                }
            })?;
        Ok(ProcessWorker {
            stdin: child.stdin.take(),
            child,
            reader: Some(reader),
        })
    }

    /// The child's process id, to sample its CPU and memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a control message.
    pub fn control(&mut self, control: Control, clock: &Clock) {
        let line = match control {
            Control::Window(at) => ControlLine::Window(clock.unix_ns(at)),
            Control::Offline { from, until } => {
                ControlLine::Offline(clock.unix_ns(from), clock.unix_ns(until))
            }
            Control::Stop => ControlLine::Stop,
        };
        if let Some(stdin) = self.stdin.as_mut() {
            let text = serde_json::to_string(&line).unwrap_or_default();
            if writeln!(stdin, "{text}")
                .and_then(|()| stdin.flush())
                .is_err()
            {
                self.stdin = None;
            }
        }
    }

    /// Waits for the child to exit after its report (killing it after `grace`).
    pub fn finish(mut self, grace: Duration) {
        self.stdin = None;
        let deadline = std::time::Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// The child side: runs one worker for `spec`, JSON lines in and out, until told to stop (or
/// until stdin closes, so a dead parent never leaves a worker behind).
pub fn run_child(spec: &str) -> Result<(), String> {
    let spec: WorkerSpec =
        serde_json::from_str(spec).map_err(|e| format!("bad worker spec: {e}"))?;
    let needed = spec.clients as u64 + 64;
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    if needed > limit {
        return Err(format!(
            "worker {} needs {needed} sockets but may open only {limit} files",
            spec.index
        ));
    }
    let clock = Clock::now();
    let plan = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(spec.plan(clock))
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    let (ctl_tx, ctl_rx) = tmpsc::unbounded_channel();
    let thread = worker::spawn(plan, tx, ctl_rx).map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("pushbench-worker-stdin".into())
        .spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                let control = match serde_json::from_str::<ControlLine>(&line) {
                    Ok(ControlLine::Window(ns)) => Control::Window(clock.instant_at(ns)),
                    Ok(ControlLine::Offline(from, until)) => Control::Offline {
                        from: clock.instant_at(from),
                        until: clock.instant_at(until),
                    },
                    Ok(ControlLine::Stop) => Control::Stop,
                    Err(_) => continue,
                };
                if ctl_tx.send(control).is_err() {
                    return;
                }
            }
            let _ = ctl_tx.send(Control::Stop);
        })
        .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    for msg in rx {
        let done = matches!(msg, WorkerMsg::Done { .. });
        let line = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("parent went away: {e}"))?;
        if done {
            break;
        }
    }
    let _ = thread.join();
    Ok(())
}

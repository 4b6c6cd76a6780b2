//! Worker handles: the subscribers' workers, as threads of this process or as child
//! processes, started with their share of the clients and told when the window opens, when
//! devices go offline, and when to stop.

use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::mpsc as tmpsc;

use super::config::LoadConfig;
use super::error::LoadError;
use super::process::{ProcessWorker, WorkerSpec};
use super::schedule::{Clock, Schedule};
use super::worker::{self, Control, WorkerMsg, WorkerPlan};
use crate::client::ClientConfig;
use crate::target::Target;

/// Subscribers one source address carries (it has about 28,000 ephemeral ports); larger runs
/// spread their worker processes over 127.0.0.1, 127.0.0.2, ...
const CLIENTS_PER_SOURCE: usize = 20_000;

/// A worker, in this process or a child.
#[derive(Debug)]
pub(super) enum WorkerHandle {
    Thread {
        control: tmpsc::UnboundedSender<Control>,
        join: std::thread::JoinHandle<()>,
    },
    Process(ProcessWorker),
}

impl WorkerHandle {
    pub(super) fn control(&mut self, c: Control, clock: &Clock) {
        match self {
            WorkerHandle::Thread { control, .. } => {
                let _ = control.send(c);
            }
            WorkerHandle::Process(p) => p.control(c, clock),
        }
    }

    pub(super) fn pid(&self) -> Option<u32> {
        match self {
            WorkerHandle::Thread { .. } => None,
            WorkerHandle::Process(p) => Some(p.pid()),
        }
    }

    /// Whether the worker died early (it can then never report).
    pub(super) fn exited(&mut self) -> bool {
        match self {
            WorkerHandle::Thread { join, .. } => join.is_finished(),
            WorkerHandle::Process(_) => false,
        }
    }

    pub(super) fn finish(self) {
        match self {
            WorkerHandle::Thread { join, .. } => {
                if join.is_finished() {
                    let _ = join.join();
                }
            }
            WorkerHandle::Process(p) => p.finish(Duration::from_secs(5)),
        }
    }
}

/// Starts the subscribers' workers: `threads` threads here, or `workers` child processes.
pub(super) fn spawn_workers(
    config: &LoadConfig,
    target: &Target,
    plan: &Schedule,
    clock: Clock,
    tx: &mpsc::Sender<WorkerMsg>,
) -> Result<Vec<WorkerHandle>, LoadError> {
    let n = if config.workers > 1 {
        config.workers
    } else {
        config.threads
    }
    .min(config.clients)
    .max(1);
    let share = |i: usize| config.clients / n + usize::from(i < config.clients % n);
    let first = |i: usize| (0..i).map(share).sum::<usize>();
    let mut handles = Vec::with_capacity(n);
    let gateway = target.gateway();
    if config.workers > 1 {
        let exe = std::env::current_exe()?;
        for index in 0..n {
            let tokens = gateway.map_or_else(Vec::new, |g| {
                let start = first(index).min(g.tokens.len());
                let end = (start + share(index)).min(g.tokens.len());
                g.tokens[start..end].to_vec()
            });
            let spec = WorkerSpec {
                index,
                clients: share(index),
                ramp: config.ramp / n as f64,
                target: config.target.clone(),
                profile: config.target_profile,
                transport: config.transport,
                topic: config.topic.clone(),
                poll_interval_ms: config.poll_interval.as_millis() as u64,
                longpoll_timeout_ms: config.longpoll_timeout.as_millis() as u64,
                poll_latest: config.poll_latest,
                task_per_subscriber: config.task_per_subscriber,
                coalesce_us: config.coalesce.as_micros() as u64,
                warmup_events: plan.warmup_events,
                window_events: plan.window_events,
                source: source_for(target, index, config),
                gateway: gateway.cloned(),
                tokens,
                reconnect: config.reconnect,
            };
            handles.push(WorkerHandle::Process(ProcessWorker::spawn(
                &exe,
                &spec,
                gateway,
                tx.clone(),
            )?));
        }
        return Ok(handles);
    }
    for index in 0..n {
        let (control, control_rx) = tmpsc::unbounded_channel();
        let wplan = WorkerPlan {
            index,
            clients: share(index),
            ramp: config.ramp / n as f64,
            // Threads share one process and so one address's ports are plenty.
            target: target
                .clone()
                .with_source(config.source_ip.map(std::net::IpAddr::V4)),
            client: config.reconnect.apply(ClientConfig {
                after: None,
                poll_interval: config.poll_interval,
                longpoll_timeout: config.longpoll_timeout,
                latest: config.poll_latest,
                ..ClientConfig::new(config.transport, config.topic.clone())
            }),
            warmup_events: plan.warmup_events,
            window_events: plan.window_events,
            clock,
            first_device: first(index),
            hot: !config.task_per_subscriber,
            coalesce: config.coalesce,
        };
        let join = worker::spawn(wplan, tx.clone(), control_rx)?;
        handles.push(WorkerHandle::Thread { control, join });
    }
    Ok(handles)
}

/// Worker process `index` connects from its own loopback address (127.0.0.1, 127.0.0.2, ...):
/// one source address has only ~28,000 ephemeral ports, and every worker process may hold
/// nearly 20,000 sockets. Other targets keep the kernel's choice.
pub(super) fn source_for(
    target: &Target,
    index: usize,
    config: &LoadConfig,
) -> Option<std::net::IpAddr> {
    if let Some(base) = config.source_ip {
        let ip = u32::from(base).checked_add(u32::try_from(index).ok()?)?;
        return Some(std::net::Ipv4Addr::from(ip).into());
    }
    // A socket bound to a source address picks its port at `bind`, before the kernel knows the
    // destination, so it cannot reuse a port held in TIME_WAIT by an earlier connection the way
    // an unbound `connect` does; after a large run, a bound address is short of ports for a
    // minute. So bind only when one address cannot carry the run.
    if config.clients <= CLIENTS_PER_SOURCE {
        return None;
    }
    match target.addr().ip() {
        std::net::IpAddr::V4(ip) if ip.is_loopback() => {
            let n = u32::try_from(index).ok()?.checked_add(1)?;
            (n < 1 << 24).then(|| std::net::Ipv4Addr::from(0x7f00_0000 | n).into())
        }
        _ => None,
    }
}

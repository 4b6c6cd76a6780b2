//! The collector: runs one load test from connect to report.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc as tmpsc;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::sync::watch;

use super::config::LoadConfig;
use super::env::Environment;
use super::process::{ProcessWorker, WorkerSpec};
use super::publish::{self, PublishPlan, PublishResult};
use super::recorder::{latency_histogram, Recorder};
use super::report::*;
use super::sampler::{sample, usable_cores, ProcSample};
use super::schedule::{Clock, Schedule};
use super::worker::{self, Control, WorkerMsg, WorkerPlan};
use crate::client::ClientConfig;
use crate::counters::CountersSnapshot;
use crate::gateway::{counters_delta, prepare};
use crate::target::{Target, TargetError};

/// How often the collector samples `/proc` and refreshes the progress line.
const TICK: Duration = Duration::from_millis(250);
/// How often the collector checks for progress (every subscriber connected, every delivery
/// in), so a short run is not stretched to whole ticks.
const CHECK: Duration = Duration::from_millis(20);
/// Subscribers one source address carries (it has about 28,000 ephemeral ports); larger runs
/// spread their worker processes over 127.0.0.1, 127.0.0.2, ...
const CLIENTS_PER_SOURCE: usize = 20_000;
/// Sockets kept free for the publisher, the sampler and stdio.
const FD_RESERVE: u64 = 64;
/// Loadgen CPU share of its usable cores past which its timings are suspect.
const CPU_SATURATED: f64 = 0.8;
/// Timer lateness (p99) past which the loadgen's own scheduling distorts latencies.
const LAG_SATURATED_US: u64 = 5_000;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The configuration makes no sense.
    #[error("{0}")]
    Config(String),
    /// The target is not a usable address.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// More sockets than one process may open.
    #[error(
        "{needed} sockets needed but this process may open only {limit} files; \
         run fewer --clients per process with --workers K"
    )]
    TooManySockets {
        /// Sockets the run needs.
        needed: u64,
        /// The open-files limit.
        limit: u64,
    },
    /// A thread could not be started.
    #[error("could not start a thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The gateway refused to set up the run's devices.
    #[error("gateway: {0}")]
    Gateway(String),
    /// No subscriber could connect.
    #[error("no subscriber could connect to {target}: {errors}")]
    NoSubscribers {
        /// The target.
        target: String,
        /// The errors, by kind.
        errors: String,
    },
}

/// Runs one load test. `interrupt` (Ctrl-C) stops it early with partial results. `bar` shows
/// progress; pass a hidden bar for none.
pub async fn run(
    config: LoadConfig,
    bar: &ProgressBar,
    interrupt: impl Future<Output = ()>,
) -> Result<LoadReport, LoadError> {
    config.validate().map_err(LoadError::Config)?;
    let target = Target::resolve(&config.target)
        .await?
        .with_profile(config.target_profile);
    check_sockets(&config)?;
    let target = match &config.gateway {
        Some(options) => {
            let options = prepare(&target, options, &config.topic, config.clients)
                .await
                .map_err(LoadError::Gateway)?;
            target.with_gateway(Some(options))
        }
        None => target,
    };
    let started_at_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let clock = Clock::now();
    let run_start = Instant::now();
    let server_pid = match config.server_pid {
        Some(pid) => Some(pid),
        None => discover_pid(&target).await,
    };
    let mut col = Collector::new(server_pid, run_start);
    let rss_before = sample(server_pid).map(|s| s.rss_bytes);

    // Phase 1: subscribers, on worker threads here or in worker processes.
    let plan = Schedule::new(run_start, config.rate, config.warmup, config.duration);
    let (tx, rx) = mpsc::channel();
    let mut workers = spawn_workers(&config, &target, &plan, clock, &tx)?;
    drop(tx);
    col.workers(
        workers.len(),
        workers.iter().filter_map(WorkerHandle::pid).collect(),
    );

    tokio::pin!(interrupt);
    let mut interrupted = false;
    bar.set_length(config.clients as u64);
    bar.set_message("connecting");
    let mut subscribed = 0;
    let mut ticker = tokio::time::interval(CHECK);
    while subscribed < workers.len() {
        tokio::select! {
            () = &mut interrupt => { interrupted = true; break; }
            _ = ticker.tick() => {}
        }
        for msg in rx.try_iter() {
            if let WorkerMsg::Subscribed { .. } = msg {
                subscribed += 1;
            }
            col.absorb(msg);
        }
        bar.set_position(col.connected());
        col.sample("connecting", 0);
        if workers.iter_mut().any(WorkerHandle::exited) {
            break;
        }
    }
    // The last `Subscribed` may race a final progress message; count from the recorders' view
    // after a short settle instead of trusting a stale sum.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for msg in rx.try_iter() {
        col.absorb(msg);
    }
    let connected = col.connected();
    if connected == 0 && !interrupted {
        let recorder = col.finish(&rx, workers, clock);
        let errors: Vec<_> = recorder
            .recorder
            .errors
            .iter()
            .map(|(k, v)| format!("{k} × {v}"))
            .collect();
        return Err(LoadError::NoSubscribers {
            target: config.target.clone(),
            errors: errors.join(", "),
        });
    }
    let rss_connected = sample(server_pid).map(|s| s.rss_bytes);

    // Phase 2: publish on the open-loop schedule, starting a little ahead so event 0 is not
    // already late when the publisher thread starts.
    let schedule = Schedule::new(
        Instant::now() + Duration::from_millis(100),
        config.rate,
        config.warmup,
        config.duration,
    );
    // Subscribers take their byte and request marks halfway between the last warm-up event and
    // the first window event, not on the first window event's due time: that event is published
    // on the dot and may be read before a worker's timer (rounded up to the next millisecond)
    // takes the mark, and its bytes would then be missed.
    let mark_at = if schedule.idle() {
        schedule.window_start()
    } else {
        let half_gap = Duration::from_secs_f64(0.5 / config.rate).min(Duration::from_millis(50));
        schedule.window_start() - half_gap
    };
    for w in &mut workers {
        w.control(Control::Window(mark_at), &clock);
    }
    let offline = config.gateway.as_ref().and_then(|g| g.offline);
    // Half an event gap later than asked, so no event falls due at the very instant a device
    // leaves or returns (which side of it the event lands on would be a race).
    let offline_start = |at: Duration| {
        let half_gap = if schedule.idle() {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(0.5 / config.rate)
        };
        schedule.window_start() + at + half_gap
    };
    if let Some(o) = offline {
        let from = offline_start(o.at);
        let until = from + o.duration;
        for w in &mut workers {
            w.control(Control::Offline { from, until }, &clock);
        }
    }
    let gateway_before = match target.gateway() {
        Some(_) => crate::gateway::counters(&target).await,
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = publish::spawn(
        PublishPlan {
            target: target.clone(),
            topic: config.topic.clone(),
            payload: config.payload,
            connections: config.publishers,
            schedule,
            clock,
        },
        published.clone(),
        stop_rx,
    )?;
    let window_ms = (schedule.last_due() - schedule.window_start()).as_millis() as u64;
    bar.set_length(window_ms.max(1));
    bar.set_position(0);
    let drain = config.effective_drain();
    let mut window_open: Option<Marks> = None;
    let mut drained_at = None;
    if !interrupted {
        let open_at = tokio::time::sleep_until(schedule.window_start().into());
        tokio::pin!(open_at);
        loop {
            tokio::select! {
                () = &mut interrupt => { interrupted = true; break; }
                // The window's marks are taken on the dot, not at the next tick, so bytes and
                // CPU are charged to exactly the window's events.
                () = &mut open_at, if window_open.is_none() => {
                    window_open = Some(col.marks(Instant::now()));
                }
                _ = ticker.tick() => {}
            }
            for msg in rx.try_iter() {
                col.absorb(msg);
            }
            let now = Instant::now();
            let phase = match window_open {
                None => "warmup",
                Some(_) if now <= schedule.last_due() => "window",
                Some(_) => "drain",
            };
            let delivered = col.delivered();
            col.sample(phase, published.load(Ordering::Relaxed));
            bar.set_position(
                now.saturating_duration_since(schedule.window_start())
                    .as_millis() as u64,
            );
            bar.set_message(format!(
                "{phase}  delivered {delivered}  p99 {}",
                col.last_p99_ms()
                    .map_or("-".into(), |ms| format!("{ms:.1} ms"))
            ));
            if publisher.is_finished() {
                // Drain: stop early once every expected delivery arrived.
                let expected = connected * plan.window_events;
                let done_at = *drained_at.get_or_insert(now.max(schedule.last_due()) + drain);
                if (delivered >= expected && now >= schedule.last_due()) || now >= done_at {
                    break;
                }
            }
        }
    }
    let window_close = col.marks(Instant::now());
    // The gateway's counters are read before the devices unregister at the stop, so what
    // they leave behind is not counted as discarded.
    let gateway_after = match gateway_before {
        Some(_) => crate::gateway::counters(&target).await,
        None => None,
    };
    let _ = stop_tx.send(true);
    let publish_result = publisher.join().unwrap_or_else(|_| PublishResult {
        interrupted: true,
        ..PublishResult::default()
    });
    let totals = col.finish(&rx, workers, clock);
    bar.finish_and_clear();
    // The devices the run registered (sending to tokens) it removes itself; clients removed
    // the ones they registered.
    if let Some(g) = target.gateway().filter(|g| !g.tokens.is_empty()) {
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            crate::gateway::unregister_devices(&target, &g.tokens),
        )
        .await;
    }
    let gateway = match (gateway_before, gateway_after) {
        (Some(before), Some(after)) => {
            let (at, away) =
                offline.map_or((Duration::ZERO, Duration::ZERO), |o| (o.at, o.duration));
            let period = (at, offline_start(at), away);
            Some(gateway_summary(
                &totals.recorder,
                &schedule,
                period,
                &before,
                &after,
            ))
        }
        _ => None,
    };

    let window_open = window_open.unwrap_or_else(|| window_close.clone());
    Ok(build_report(
        config,
        Built {
            started_at_unix_ms,
            interrupted,
            server_pid,
            rss_before,
            rss_connected,
            window_open,
            window_close,
            publish: publish_result,
            totals,
            col,
            gateway,
        },
    ))
}

/// A gateway run's own section: the devices sent offline for `period` (`at` as asked, `from`
/// as scheduled, `away`), what was held for them, and the gateway's counters over the run.
fn gateway_summary(
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

/// Refuses a run that would exceed the open-files limit mid-way, after raising it.
fn check_sockets(config: &LoadConfig) -> Result<(), LoadError> {
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    // With worker processes each holds its share; this process keeps the publishers.
    let per_process = config.clients.div_ceil(config.workers) as u64;
    let here = if config.workers > 1 { 0 } else { per_process };
    let needed = (here + config.publishers as u64 + FD_RESERVE).max(per_process + FD_RESERVE);
    if needed > limit {
        return Err(LoadError::TooManySockets { needed, limit });
    }
    Ok(())
}

/// pushbench servers say their pid in `/stats`; other servers need `--server-pid`.
async fn discover_pid(target: &Target) -> Option<u32> {
    let (status, body) = crate::http::get(target, "/stats").await.ok()?;
    if !status.is_success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    let pid = u32::try_from(v.get("pid")?.as_u64()?).ok()?;
    // Only a process on this machine can be sampled.
    sample(Some(pid)).map(|_| pid)
}

/// A worker, in this process or a child.
#[derive(Debug)]
enum WorkerHandle {
    Thread {
        control: tmpsc::UnboundedSender<Control>,
        join: std::thread::JoinHandle<()>,
    },
    Process(ProcessWorker),
}

impl WorkerHandle {
    fn control(&mut self, c: Control, clock: &Clock) {
        match self {
            WorkerHandle::Thread { control, .. } => {
                let _ = control.send(c);
            }
            WorkerHandle::Process(p) => p.control(c, clock),
        }
    }

    fn pid(&self) -> Option<u32> {
        match self {
            WorkerHandle::Thread { .. } => None,
            WorkerHandle::Process(p) => Some(p.pid()),
        }
    }

    /// Whether the worker died early (it can then never report).
    fn exited(&mut self) -> bool {
        match self {
            WorkerHandle::Thread { join, .. } => join.is_finished(),
            WorkerHandle::Process(_) => false,
        }
    }

    fn finish(self) {
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
fn spawn_workers(
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
                warmup_events: plan.warmup_events,
                window_events: plan.window_events,
                source: source_for(target, index, config),
                gateway: gateway.cloned(),
                tokens,
            };
            handles.push(WorkerHandle::Process(ProcessWorker::spawn(
                &exe,
                &spec,
                gateway.and_then(|g| g.auth_token.as_deref()),
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
            client: ClientConfig {
                after: None,
                poll_interval: config.poll_interval,
                longpoll_timeout: config.longpoll_timeout,
                latest: config.poll_latest,
                ..ClientConfig::new(config.transport, config.topic.clone())
            },
            warmup_events: plan.warmup_events,
            window_events: plan.window_events,
            clock,
            first_device: first(index),
        };
        let join = worker::spawn(wplan, tx.clone(), control_rx)?;
        handles.push(WorkerHandle::Thread { control, join });
    }
    Ok(handles)
}

/// Worker process `index` connects from its own loopback address (127.0.0.1, 127.0.0.2, ...):
/// one source address has only ~28,000 ephemeral ports, and every worker process may hold
/// nearly 20,000 sockets. Other targets keep the kernel's choice.
fn source_for(target: &Target, index: usize, config: &LoadConfig) -> Option<std::net::IpAddr> {
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

/// Readings taken at the window's edges, to charge CPU to the window alone.
#[derive(Debug, Clone)]
struct Marks {
    at: Instant,
    server: Option<ProcSample>,
    loadgen: Option<ProcSample>,
}

/// What the workers reported, merged.
#[derive(Debug, Default)]
struct Totals {
    recorder: Recorder,
    window: CountersSnapshot,
    total: CountersSnapshot,
}

/// Time series, interval histograms, live counts and peaks, gathered on the collector's tick.
#[derive(Debug)]
struct Collector {
    server_pid: Option<u32>,
    /// Worker processes, whose CPU and memory count as the load generator's.
    child_pids: Vec<u32>,
    run_start: Instant,
    last: (Instant, Option<ProcSample>, Option<ProcSample>),
    series: Vec<Sample>,
    /// Latest (delivered, connected) of each worker.
    progress: Vec<(u64, u64)>,
    /// Interval histograms merged across workers, per collector second.
    current: Histogram<u64>,
    current_start: Instant,
    intervals: Vec<(Duration, Duration, Histogram<u64>)>,
    server_rss_peak: Option<u64>,
    loadgen_rss_peak: u64,
    done: usize,
    totals: Totals,
}

impl Collector {
    fn new(server_pid: Option<u32>, run_start: Instant) -> Collector {
        Collector {
            server_pid,
            child_pids: Vec::new(),
            run_start,
            last: (run_start, sample(server_pid), sample(None)),
            series: Vec::new(),
            progress: Vec::new(),
            current: latency_histogram(),
            current_start: run_start,
            intervals: Vec::new(),
            server_rss_peak: None,
            loadgen_rss_peak: 0,
            done: 0,
            totals: Totals::default(),
        }
    }

    fn workers(&mut self, n: usize, child_pids: Vec<u32>) {
        self.progress = vec![(0, 0); n];
        self.child_pids = child_pids;
        self.last.2 = self.loadgen_sample();
    }

    fn delivered(&self) -> u64 {
        self.progress.iter().map(|p| p.0).sum()
    }

    fn connected(&self) -> u64 {
        self.progress.iter().map(|p| p.1).sum()
    }

    /// This process plus its worker processes.
    fn loadgen_sample(&self) -> Option<ProcSample> {
        let mut total = sample(None)?;
        for pid in &self.child_pids {
            if let Some(s) = sample(Some(*pid)) {
                total.cpu += s.cpu;
                total.rss_bytes += s.rss_bytes;
            }
        }
        Some(total)
    }

    fn marks(&self, at: Instant) -> Marks {
        Marks {
            at,
            server: sample(self.server_pid),
            loadgen: self.loadgen_sample(),
        }
    }

    fn absorb(&mut self, msg: WorkerMsg) {
        match msg {
            WorkerMsg::Interval { histogram, .. } => {
                let _ = self.current.add(&histogram);
                let now = Instant::now();
                if now.duration_since(self.current_start) >= worker::INTERVAL {
                    let start = self.current_start.duration_since(self.run_start);
                    let length = now.duration_since(self.current_start);
                    let h = std::mem::replace(&mut self.current, latency_histogram());
                    self.intervals.push((start, length, h));
                    self.current_start = now;
                }
            }
            WorkerMsg::Progress {
                worker,
                delivered,
                connected,
            } => {
                if let Some(p) = self.progress.get_mut(worker) {
                    *p = (delivered, connected);
                }
            }
            WorkerMsg::Done {
                worker,
                recorder,
                window,
                total,
            } => {
                if let Some(p) = self.progress.get_mut(worker) {
                    *p = (recorder.delivered, recorder.clients_connected);
                }
                self.totals.recorder.merge(&recorder);
                self.totals.window.merge(&window);
                self.totals.total.merge(&total);
                self.done += 1;
            }
            WorkerMsg::Subscribed { worker, connected } => {
                // Counted here too: the next progress message may be a tick away.
                if let Some(p) = self.progress.get_mut(worker) {
                    p.1 = p.1.max(connected);
                }
            }
        }
    }

    fn last_p99_ms(&self) -> Option<f64> {
        let (_, _, h) = self.intervals.last()?;
        (!h.is_empty()).then(|| h.value_at_quantile(0.99) as f64 / 1000.0)
    }

    /// Takes a sample of the time series, at most every [`TICK`].
    fn sample(&mut self, phase: &str, published: u64) {
        let now = Instant::now();
        if !self.series.is_empty() && now.duration_since(self.last.0) < TICK {
            return;
        }
        let server = sample(self.server_pid);
        let me = self.loadgen_sample();
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-3);
        let cores = |a: Option<ProcSample>, b: Option<ProcSample>| match (a, b) {
            (Some(a), Some(b)) => Some(b.cpu.saturating_sub(a.cpu).as_secs_f64() / dt),
            _ => None,
        };
        if let Some(s) = server {
            self.server_rss_peak = Some(self.server_rss_peak.unwrap_or(0).max(s.rss_bytes));
        }
        let me_rss = me.map_or(0, |s| s.rss_bytes);
        self.loadgen_rss_peak = self.loadgen_rss_peak.max(me_rss);
        self.series.push(Sample {
            t_s: now.duration_since(self.run_start).as_secs_f64(),
            phase: phase.to_owned(),
            published,
            delivered: self.delivered(),
            connected: self.connected(),
            server_cpu_cores: cores(self.last.1, server),
            server_rss_bytes: server.map(|s| s.rss_bytes),
            loadgen_cpu_cores: cores(self.last.2, me).unwrap_or(0.0),
            loadgen_rss_bytes: me_rss,
        });
        self.last = (now, server, me);
    }

    /// Tells every worker to stop, waits for their totals, and merges them.
    fn finish(
        &mut self,
        rx: &mpsc::Receiver<WorkerMsg>,
        mut workers: Vec<WorkerHandle>,
        clock: Clock,
    ) -> Totals {
        for w in &mut workers {
            w.control(Control::Stop, &clock);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.done < workers.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(msg) => self.absorb(msg),
                Err(_) => break,
            }
        }
        for w in workers {
            w.finish();
        }
        std::mem::take(&mut self.totals)
    }
}

struct Built {
    started_at_unix_ms: u64,
    interrupted: bool,
    server_pid: Option<u32>,
    rss_before: Option<u64>,
    rss_connected: Option<u64>,
    window_open: Marks,
    window_close: Marks,
    publish: PublishResult,
    totals: Totals,
    col: Collector,
    gateway: Option<GatewaySummary>,
}

fn build_report(config: LoadConfig, b: Built) -> LoadReport {
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
    let loadgen_util = if window_s > 0.0 {
        loadgen_cpu.as_secs_f64() / (window_s * cores as f64)
    } else {
        0.0
    };
    let loop_lag = Percentiles::of(&r.loop_lag);
    let lateness = Percentiles::of(&b.publish.lateness);

    let mut warnings = Vec::new();
    if loadgen_util > CPU_SATURATED {
        warnings.push(format!(
            "load generator CPU was {:.0}% of its {cores} usable core(s): it may have been the \
             bottleneck, so these latencies may not be the server's",
            loadgen_util * 100.0
        ));
    }
    if loop_lag.p99 > LAG_SATURATED_US {
        warnings.push(format!(
            "load generator timers ran {:.1} ms late at p99: deliveries were timed late by the \
             load generator itself",
            loop_lag.p99 as f64 / 1000.0
        ));
    }
    if lateness.p99 > LAG_SATURATED_US {
        warnings.push(format!(
            "publishes started {:.1} ms late at p99 (more --publishers may help); latency \
             still counts from the due time",
            lateness.p99 as f64 / 1000.0
        ));
    }
    if b.publish.skipped > 0 {
        warnings.push(format!(
            "{} events were never published: every publish connection was backed up",
            b.publish.skipped
        ));
    }
    let saturated = loadgen_util > CPU_SATURATED || loop_lag.p99 > LAG_SATURATED_US;
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

    let rss_per_conn = match (b.rss_before, b.rss_connected) {
        (Some(a), Some(z)) if r.clients_connected > 0 => {
            Some((z as f64 - a as f64) / r.clients_connected as f64)
        }
        _ => None,
    };
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
        delivered,
        expected,
        lost: expected.saturating_sub(delivered),
        duplicates: r.duplicates,
        out_of_order: r.out_of_order,
        gaps: r.gaps,
        gap_events: r.gap_events,
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
            cores,
            threads: if config.workers > 1 {
                config.workers
            } else {
                config.threads
            },
            rss_peak_bytes: b.col.loadgen_rss_peak,
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

//! Runs the suite: each experiment for every technique, a fresh server child process per load
//! run, results written as they come so an interrupted suite still leaves its data behind.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use pushbench_loadgen::client::Backoff;
use pushbench_loadgen::gateway::GatewayOptions;
use pushbench_loadgen::load::env::Environment;
use pushbench_loadgen::load::{self, LoadConfig, ReconnectPolicy};
use pushbench_loadgen::Profile;
use pushbench_servers::Transport;
use tokio_util::sync::CancellationToken;

use crate::crosscheck::Bracket;
use crate::faults::FaultRun;
use crate::peer::Peer;
use crate::pin::Pinning;
use crate::plan::{Experiment, Fault, Params, Scale, Step};
use crate::server::ServerProcess;
use crate::strike::{self, Armed};
use crate::summary::{Failure, Run, Server, Summary, SCHEMA};
use crate::{fanout_floor, floor, io_err, upstream, SuiteError};

/// Most subscribers one load-generator process is given; more are split over worker
/// processes, each with its own open-files limit and source address.
const CLIENTS_PER_PROCESS: usize = 9_000;

/// What to run.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// Scale.
    pub scale: Scale,
    /// Output directory (created).
    pub out: PathBuf,
    /// Experiments to run (empty: all).
    pub only: Vec<Experiment>,
    /// Production servers to run beside pushbench in `[latency]` and `[fanout]` (`--peers`),
    /// those of them that are installed.
    pub peers: Vec<Profile>,
    /// The pushbench binary, started as `serve` for each run.
    pub exe: PathBuf,
    /// The repository, whose `scripts/` start the peers.
    pub repo: PathBuf,
    /// The command line, for the report.
    pub command: String,
}

/// The progress bars: the whole suite, the current experiment, the current run.
#[derive(Debug, Clone)]
pub struct Progress {
    multi: MultiProgress,
    suite: ProgressBar,
    experiment: ProgressBar,
}

impl Progress {
    /// Bars drawn on `multi` (hidden when it draws nowhere).
    pub fn new(multi: MultiProgress) -> Progress {
        let suite = multi.add(ProgressBar::new(0));
        suite.set_style(style(
            "suite      {elapsed:>4} [{bar:30}] {pos}/{len} runs {msg}",
        ));
        let experiment = multi.add(ProgressBar::new(0));
        experiment.set_style(style(
            "experiment {elapsed:>4} [{bar:30}] {pos}/{len} {msg}",
        ));
        Progress {
            multi,
            suite,
            experiment,
        }
    }

    /// No output.
    pub fn hidden() -> Progress {
        Progress::new(MultiProgress::with_draw_target(
            indicatif::ProgressDrawTarget::hidden(),
        ))
    }

    fn run_bar(&self) -> ProgressBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(style(
            "run        {elapsed:>4} [{bar:30}] {pos}/{len} {msg}",
        ));
        bar
    }

    /// Prints a line above the bars.
    pub fn println(&self, line: &str) {
        let _ = self.multi.println(line);
    }
}

/// A bar style from a constant template.
fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// One unit of work.
#[derive(Debug, Clone)]
enum Job {
    Floor,
    /// `[fanout]`'s physical limit at this many subscribers.
    FanoutFloor(usize),
    Load(Box<Step>, Server),
    Upstream(Transport),
}

impl Job {
    fn experiment(&self) -> Experiment {
        match self {
            Job::Floor => Experiment::Floor,
            Job::FanoutFloor(_) => Experiment::Fanout,
            Job::Load(s, _) => s.experiment,
            Job::Upstream(_) => Experiment::Upstream,
        }
    }

    /// The progress line of a job that is not a load run.
    fn describe(&self) -> String {
        match self {
            Job::Floor => "[floor] TCP ping-pong".into(),
            Job::FanoutFloor(n) => format!("[fanout] physical limit, {n} sockets"),
            Job::Load(s, _) => format!("[{}] {}", s.experiment.name(), s.transport.name()),
            Job::Upstream(t) => format!("[upstream] {}", t.name()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs the suite and writes everything into `config.out`. `interrupt` stops it early; what
/// ran is still written, marked interrupted.
pub async fn run(
    config: SuiteConfig,
    progress: &Progress,
    interrupt: CancellationToken,
) -> Result<Summary, SuiteError> {
    std::fs::create_dir_all(&config.out).map_err(io_err(&config.out))?;
    let pinning = Pinning::apply();
    let params = Params::of(config.scale);
    let experiments: Vec<Experiment> = Experiment::ALL
        .into_iter()
        .filter(|e| config.only.is_empty() || config.only.contains(e))
        .collect();
    let mut summary = Summary {
        schema: SCHEMA.to_owned(),
        command: config.command.clone(),
        scale: config.scale,
        params: params.clone(),
        experiments: experiments.clone(),
        peers: false,
        peer_servers: Vec::new(),
        started_at_unix_ms: now_ms(),
        finished_at_unix_ms: 0,
        interrupted: false,
        environment: Environment::detect(),
        pinning: pinning.clone(),
        floor: None,
        fanout_floor: Vec::new(),
        crosscheck: Vec::new(),
        footprint: Vec::new(),
        runs: Vec::new(),
        upstream: Vec::new(),
        failures: Vec::new(),
        warnings: Vec::new(),
    };
    if let Some(note) = &pinning.note {
        summary.warnings.push(format!("pinning: {note}"));
    }
    if experiments.contains(&Experiment::Idle) {
        match pushbench_servers::footprint().await {
            Ok(f) => summary.footprint = f,
            Err(e) => summary.warnings.push(format!(
                "[idle]: could not take the subscriptions' footprint: {e}"
            )),
        }
    }
    if !summary.environment.release_build {
        summary
            .warnings
            .push("debug build: figures are not comparable with release runs".into());
    }
    let mut peers = Vec::new();
    for &profile in &config.peers {
        let Some(peer) = Peer::of(profile) else {
            continue;
        };
        let server = Server::Peer(profile);
        if peer.available(&config.repo) {
            peers.push(server);
        } else {
            summary.warnings.push(format!(
                "--peers: {} is not installed ({}), so it did not run",
                server.name(),
                peer.install
            ));
        }
    }
    summary.peers = !peers.is_empty();
    summary.peer_servers = peers.clone();
    let jobs = plan_jobs(&params, &experiments, &peers);
    progress.suite.set_length(jobs.len() as u64);
    let mut skip: Option<(Experiment, Server, Transport)> = None;
    let mut current: Option<Experiment> = None;
    for (i, job) in jobs.iter().enumerate() {
        if interrupt.is_cancelled() {
            summary.interrupted = true;
            break;
        }
        let e = job.experiment();
        if current != Some(e) {
            current = Some(e);
            let n = jobs[i..].iter().take_while(|j| j.experiment() == e).count();
            progress.experiment.reset();
            progress.experiment.set_length(n as u64);
            progress.experiment.set_message(format!("[{}]", e.name()));
        }
        progress.suite.inc(1);
        progress.experiment.inc(1);
        match job {
            Job::Load(step, server) => {
                if skip == Some((step.experiment, *server, step.transport)) {
                    continue;
                }
                progress.experiment.set_message(format!(
                    "[{}] {}{} {}",
                    step.experiment.name(),
                    match server {
                        Server::Pushbench => String::new(),
                        Server::Gateway => "via gateway ".into(),
                        peer => format!("{} ", peer.name()),
                    },
                    step.transport.name(),
                    step.label
                ));
                // `[latency]`'s cross-check brackets its run on pushbench's own server.
                let mut bracket = (step.experiment == Experiment::Latency
                    && *server == Server::Pushbench)
                    .then(|| {
                        Bracket::new(
                            step.transport,
                            params.crosscheck_events,
                            params.latency_rate,
                        )
                    })
                    .flatten();
                let result = load_one(
                    &config,
                    &params,
                    step,
                    *server,
                    &pinning,
                    source_ip(i),
                    progress,
                    &interrupt,
                    bracket.as_mut(),
                )
                .await;
                if let (Some(b), Ok(_)) = (bracket, &result) {
                    match b.finish() {
                        Ok(c) => summary.crosscheck.push(c),
                        Err(e) => summary.warnings.push(e.to_string()),
                    }
                }
                match result {
                    Ok(run) => {
                        if run.passed == Some(false) {
                            // A stepped experiment ends at its first failing step.
                            skip = Some((step.experiment, *server, step.transport));
                        }
                        summary.runs.push(run);
                    }
                    Err(error) => {
                        progress.println(&format!(
                            "[{}] {} {}: {error}",
                            step.experiment.name(),
                            step.transport.name(),
                            step.label
                        ));
                        if step.experiment.stepped() {
                            skip = Some((step.experiment, *server, step.transport));
                        }
                        summary.failures.push(Failure {
                            experiment: step.experiment,
                            server: *server,
                            transport: step.transport,
                            label: step.label.clone(),
                            error,
                        });
                    }
                }
                if interrupt.is_cancelled() {
                    summary.interrupted = true;
                    break;
                }
            }
            other => {
                progress.experiment.set_message(other.describe());
                if let Err(e) = measure(other, &config, &params, &pinning, &mut summary).await {
                    summary.warnings.push(e.to_string());
                }
            }
        }
    }
    progress.experiment.finish_and_clear();
    progress.suite.finish_and_clear();
    let saturated = summary.runs.iter().filter(|r| r.loadgen_saturated).count();
    if saturated > 0 {
        summary.warnings.push(format!(
            "the load generator was saturated in {saturated} run(s), listed under Health: their \
             latencies may be the load generator's, not the server's"
        ));
    }
    summary.finished_at_unix_ms = now_ms();
    crate::write_all(&config.out, &summary)?;
    Ok(summary)
}

/// One of the suite's own measurements (not a load run), its result put into `summary`.
async fn measure(
    job: &Job,
    config: &SuiteConfig,
    params: &Params,
    pinning: &Pinning,
    summary: &mut Summary,
) -> Result<(), SuiteError> {
    match job {
        Job::Floor => {
            let pace = floor::Pace::of(params);
            summary.floor = Some(floor::measure(params.floor_round_trips, pace, pinning)?);
        }
        Job::FanoutFloor(n) => {
            let reader = fanout_floor::ReaderAt::Process(&config.exe);
            let (events, gap) = (params.fanout_floor_events, params.fanout_floor_gap);
            let f = fanout_floor::measure(reader, *n, events, gap, pinning)?;
            summary.fanout_floor.push(f);
        }
        Job::Upstream(t) => {
            let u = upstream_one(&config.exe, *t, pinning, params.upstream_round_trips).await?;
            summary.upstream.push(u);
        }
        Job::Load(..) => {}
    }
    Ok(())
}

fn plan_jobs(params: &Params, experiments: &[Experiment], peers: &[Server]) -> Vec<Job> {
    let mut jobs = Vec::new();
    for &e in experiments {
        match e {
            Experiment::Floor => jobs.push(Job::Floor),
            Experiment::Upstream => jobs.extend(upstream::MODES.map(Job::Upstream)),
            _ => {
                // The physical limit comes first, on a machine no server has touched yet.
                if e == Experiment::Fanout {
                    jobs.extend(params.fanout_clients.iter().map(|&n| Job::FanoutFloor(n)));
                }
                for t in Transport::ALL {
                    for s in params.steps(e, t) {
                        let server = if s.gateway.is_some() {
                            Server::Gateway
                        } else {
                            Server::Pushbench
                        };
                        jobs.push(Job::Load(Box::new(s), server));
                    }
                }
                if matches!(e, Experiment::Latency | Experiment::Fanout) {
                    for &peer in peers {
                        for t in Transport::ALL {
                            for s in params.steps(e, t) {
                                jobs.push(Job::Load(Box::new(s), peer));
                            }
                        }
                    }
                }
            }
        }
    }
    jobs
}

/// The loopback address run `i` connects from (its worker processes: the next ones). Each run
/// gets its own, so a run never meets the TIME_WAIT sockets of the runs before it, which hold
/// an address's ports for a minute after a run of thousands of connections.
fn source_ip(i: usize) -> std::net::Ipv4Addr {
    let i = i % 50_000;
    std::net::Ipv4Addr::new(127, 10 + (i / 250) as u8, (i % 250) as u8, 1)
}

async fn upstream_one(
    exe: &Path,
    t: Transport,
    pinning: &Pinning,
    n: usize,
) -> Result<upstream::Upstream, SuiteError> {
    let server = ServerProcess::pushbench(exe, t, pinning)?;
    let result = upstream::measure(&server.url, t, n).await;
    server.stop();
    result
}

/// One load run: start the server, run, write the report, stop the server. A cross-check
/// `bracket` times its halves just before and just after the run, on the same server.
#[allow(clippy::too_many_arguments)]
async fn load_one(
    config: &SuiteConfig,
    params: &Params,
    step: &Step,
    server: Server,
    pinning: &Pinning,
    source_ip: std::net::Ipv4Addr,
    progress: &Progress,
    interrupt: &CancellationToken,
    mut bracket: Option<&mut Bracket>,
) -> Result<Run, String> {
    let proc = match server {
        Server::Pushbench => {
            let extra = step
                .fault
                .as_ref()
                .map(|f| strike::server_args(f, params))
                .unwrap_or_default();
            ServerProcess::pushbench_with(&config.exe, step.transport, &extra, pinning)
        }
        Server::Gateway => ServerProcess::gateway(&config.exe, pinning),
        Server::Peer(profile) => {
            let peer = Peer::of(profile).ok_or(format!("{profile} is no peer"))?;
            let prefix = std::env::temp_dir().join(format!(
                "pushbench-suite-{}-{}",
                profile.name(),
                std::process::id()
            ));
            ServerProcess::peer(peer, &config.repo, &prefix, pinning)
        }
    }
    .map_err(|e| e.to_string())?;
    let workers = step.clients.div_ceil(CLIENTS_PER_PROCESS).max(1);
    let topic = format!("suite-{}", step.experiment.name());
    let armed = match &step.fault {
        Some(f) => Some(Armed::new(f, &proc, step.transport, &topic).await?),
        None => None,
    };
    let load_config = LoadConfig {
        clients: step.clients,
        rate: step.rate,
        duration: step.window,
        warmup: step.warmup,
        poll_interval: step.poll_interval,
        poll_latest: step.poll_latest,
        payload: step.fault.as_ref().map_or(64, |f| f.payload),
        topic,
        ramp: match server {
            Server::Peer(p) => Peer::of(p).and_then(|p| p.connect_rate),
            Server::Pushbench | Server::Gateway => None,
        }
        .unwrap_or(5_000.0),
        drain: params.drain,
        publishers: if step.rate > 1_000.0 { 8 } else { 4 },
        threads: load::sampler::usable_cores().max(1),
        workers,
        server_pid: proc.pid,
        source_ip: Some(source_ip),
        target_profile: match server {
            Server::Pushbench => Profile::Pushbench,
            Server::Gateway => Profile::Gateway,
            Server::Peer(profile) => profile,
        },
        publish_target: proc.publish_url.clone(),
        gateway: step.gateway.as_ref().map(|g| GatewayOptions {
            project: "suite".into(),
            auth_token: proc.auth_token.clone(),
            registration_token: proc.registration_token.clone(),
            send_to: g.send_to,
            ttl: g.ttl,
            collapse_key: g.collapse_key.clone(),
            offline: g.offline,
            ..GatewayOptions::default()
        }),
        reconnect: step
            .fault
            .as_ref()
            .map_or_else(ReconnectPolicy::default, |f| ReconnectPolicy {
                delay: f.reconnect_delay,
                backoff: if f.fault == Fault::DropJitter {
                    Backoff::Jitter
                } else {
                    Backoff::Fixed
                },
                ..ReconnectPolicy::default()
            }),
        ..LoadConfig::new(step.transport, proc.url.clone())
    };
    if let Some(b) = bracket.as_deref_mut() {
        b.half(&proc.url);
    }
    let bar = progress.run_bar();
    let (timing, timing_rx) = tokio::sync::oneshot::channel();
    let load = load::run_timed(
        load_config,
        &bar,
        interrupt.clone().cancelled_owned(),
        Some(timing),
    );
    let (result, proc, struck) = match armed {
        Some(armed) => armed.during(proc, timing_rx, load).await?,
        None => (load.await, proc, None),
    };
    bar.finish_and_clear();
    progress.multi.remove(&bar);
    if let Some(b) = bracket {
        b.half(&proc.url);
    }
    proc.stop();
    let report = result.map_err(|e| e.to_string())?;
    let file = step.file(match server {
        Server::Peer(p) => Some(p.name()),
        Server::Pushbench | Server::Gateway => None,
    });
    let path = config.out.join(&file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&path, text + "\n").map_err(|e| format!("{}: {e}", path.display()))?;
    let mut run = Run::of(step, server, file, &report);
    run.fault = struck.map(|s| FaultRun::measure(&report, &s));
    Ok(run)
}

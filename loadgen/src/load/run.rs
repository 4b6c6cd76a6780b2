//! Orchestration: one load test from connect to report, phase by phase. The workers' handles
//! live in `handles.rs`, the collector's state in `collector.rs`, the report's assembly in
//! `assemble.rs`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indicatif::ProgressBar;
use tokio::sync::watch;

use super::assemble::{build_report, gateway_summary, Built};
use super::collector::{Collector, Marks};
use super::config::LoadConfig;
use super::error::LoadError;
use super::handles::{spawn_workers, WorkerHandle};
use super::publish::{self, PublishPlan, PublishResult};
use super::report::LoadReport;
use super::sampler::{sample, sample_tree};
use super::schedule::{Clock, Schedule};
use super::worker::{Control, WorkerMsg};
use crate::gateway::prepare;
use crate::target::Target;

/// How often the collector checks for progress (every subscriber connected, every delivery
/// in), so a short run is not stretched to whole ticks. Not much more often: each check is a
/// wake-up of the load generator's core, about 0.1 ms of its CPU on a virtual CPU, which counts
/// as the instrument's cost (at 20 ms it was a tenth of it at 10,000 subscribers).
const CHECK: Duration = Duration::from_millis(50);
/// Sockets kept free for the publisher, the sampler and stdio.
const FD_RESERVE: u64 = 64;

/// When a run's clock started and its window opens, for a caller that acts on the run's
/// schedule (the suite's `[faults]` cuts connections or kills the server at a set time into the
/// window). The time series' `t_s` counts from `run_start`.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// The run's start.
    pub run_start: Instant,
    /// The window's first due time.
    pub window_start: Instant,
}

/// Runs one load test. `interrupt` (Ctrl-C) stops it early with partial results. `bar` shows
/// progress; pass a hidden bar for none.
pub async fn run(
    config: LoadConfig,
    bar: &ProgressBar,
    interrupt: impl Future<Output = ()>,
) -> Result<LoadReport, LoadError> {
    run_timed(config, bar, interrupt, None).await
}

/// [`run`], telling `timing` when the window opens, as soon as every subscriber connected and
/// the schedule is set.
pub async fn run_timed(
    config: LoadConfig,
    bar: &ProgressBar,
    interrupt: impl Future<Output = ()>,
    timing: Option<tokio::sync::oneshot::Sender<Timing>>,
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
    let rss_before = sample_tree(server_pid).map(|s| s.rss_bytes);
    let loadgen_rss_before = sample(None).map(|s| s.rss_bytes);

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
    let rss_connected = sample_tree(server_pid).map(|s| s.rss_bytes);
    let loadgen_rss_connected = col.loadgen_sample().map(|s| s.rss_bytes);

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
    if let Some(tx) = timing {
        let _ = tx.send(Timing {
            run_start,
            window_start: schedule.window_start(),
        });
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
    // Behind Pushpin, an application server (the origin) takes the publishes, not the proxy.
    let publish_to = match &config.publish_target {
        Some(url) => Target::resolve(url)
            .await?
            .with_profile(config.target_profile),
        None => target.clone(),
    };
    let gateway_before = match target.gateway() {
        Some(_) => crate::gateway::counters(&target).await,
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let published = Arc::new(AtomicU64::new(0));
    let publisher = publish::spawn(
        PublishPlan {
            target: publish_to,
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
            if !bar.is_hidden() {
                bar.set_message(format!(
                    "{phase}  delivered {delivered}  p99 {}",
                    col.last_p99_ms()
                        .map_or("-".into(), |ms| format!("{ms:.1} ms"))
                ));
            }
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
            loadgen_rss: (loadgen_rss_before, loadgen_rss_connected),
            window_open,
            window_close,
            publish: publish_result,
            totals,
            col,
            gateway,
        },
    ))
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

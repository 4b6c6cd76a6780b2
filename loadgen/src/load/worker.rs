//! A worker: one OS thread with its own single-threaded runtime, running a share of the
//! subscribers. Its clients record into the worker's [`Recorder`] without locks or messages;
//! the collector gets an interval histogram once a second and the totals at the end.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::LocalSet;

use super::payload;
use super::recorder::{Recorder, Seen, Track};
use super::schedule::Clock;
use crate::client::{Client, ClientConfig, Item};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// How often a worker hands its interval histogram to the collector.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// How often the worker checks its own timer lateness.
const LAG_PROBE: Duration = Duration::from_millis(10);

/// Errors in a row after which a client stops trying (its remaining events count as lost).
const MAX_ERRORS_IN_A_ROW: u32 = 20;

/// What a worker must do.
#[derive(Debug, Clone)]
pub struct WorkerPlan {
    /// Worker number, from 0.
    pub index: usize,
    /// Subscribers this worker runs.
    pub clients: usize,
    /// New subscriptions per second on this worker.
    pub ramp: f64,
    /// Where to subscribe.
    pub target: Target,
    /// How each client subscribes.
    pub client: ClientConfig,
    /// Events due before the window (their deliveries are not measured).
    pub warmup_events: u64,
    /// Events in the window.
    pub window_events: u64,
    /// The run's clock, to convert receive instants to Unix time.
    pub clock: Clock,
}

/// What a worker tells the collector.
#[derive(Debug)]
pub enum WorkerMsg {
    /// Every client of the worker has subscribed or failed to.
    Subscribed {
        /// Worker number.
        worker: usize,
    },
    /// Latencies recorded during the interval ending at `end`.
    Interval {
        /// Worker number.
        worker: usize,
        /// When the interval ended.
        end: Instant,
        /// The interval's latencies.
        histogram: Box<hdrhistogram::Histogram<u64>>,
    },
    /// The worker's totals; the last message it sends.
    Done {
        /// Worker number.
        worker: usize,
        /// Everything it recorded.
        recorder: Box<Recorder>,
    },
}

/// Live numbers the collector reads while the run goes.
#[derive(Debug, Default)]
pub struct Live {
    /// First deliveries of window events so far, all workers.
    pub delivered: AtomicU64,
    /// Subscribed clients so far, all workers.
    pub connected: AtomicU64,
}

/// Starts a worker thread. It runs until `stop` turns true, then reports [`WorkerMsg::Done`].
pub fn spawn(
    plan: WorkerPlan,
    counters: Arc<Counters>,
    live: Arc<Live>,
    tx: mpsc::Sender<WorkerMsg>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("pushbench-worker-{}", plan.index))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            let local = LocalSet::new();
            local.block_on(&runtime, run(plan, counters, live, tx, stop));
        })
}

async fn run(
    plan: WorkerPlan,
    counters: Arc<Counters>,
    live: Arc<Live>,
    tx: mpsc::Sender<WorkerMsg>,
    mut stop: watch::Receiver<bool>,
) {
    let rec = Rc::new(RefCell::new(Recorder::default()));
    let plan = Rc::new(plan);
    let pending = Rc::new(std::cell::Cell::new(plan.clients));
    let mut tasks = tokio::task::JoinSet::new();

    // Loop-lag probe and interval hand-off share one task: both are about this thread's health.
    {
        let rec = rec.clone();
        let tx = tx.clone();
        let worker = plan.index;
        let mut stop = stop.clone();
        tasks.spawn_local(async move {
            let mut next_probe = Instant::now() + LAG_PROBE;
            let mut next_interval = Instant::now() + INTERVAL;
            loop {
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep_until(next_probe.into()) => {}
                }
                let now = Instant::now();
                let lag = now.saturating_duration_since(next_probe);
                rec.borrow_mut()
                    .loop_lag
                    .saturating_record((lag.as_micros() as u64).max(1));
                next_probe = now + LAG_PROBE;
                if now >= next_interval {
                    let histogram = Box::new(rec.borrow_mut().take_interval());
                    let _ = tx.send(WorkerMsg::Interval {
                        worker,
                        end: now,
                        histogram,
                    });
                    next_interval += INTERVAL;
                }
            }
        });
    }

    // Open subscriptions at the ramp rate; each runs as its own task until stopped.
    let started = Instant::now();
    for i in 0..plan.clients {
        let at = started + Duration::from_secs_f64(i as f64 / plan.ramp);
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(at.into()) => {}
        }
        let (plan, rec, counters, live, tx, pending, stop) = (
            plan.clone(),
            rec.clone(),
            counters.clone(),
            live.clone(),
            tx.clone(),
            pending.clone(),
            stop.clone(),
        );
        tasks.spawn_local(async move {
            let t0 = Instant::now();
            let client = Client::connect(&plan.target, plan.client.clone(), counters).await;
            {
                let mut r = rec.borrow_mut();
                match &client {
                    Ok(_) => {
                        r.connect
                            .saturating_record((t0.elapsed().as_micros() as u64).max(1));
                        r.clients_connected += 1;
                        live.connected.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(err) => {
                        r.clients_failed += 1;
                        r.error(err);
                    }
                }
            }
            pending.set(pending.get() - 1);
            if pending.get() == 0 {
                let _ = tx.send(WorkerMsg::Subscribed { worker: plan.index });
            }
            if let Ok(client) = client {
                subscriber(client, &plan, &rec, &live, stop).await;
            }
        });
    }
    if plan.clients == 0 {
        let _ = tx.send(WorkerMsg::Subscribed { worker: plan.index });
    }
    let _ = stop.wait_for(|s| *s).await;
    // Every task watches `stop`; give them a moment to finish, then drop the rest.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    let recorder = Box::new(rec.borrow().clone());
    let _ = tx.send(WorkerMsg::Done {
        worker: plan.index,
        recorder,
    });
}

/// Reads one subscription until stopped, accounting for every item.
async fn subscriber(
    mut client: Client,
    plan: &WorkerPlan,
    rec: &RefCell<Recorder>,
    live: &Live,
    mut stop: watch::Receiver<bool>,
) {
    let mut track = Track::new(plan.window_events);
    let mut errors_in_a_row = 0;
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            item = client.next() => item,
        };
        match item {
            Ok(Item::Event(d)) => {
                errors_in_a_row = 0;
                let mut r = rec.borrow_mut();
                let backwards = track.order(d.id);
                let Some(stamp) = payload::decode(&d.payload) else {
                    r.foreign += 1;
                    continue;
                };
                if stamp.seq < plan.warmup_events
                    || stamp.seq >= plan.warmup_events + plan.window_events
                {
                    continue;
                }
                match track.see(stamp.seq - plan.warmup_events) {
                    Seen::Duplicate => r.duplicates += 1,
                    Seen::First => {
                        if backwards {
                            r.out_of_order += 1;
                        }
                        let received = plan.clock.unix_ns(d.received);
                        if received < stamp.due_unix_ns {
                            r.clock_anomalies += 1;
                        }
                        r.record_latency(received.saturating_sub(stamp.due_unix_ns) / 1000);
                        r.delivered += 1;
                        live.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok(Item::Gap { from, to }) => {
                errors_in_a_row = 0;
                let mut r = rec.borrow_mut();
                r.gaps += 1;
                r.gap_events += to.saturating_sub(from) + 1;
            }
            Err(err) => {
                rec.borrow_mut().error(&err);
                errors_in_a_row += 1;
                let fatal = matches!(
                    err,
                    ClientError::TooManyReconnects { .. }
                        | ClientError::Closed
                        | ClientError::Unsupported(_)
                );
                if fatal || errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                    rec.borrow_mut().clients_lost += 1;
                    return;
                }
            }
        }
    }
}

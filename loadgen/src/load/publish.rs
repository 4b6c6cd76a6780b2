//! How to publish: a pool of keep-alive publish connections fed by the open-loop schedule.
//!
//! The scheduler only decides *when*; it hands event `k` to an idle publish connection at its due
//! time and never waits for an answer, so a slow publish delays nothing after it. Each publish
//! records how late it started against its due time: that is the publisher's own health.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, watch};
use tokio::task::LocalSet;

use super::payload::{self, Stamp};
use super::recorder::{error_kind, latency_histogram};
use super::schedule::{Clock, Schedule};
use crate::counters::{Counters, CountersSnapshot};
use crate::publisher::Publisher;
use crate::target::Target;

/// Events queued per publish connection before the scheduler counts one as skipped.
const QUEUE_PER_CONNECTION: usize = 1024;

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishPlan {
    /// Where.
    pub target: Target,
    /// To which topic.
    pub topic: String,
    /// Payload size in bytes.
    pub payload: usize,
    /// Publish connections.
    pub connections: usize,
    /// When.
    pub schedule: Schedule,
    /// The run's clock, for the due times written into payloads.
    pub clock: Clock,
}

/// How publishing went.
#[derive(Debug, Clone)]
pub struct PublishResult {
    /// Events the schedule called for (warm-up and window), up to the stop.
    pub scheduled: u64,
    /// Window events the server accepted.
    pub window_ok: u64,
    /// All events the server accepted.
    pub ok: u64,
    /// Publishes that failed, by kind.
    pub failed: BTreeMap<String, u64>,
    /// Events not even sent because every publish connection was backed up.
    pub skipped: u64,
    /// How late each publish started after its due time, in µs.
    pub lateness: Histogram<u64>,
    /// Send times of the first and last accepted window events.
    pub window_span: Option<(Instant, Instant)>,
    /// Socket counters of the publish connections.
    pub counters: CountersSnapshot,
    /// Whether the run was stopped before the schedule ended.
    pub interrupted: bool,
}

impl Default for PublishResult {
    /// Nothing published yet.
    fn default() -> PublishResult {
        PublishResult {
            scheduled: 0,
            window_ok: 0,
            ok: 0,
            failed: BTreeMap::new(),
            skipped: 0,
            lateness: latency_histogram(),
            window_span: None,
            counters: CountersSnapshot::default(),
            interrupted: false,
        }
    }
}

impl PublishResult {
    /// Accepted window events per second, over the span the schedule gave them.
    pub fn achieved_rate(&self, planned: f64) -> f64 {
        match self.window_span {
            Some((first, last)) if self.window_ok > 1 => {
                let span = last.duration_since(first).as_secs_f64();
                if span > 0.0 {
                    (self.window_ok - 1) as f64 / span
                } else {
                    planned
                }
            }
            _ => 0.0,
        }
    }
}

/// Starts the publisher thread; it returns when the schedule ends or `stop` turns true.
pub fn spawn(
    plan: PublishPlan,
    published: Arc<AtomicU64>,
    stop: watch::Receiver<bool>,
) -> std::io::Result<std::thread::JoinHandle<PublishResult>> {
    std::thread::Builder::new()
        .name("pushbench-publisher".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            LocalSet::new().block_on(&runtime, run(plan, published, stop))
        })
}

async fn run(
    plan: PublishPlan,
    published: Arc<AtomicU64>,
    mut stop: watch::Receiver<bool>,
) -> PublishResult {
    let counters = Counters::new_shared();
    let shared = Rc::new(RefCell::new(PublishResult::default()));
    let plan = Rc::new(plan);
    let mut queues = Vec::with_capacity(plan.connections);
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let (tx, rx) = mpsc::channel::<u64>(QUEUE_PER_CONNECTION);
        queues.push(tx);
        let (plan, shared, counters, published) = (
            plan.clone(),
            shared.clone(),
            counters.clone(),
            published.clone(),
        );
        tasks.push(tokio::task::spawn_local(publish_loop(
            rx, plan, shared, counters, published,
        )));
    }

    // When to send runs on its own OS thread: `std::thread::sleep` wakes within tens of
    // microseconds of a due time, where this runtime's timer wheel rounds up to the next
    // millisecond, and that rounding would be counted as the server's latency.
    let stop_flag = Arc::new(AtomicBool::new(false));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let scheduler = {
        let (schedule, stop_flag) = (plan.schedule, stop_flag.clone());
        std::thread::Builder::new()
            .name("pushbench-schedule".into())
            .spawn(move || {
                let tally = schedule_loop(&schedule, queues, &stop_flag);
                let _ = done_tx.send(tally);
            })
    };
    let tally = match scheduler {
        Ok(_) => {
            tokio::pin!(done_rx);
            tokio::select! {
                tally = &mut done_rx => tally.unwrap_or_default(),
                _ = stop.wait_for(|s| *s) => {
                    stop_flag.store(true, Ordering::Relaxed);
                    done_rx.await.unwrap_or_default()
                }
            }
        }
        Err(err) => {
            tracing::error!(%err, "could not start the schedule thread");
            Tally {
                interrupted: true,
                ..Tally::default()
            }
        }
    };
    {
        let mut r = shared.borrow_mut();
        r.scheduled = tally.scheduled;
        r.skipped = tally.skipped;
        r.interrupted |= tally.interrupted;
    }
    for t in tasks {
        // A publish still waiting for its answer at a stop is abandoned, not awaited forever.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    let mut result = shared.borrow().clone();
    result.counters = counters.snapshot();
    result
}

/// What the schedule thread did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    scheduled: u64,
    skipped: u64,
    interrupted: bool,
}

/// Hands event `k` to an idle publish connection at its due time, never waiting for one.
fn schedule_loop(schedule: &Schedule, queues: Vec<mpsc::Sender<u64>>, stop: &AtomicBool) -> Tally {
    let mut tally = Tally::default();
    let n = queues.len();
    for k in 0..schedule.total_events() {
        let due = schedule.due(k);
        loop {
            if stop.load(Ordering::Relaxed) {
                tally.interrupted = true;
                return tally;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            // Sleep in slices, so a stop is seen within 50 ms.
            std::thread::sleep((due - now).min(std::time::Duration::from_millis(50)));
        }
        tally.scheduled += 1;
        let sent = (0..n).any(|i| queues[(k as usize + i) % n].try_send(k).is_ok());
        if !sent {
            tally.skipped += 1;
        }
    }
    tally
}

async fn publish_loop(
    mut rx: mpsc::Receiver<u64>,
    plan: Rc<PublishPlan>,
    shared: Rc<RefCell<PublishResult>>,
    counters: Arc<Counters>,
    published: Arc<AtomicU64>,
) {
    let mut conn: Option<Publisher> = None;
    let mut body = String::with_capacity(plan.payload.max(payload::MIN_PAYLOAD));
    while let Some(k) = rx.recv().await {
        let due = plan.schedule.due(k);
        let stamp = Stamp {
            seq: k,
            due_unix_ns: plan.clock.unix_ns(due),
        };
        payload::encode(stamp, plan.payload, &mut body);
        let started = Instant::now();
        let late_us = started.saturating_duration_since(due).as_micros() as u64;
        shared
            .borrow_mut()
            .lateness
            .saturating_record(late_us.max(1));
        let outcome = match conn.as_mut() {
            Some(p) => p.publish(&plan.topic, body.as_bytes()).await,
            None => match Publisher::connect(&plan.target, counters.clone()).await {
                Ok(p) => conn.insert(p).publish(&plan.topic, body.as_bytes()).await,
                Err(e) => Err(e),
            },
        };
        let mut r = shared.borrow_mut();
        match outcome {
            Ok(_id) => {
                r.ok += 1;
                published.fetch_add(1, Ordering::Relaxed);
                if plan.schedule.in_window(k) {
                    r.window_ok += 1;
                    r.window_span = Some(match r.window_span {
                        None => (started, started),
                        Some((first, last)) => (first.min(started), last.max(started)),
                    });
                }
            }
            Err(err) => {
                *r.failed.entry(error_kind(&err)).or_default() += 1;
                // A broken connection is replaced on the next event.
                if err.is_connection_error() {
                    conn = None;
                }
            }
        }
    }
}

//! How to publish: a pool of keep-alive publish connections fed by the open-loop schedule.
//!
//! The scheduler only decides *when*; it hands event `k` to an idle publish connection at its due
//! time and never waits for an answer, so a slow publish delays nothing after it. Each publish
//! records how late it started against its due time: that is the publisher's own health, and
//! the payload carries it so subscribers can also time `sent → received`.
//!
//! Both run on one thread. The scheduler sleeps on the runtime's timer until shortly before a
//! due time, then on a precise thread sleep, then spins the last few hundred µs: on this kind
//! of VM a thread woken from an idle core starts hundreds of µs late, and that lateness would
//! otherwise be read as the server's.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
            // The precise sleep before each due time ([`wait_until`]) wakes within a µs of
            // when it asked, not the default 50 µs timer slack later. Without it the publisher
            // is only as precise as its spin is long. Best effort: a kernel that refuses leaves
            // the default.
            let _ = nix::sys::prctl::set_timerslack(1_000);
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
        let owed = Rc::new(Cell::new(0));
        queues.push(Queue {
            tx,
            owed: owed.clone(),
        });
        let (plan, shared, counters, published) = (
            plan.clone(),
            shared.clone(),
            counters.clone(),
            published.clone(),
        );
        tasks.push(tokio::task::spawn_local(publish_loop(
            rx, owed, plan, shared, counters, published,
        )));
    }

    // When to send runs on this thread too, so the hand-off to a publish connection is a local
    // wake, not a cross-thread one (on this VM a parked thread takes hundreds of µs to wake).
    let tally = schedule_loop(&plan.schedule, &queues, &mut stop).await;
    drop(queues);
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

/// What the schedule loop did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    scheduled: u64,
    skipped: u64,
    interrupted: bool,
}

/// One publish connection's queue, and how many events it owes: queued or being published.
struct Queue {
    tx: mpsc::Sender<u64>,
    owed: Rc<Cell<usize>>,
}

impl Queue {
    fn try_send(&self, k: u64) -> bool {
        let sent = self.tx.try_send(k).is_ok();
        if sent {
            self.owed.set(self.owed.get() + 1);
        }
        sent
    }
}

/// Hands event `k` to the connection that owes the fewest events, the first of them from
/// `k`'s turn on, or else to any with room; false when every queue is full. Why: an event
/// queued behind a publish still waiting for its answer starts as late as that answer comes,
/// while another connection may be idle.
fn hand_off(queues: &[Queue], k: u64) -> bool {
    let n = queues.len();
    if n == 0 {
        return false;
    }
    let turn = (k as usize) % n;
    let order = (0..n).map(|i| &queues[(turn + i) % n]);
    // `min_by_key` keeps the first of equals, so ties go round in turn.
    let least = order.clone().min_by_key(|q| q.owed.get());
    least.is_some_and(|q| q.try_send(k)) || order.into_iter().any(|q| q.try_send(k))
}

/// Hands event `k` to an idle publish connection at its due time, never waiting for one.
async fn schedule_loop(
    schedule: &Schedule,
    queues: &[Queue],
    stop: &mut watch::Receiver<bool>,
) -> Tally {
    let mut tally = Tally::default();
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    let spin = spin_for(schedule.rate);
    for k in 0..schedule.total_events() {
        let due = schedule.due(k);
        tokio::select! {
            biased;
            _ = &mut stopped => {
                tally.interrupted = true;
                return tally;
            }
            () = wait_until(due, spin) => {}
        }
        tally.scheduled += 1;
        if !hand_off(queues, k) {
            tally.skipped += 1;
        }
        // Let the connection just handed the event run now, before anything else due.
        tokio::task::yield_now().await;
    }
    tally
}

/// How far ahead of a due time the runtime's timer hands over to a precise wait: its wheel
/// has millisecond slots and fires in the slot after the deadline.
const COARSE: Duration = Duration::from_millis(2);

/// How far ahead of a due time the thread stops sleeping and spins, at most: a vCPU that went
/// idle during a sleep takes a few hundred µs to wake, which a spin does not pay.
const SPIN: Duration = Duration::from_micros(400);

/// The spin at `rate` events/s: [`SPIN`], but never more than a tenth of the time between
/// events. Why: a spin is CPU the load generator spends, counted in its own cost, and at high
/// rates it also takes the core from the subscribers it shares (at 3,000 events/s a 400 µs spin
/// never stopped and took half the core). Events that close together keep the core awake
/// anyway, so a short spin after a precise sleep (the thread's timer slack is 1 µs) is as
/// punctual.
fn spin_for(rate: f64) -> Duration {
    if !(rate > 0.0 && rate.is_finite()) {
        return SPIN;
    }
    SPIN.min(Duration::from_secs_f64(0.1 / rate))
}

/// The last stretch of the spin, which gives way to nothing: a task the runtime ran in it
/// could carry the send past its due time.
const FINE: Duration = Duration::from_micros(60);

/// Waits for `due` precisely: the runtime's timer while far off, a thread sleep to `spin`
/// before it, then a spin.
///
/// Until the last [`FINE`] µs the spin gives way at every turn, both to the runtime (so
/// answers to earlier publishes are read and publishing never backs up at high rates, when
/// due times are closer together than the spin) and to the kernel (so the subscribers'
/// worker, which shares this core, runs whenever it has work).
async fn wait_until(due: Instant, spin: Duration) {
    if let Some(far) = due.checked_sub(COARSE).filter(|&t| t > Instant::now()) {
        tokio::time::sleep_until(far.into()).await;
    }
    // Blocking this thread for under COARSE delays only publish answers, which are not timed.
    let now = Instant::now();
    if due > now + spin {
        std::thread::sleep(due - now - spin);
    }
    while Instant::now() + FINE < due {
        std::thread::yield_now();
        tokio::task::yield_now().await;
    }
    while Instant::now() < due {
        std::hint::spin_loop();
    }
}

async fn publish_loop(
    mut rx: mpsc::Receiver<u64>,
    owed: Rc<Cell<usize>>,
    plan: Rc<PublishPlan>,
    shared: Rc<RefCell<PublishResult>>,
    counters: Arc<Counters>,
    published: Arc<AtomicU64>,
) {
    let mut conn: Option<Publisher> = None;
    let mut body = String::with_capacity(plan.payload.max(payload::MIN_PAYLOAD));
    while let Some(k) = rx.recv().await {
        let due = plan.schedule.due(k);
        let started = Instant::now();
        let late = started.saturating_duration_since(due);
        let stamp = Stamp {
            seq: k,
            due_unix_ns: plan.clock.unix_ns(due),
            sent_after_due_ns: late.as_nanos() as u64,
        };
        payload::encode(stamp, plan.payload, &mut body);
        let late_us = late.as_micros() as u64;
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
        owed.set(owed.get().saturating_sub(1));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn queues(n: usize, room: usize) -> (Vec<Queue>, Vec<mpsc::Receiver<u64>>) {
        (0..n)
            .map(|_| {
                let (tx, rx) = mpsc::channel(room);
                let q = Queue {
                    tx,
                    owed: Rc::new(Cell::new(0)),
                };
                (q, rx)
            })
            .unzip()
    }

    #[test]
    fn events_go_to_the_connection_owing_least_then_to_any_with_room() {
        let (qs, mut rxs) = queues(3, 2);
        // Idle connections take events in turn.
        for k in 0..3 {
            assert!(hand_off(&qs, k));
        }
        assert_eq!(
            qs.iter().map(|q| q.owed.get()).collect::<Vec<_>>(),
            [1, 1, 1]
        );
        // Connection 1 answers: the next event goes there, whoever's turn it is.
        assert_eq!(rxs[1].try_recv().unwrap(), 1);
        qs[1].owed.set(0);
        assert!(hand_off(&qs, 3));
        assert_eq!(rxs[1].try_recv().unwrap(), 3);
        // Every queue full: the event is refused, to be counted as skipped.
        let (full, _rxs) = queues(2, 1);
        assert!(hand_off(&full, 0) && hand_off(&full, 1));
        assert!(!hand_off(&full, 2));
        assert!(!hand_off(&[], 0));
    }
}

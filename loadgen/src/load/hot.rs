//! The readiness loop: one thread per worker that drives every streaming, SSE, WebSocket and
//! polling subscription in its steady state, with no task per subscriber.
//!
//! Why: a subscriber as an async task pays, for every delivery, a wake-up through the runtime
//! (its I/O driver, run queue and a poll of the task's stack of futures) on top of the
//! `epoll_wait` and `read` the delivery needs anyway. At 10,000 subscribers that overhead is
//! as large as the kernel's part, and it made the generator cost most of what the server it
//! measures costs. Here a delivery costs the kernel's part, the client's own decoding
//! ([`HotClient::buffered`]) and the recording: the loop is a plain `epoll` loop (mio) over
//! sockets taken off the runtime, with a timer heap for the polls that come due
//! ([`HotClient::wake_at`]).
//!
//! A delivery that finds the loop asleep wakes its core, and on a virtual CPU that wake-up costs
//! as much as the rest of the delivery. So after a batch of reads the loop lets the next
//! deliveries gather for up to `--coalesce` (1 ms by default; never past its next timer) and
//! reads them in one wake-up: at 10,000 subscribers it had woken about once per delivery. No
//! latency moves with it, because every read is timed by the kernel's arrival stamp
//! ([`crate::client::arrival`]), not by the clock when the loop got to it.
//!
//! Only the steady state lives here. Whatever needs waiting or connecting (a reconnect, an
//! error, a write that would block) goes back to the worker, which runs the subscriber as a
//! task again until it is back in its steady state ([`Returned`]). The loop records into its
//! own [`Recorder`], sends its interval histograms itself, and hands its totals and its CPU
//! time back when stopped.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::account::{account, lag_us, Accounted, SubState};
use super::messages::{WorkerMsg, WorkerPlan, INTERVAL, LAG_PROBE};
use super::recorder::Recorder;
use super::sampler::thread_cpu;
use super::timers::Timers;
use crate::client::{Clocks, HotClient, Item};
use crate::error::ClientError;

/// The waker's token; subscriptions use their slot number.
const WAKE: Token = Token(usize::MAX);

/// Readiness events taken per `epoll_wait`.
const EVENTS: usize = 1024;

/// Readiness events driven between two looks at the timers. Why: when 10,000 long polls are
/// answered at once, a full batch of [`EVENTS`] takes the loop over 15 ms to drive (each
/// answer is read and the next poll written), and a timer due meanwhile (a short poll's next
/// request, the lag probe) waited for all of it. A chunk takes about a millisecond; looking at
/// the timers costs two clock readings.
const CHUNK: usize = 64;

/// How early a timer may fire, at most: the loop wakes for its earliest timer, and every poll
/// due within the slack after it goes out with it. Their answers come back together, so one
/// wake-up of the loop (and of the server) serves many instead of one each: at 10,000 polls a
/// second, a slack of 5 ms took the loop from 5,200 wake-ups a second to 850, its CPU from
/// 26.6 to 13.2 µs per poll, and the server's from 21.3 to 16.5 µs.
/// The slack is a hundredth of the poll interval, capped here, and at least a millisecond (the
/// resolution of `epoll_wait`'s timeout anyway): a poll 1% early changes neither its interval's
/// rate nor a subscriber's mean latency (half the interval) measurably.
const MAX_TIMER_SLACK: Duration = Duration::from_millis(5);

/// The slack for polls every `interval`.
fn timer_slack(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), MAX_TIMER_SLACK)
}

/// The loop's lag probe: a timer every [`LAG_PROBE`] while the loop has work.
///
/// Why not always: an idle loop has nothing to be late with (every read is timed by the
/// kernel's arrival stamp), and each probe of an idle loop is a wake-up of its core, tens of µs
/// on a virtual CPU. At 10,000 subscribers and one event a second the loop is busy for a tenth
/// of each second, and 100 probes a second cost it a fifth of what the deliveries did. So the
/// probe stops once a poll finds nothing to do and no timer waits (a polling loop always has
/// one), and starts again with the next readiness.
struct Probe {
    next: Instant,
    on: bool,
}

impl Probe {
    fn after_poll(&mut self, idle: bool) {
        if idle {
            self.on = false;
        } else if !self.on {
            self.on = true;
            self.next = Instant::now() + LAG_PROBE;
        }
    }
}

/// A subscription in the loop.
#[derive(Debug)]
pub(super) struct HotSub {
    pub client: HotClient,
    pub socket: TcpStream,
    pub state: SubState,
}

/// A subscription in its slot, with the time it asked to be driven at (`None`: no timer).
struct Slot {
    sub: HotSub,
    timer: Option<Instant>,
}

/// A subscription the loop gives back to a task.
#[derive(Debug)]
pub(super) struct Returned {
    pub sub: HotSub,
    /// What the client yielded that the task must account first (an error, so far).
    pub pending: Option<Result<Item, ClientError>>,
}

/// What the worker tells the loop.
enum ToLoop {
    Add(Box<HotSub>),
    /// The measurement window opened: mark the CPU, start probing the lag.
    WindowOpen,
    Stop,
}

/// What the loop hands back when it stops.
pub(super) struct LoopTotals {
    pub recorder: Recorder,
    /// The loop thread's CPU from the window's opening to the stop, ns.
    pub window_cpu_ns: u64,
}

/// The worker's handle on its readiness loop.
pub(super) struct HotLoop {
    tx: mpsc::Sender<ToLoop>,
    waker: Arc<Waker>,
    thread: Option<std::thread::JoinHandle<LoopTotals>>,
    /// First deliveries of window events, for the worker's live counts.
    pub delivered: Arc<AtomicU64>,
}

impl HotLoop {
    /// Starts the loop's thread. Subscriptions it gives back arrive on `back`; interval
    /// histograms go to the collector on `report`.
    pub(super) fn spawn(
        plan: WorkerPlan,
        report: mpsc::Sender<WorkerMsg>,
        back: tokio::sync::mpsc::UnboundedSender<Returned>,
    ) -> io::Result<HotLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let (tx, rx) = mpsc::channel();
        let delivered = Arc::new(AtomicU64::new(0));
        let slack = timer_slack(plan.client.poll_interval);
        let state = LoopState {
            poll,
            rx,
            plan,
            report,
            back,
            subs: Vec::new(),
            timers: Timers::default(),
            slack,
            free: Vec::new(),
            rec: Recorder::default(),
            delivered: delivered.clone(),
            window_open: false,
            cpu_open: None,
        };
        let thread = std::thread::Builder::new()
            .name(format!("pushbench-loop-{}", state.plan.index))
            .spawn(move || state.run())?;
        Ok(HotLoop {
            tx,
            waker,
            thread: Some(thread),
            delivered,
        })
    }

    /// Hands a subscription in its steady state to the loop. If the loop is gone (stopping),
    /// the subscription is dropped with it, as a task's would be.
    pub(super) fn add(&self, sub: HotSub) {
        self.send(ToLoop::Add(Box::new(sub)));
    }

    /// The window opened now.
    pub(super) fn window_open(&self) {
        self.send(ToLoop::WindowOpen);
    }

    fn send(&self, msg: ToLoop) {
        if self.tx.send(msg).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stops the loop (its subscriptions' sockets close) and returns its totals.
    pub(super) fn stop(&mut self) -> Option<LoopTotals> {
        self.send(ToLoop::Stop);
        self.thread.take()?.join().ok()
    }
}

struct LoopState {
    poll: Poll,
    rx: mpsc::Receiver<ToLoop>,
    plan: WorkerPlan,
    report: mpsc::Sender<WorkerMsg>,
    back: tokio::sync::mpsc::UnboundedSender<Returned>,
    /// Subscriptions by slot (a slot's number is its token).
    subs: Vec<Option<Slot>>,
    /// Timers by due time. An entry whose slot no longer wants that time (the slot was driven
    /// earlier, or reused) is skipped when it comes up.
    timers: Timers,
    /// How early a timer may fire ([`timer_slack`]).
    slack: Duration,
    free: Vec<usize>,
    rec: Recorder,
    delivered: Arc<AtomicU64>,
    window_open: bool,
    cpu_open: Option<Duration>,
}

/// What reading and decoding one subscription came to.
enum Drive {
    /// Read until the socket had no more: wait for its next readiness.
    Wait,
    /// Give it back to a task, with an item to account first if any.
    GiveBack(Option<Result<Item, ClientError>>),
    /// The subscriber is done (accounted as lost); drop it.
    Drop,
}

impl LoopState {
    fn run(mut self) -> LoopTotals {
        let mut events = Events::with_capacity(EVENTS);
        let mut probe = Probe {
            next: Instant::now() + LAG_PROBE,
            on: true,
        };
        let mut next_interval = Instant::now() + INTERVAL;
        let mut stopping = false;
        let mut gather = false;
        while !stopping {
            // What the loop must wake for: its next timer, its lag probe while it has work,
            // and the next interval histogram. The timer is woken for on time, not early by
            // the slack: it then takes along every timer due within the slack after it, and
            // the next wake-up is a slack later. Woken early by the slack, the loop had found
            // its next timer due again right away and sent about one millisecond's polls per
            // wake-up (`epoll_wait`'s resolution), 5,200 wake-ups a second at 10,000 polls.
            let mut wake = next_interval;
            if probe.on {
                wake = wake.min(probe.next);
            }
            if let Some(at) = self.timers.next() {
                wake = wake.min(at);
            }
            if gather {
                // Never past what the loop must wake for.
                self.gather(wake);
            }
            let timeout = wake.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!("the readiness loop's poll failed: {e}");
                break;
            }
            // Idle: nothing was ready, and no poll waits on a timer (a loop that sends polls
            // is never idle, and its probe is what times them: `load/saturation.rs`).
            probe.after_poll(events.is_empty() && self.timers.next().is_none());
            // One reading of the clocks per chunk of the batch: it decides whether a poll is
            // due (an early reading only makes one come a chunk later), and it converts the
            // kernel's arrival stamps of the chunk's reads (exact whenever it was read).
            let mut clocks = Clocks::now();
            gather = false;
            for (i, event) in events.iter().enumerate() {
                if i > 0 && i % CHUNK == 0 {
                    clocks = self.tend(&mut probe, &mut next_interval);
                }
                if event.token() == WAKE {
                    stopping |= self.take_messages(&clocks);
                } else {
                    let ready = if event.is_read_closed() || event.is_error() {
                        Ready::Closed
                    } else {
                        Ready::Readable
                    };
                    self.drive_slot(event.token().0, &clocks, ready);
                    gather = true;
                }
            }
            self.tend(&mut probe, &mut next_interval);
        }
        let window_cpu_ns = match (self.cpu_open, thread_cpu()) {
            (Some(open), Some(stop)) => stop.saturating_sub(open).as_nanos() as u64,
            _ => 0,
        };
        LoopTotals {
            recorder: self.rec,
            window_cpu_ns,
        }
    }

    /// Fires the timers due now, probes the loop's lag and sends the interval histogram when
    /// their times came; returns the clocks it read.
    fn tend(&mut self, probe: &mut Probe, next_interval: &mut Instant) -> Clocks {
        let clocks = Clocks::now();
        let now = clocks.mono();
        self.fire_timers(&clocks);
        if probe.on && now >= probe.next {
            // How late the loop came back to its own timer: at most one chunk of a batch of
            // thousands of deliveries, or a stall of the whole thread.
            if self.window_open {
                self.rec.loop_lag.saturating_record(lag_us(now, probe.next));
            }
            probe.next = now + LAG_PROBE;
        }
        if now >= *next_interval {
            let histogram = self.rec.take_interval();
            let worker = self.plan.index;
            let _ = self.report.send(WorkerMsg::Interval { worker, histogram });
            *next_interval += INTERVAL;
        }
        clocks
    }

    /// After a batch of reads, lets the next deliveries gather for up to the coalescing
    /// interval (never past `wake`, the loop's next timer is due) so that one wake-up reads
    /// many.
    /// Why: a delivery that finds the loop asleep wakes its core, and on a virtual CPU that
    /// wake-up cost as much as the rest of the delivery; the server's writes come one by one,
    /// so without this pause the loop woke once per delivery. Arrival stamps
    /// ([`crate::client::arrival`]) keep the pause out of every latency.
    fn gather(&self, wake: Instant) {
        let pause = self
            .plan
            .coalesce
            .min(wake.saturating_duration_since(Instant::now()));
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }

    /// Drives every subscription whose timer is due by `now` (give or take the slack).
    fn fire_timers(&mut self, clocks: &Clocks) {
        let now = clocks.mono();
        let by = now + self.slack;
        while let Some((at, slot)) = self.timers.pop_due(by) {
            let current = self.subs.get_mut(slot).and_then(Option::as_mut);
            if let Some(entry) = current.filter(|e| e.timer == Some(at)) {
                entry.timer = None;
                // A poll taken along early goes out as if at its own due time, so its schedule
                // moves on from that time; one that came due before now goes out now, and
                // its client judges whether that was late (`MISSED` in `client/poll.rs`).
                // Driven as if at `by`, the earliest poll of each batch looked over 5 ms late
                // and restarted its schedule from `by`.
                let clocks_due = clocks.at(at.max(now));
                self.drive_slot(slot, &clocks_due, Ready::Timer);
            }
        }
    }

    /// Takes what the worker sent; true on a stop.
    fn take_messages(&mut self, clocks: &Clocks) -> bool {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                ToLoop::Add(sub) => self.add(*sub, clocks),
                ToLoop::WindowOpen => {
                    self.window_open = true;
                    self.cpu_open = thread_cpu();
                }
                ToLoop::Stop => return true,
            }
        }
        false
    }

    fn add(&mut self, sub: HotSub, clocks: &Clocks) {
        let slot = self.free.pop().unwrap_or(self.subs.len());
        let fd = sub.socket.as_raw_fd();
        let registered =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), Token(slot), Interest::READABLE);
        if let Err(e) = registered {
            // Too rare to plan for (the registry has room for every socket this process
            // may open); the task reads the subscription instead.
            tracing::debug!("could not register a socket with the readiness loop: {e}");
            self.give_back(sub, None);
            return;
        }
        let entry = Some(Slot { sub, timer: None });
        if slot == self.subs.len() {
            self.subs.push(entry);
        } else {
            self.subs[slot] = entry;
        }
        // Bytes may have arrived before the registration; the registration reports them,
        // but anything already in the client's buffer is decoded now, and a poll due is sent.
        self.drive_slot(slot, clocks, Ready::Readable);
    }

    /// Drives one subscription, as `ready` says its socket is.
    fn drive_slot(&mut self, slot: usize, clocks: &Clocks, ready: Ready) {
        let now = clocks.mono();
        let Some(entry) = self.subs.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let outcome = match drive(
            &mut entry.sub,
            clocks,
            ready,
            &self.plan,
            &mut self.rec,
            &self.delivered,
        ) {
            Drive::Wait => match entry.sub.client.wake_at() {
                None => return,
                // Only a long poll's deadline can be due here (a due poll was just sent): a
                // task takes over, and times the answer out.
                Some(at) if at <= now => Drive::GiveBack(None),
                Some(at) => {
                    if entry.timer != Some(at) {
                        entry.timer = Some(at);
                        self.timers.push(at, slot);
                    }
                    return;
                }
            },
            other => other,
        };
        let pending = match outcome {
            Drive::Wait => return,
            Drive::GiveBack(pending) => Some(pending),
            Drive::Drop => None,
        };
        let Some(Slot { sub, .. }) = self.subs[slot].take() else {
            return;
        };
        self.free.push(slot);
        let fd = sub.socket.as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        if let Some(pending) = pending {
            self.give_back(sub, pending);
        }
    }

    fn give_back(&self, sub: HotSub, pending: Option<Result<Item, ClientError>>) {
        // Unbounded, yet bounded by the worker's subscriber count: each subscription is in
        // exactly one place, the loop, this channel or a task.
        let _ = self.back.send(Returned { sub, pending });
    }
}

/// What woke a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// Its socket reported bytes (or may hold some).
    Readable,
    /// Its socket reported bytes and the peer's close (or an error): read to the end, whatever
    /// a short read suggests.
    Closed,
    /// Only its timer came due.
    Timer,
}

/// Writes what the client owes (a poll due by the batch's time, a WebSocket reply), then
/// decodes and reads until the socket has nothing more.
fn drive(
    sub: &mut HotSub,
    clocks: &Clocks,
    ready: Ready,
    plan: &WorkerPlan,
    rec: &mut Recorder,
    delivered: &AtomicU64,
) -> Drive {
    let now = clocks.mono();
    // A socket that reported nothing has nothing to read: it was read until drained last time,
    // and edge-triggered readiness reports every arrival since. So a poll sent on its timer
    // does not try to read its answer at once, which only ever said `WouldBlock` (a system
    // call per request for nothing); the answer's arrival drives the subscription again.
    let mut drained = ready == Ready::Timer;
    // A short read usually means the socket is drained, and edge-triggered readiness reports
    // the next arrival. Not when the close came with the last bytes: one readiness event
    // reported both, the read that took the bytes stops short of the end, and no event ever
    // comes again. Trusting that short read left a subscriber whose server cut it in CLOSE_WAIT
    // for the rest of the run, every later event counted lost (found by `[faults]`' mass drop,
    // which cuts connections right behind an event).
    let trust_short_reads = ready != Ready::Closed;
    loop {
        if sub.client.wants_write(now) {
            if let Err(e) = sub.client.write_to(&sub.socket, now) {
                // A full socket buffer needs waiting for, which a task does; any other error
                // it meets again on its own write.
                tracing::trace!("readiness loop write: {e}");
                return Drive::GiveBack(None);
            }
        }
        match sub.client.buffered() {
            Some(Err(e)) => return Drive::GiveBack(Some(Err(e))),
            Some(item) => match account(plan, rec, &mut sub.state, item, None) {
                Accounted::First => {
                    delivered.fetch_add(1, Ordering::Relaxed);
                }
                Accounted::Noted => {}
                Accounted::Stop => return Drive::Drop,
            },
            None if !sub.client.connected() => return Drive::GiveBack(None),
            None if sub.client.wants_write(now) => {}
            None if drained => return Drive::Wait,
            None => match sub.client.read_from(&sub.socket, clocks) {
                // The end of the stream, or an error: the task's own read meets it again and
                // handles it as the client always does (a reconnect, mostly).
                Ok((0, _)) => return Drive::GiveBack(None),
                Ok((_, all)) => drained = all && trust_short_reads,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drive::Wait,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Drive::GiveBack(None),
            },
        }
    }
}

//! A worker: one OS thread with its own single-threaded runtime, running a share of the
//! subscribers. Its clients record into the worker's [`Recorder`] without locks or messages;
//! the collector gets live counts four times a second, an interval histogram once a second and
//! the totals at the end, as [`WorkerMsg`]s, which serialise so a worker may be another process.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc as tmpsc, watch};
use tokio::task::LocalSet;

use super::account::{account, lag_us, Accounted, SubState};
use super::hot::{HotLoop, HotSub, Returned};
use super::messages::LAG_PROBE;
pub use super::messages::{Control, WorkerMsg, WorkerPlan, INTERVAL};
use super::recorder::Recorder;
use super::sampler::thread_cpu;
use crate::client::{Client, HotClient, Item, Subscription};
use crate::counters::{Counters, CountersSnapshot};
use crate::error::ClientError;

/// How often a worker reports its live counts.
const PROGRESS: Duration = Duration::from_millis(250);

/// How long a worker's devices may take to unregister from the gateway at the end: with the
/// 2 s the tasks get to finish, well inside the collector's 10 s wait for the worker's totals.
const UNREGISTER_TIMEOUT: Duration = Duration::from_secs(3);

/// Starts a worker thread. It runs until told to stop, then reports [`WorkerMsg::Done`].
pub fn spawn(
    plan: WorkerPlan,
    tx: mpsc::Sender<WorkerMsg>,
    control: tmpsc::UnboundedReceiver<Control>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("pushbench-worker-{}", plan.index))
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a current-thread runtime builds");
            LocalSet::new().block_on(&runtime, run(plan, tx, control));
        })
}

/// What the worker's tasks share, on its one thread.
struct Shared {
    plan: WorkerPlan,
    rec: RefCell<Recorder>,
    counters: Arc<Counters>,
    delivered: Cell<u64>,
    connected: Cell<u64>,
    /// When the window opened, once it has: loop lag counts only from then, so the connect
    /// burst does not read as saturation.
    window_open: Cell<Option<Instant>>,
    /// When the devices chosen to go offline are away, once the collector has said.
    away: watch::Sender<Option<(Instant, Instant)>>,
    /// Against the gateway: the tokens of the devices this worker's clients registered, to
    /// unregister them at the end (devices the run registered, the run removes).
    devices: RefCell<Vec<String>>,
    /// The subscriptions' tasks, one per connected client.
    subscribers: RefCell<tokio::task::JoinSet<()>>,
    /// This thread's CPU when the window opened, and at the stop.
    cpu_marks: Cell<(Option<Duration>, Option<Duration>)>,
    /// The readiness loop, when this worker's subscriptions can use one.
    hot: RefCell<Option<HotLoop>>,
}

async fn run(
    plan: WorkerPlan,
    tx: mpsc::Sender<WorkerMsg>,
    mut control: tmpsc::UnboundedReceiver<Control>,
) {
    let worker = plan.index;
    let shared = Rc::new(Shared {
        plan,
        rec: RefCell::new(Recorder::default()),
        counters: Counters::new_shared(),
        delivered: Cell::new(0),
        connected: Cell::new(0),
        window_open: Cell::new(None),
        away: watch::Sender::new(None),
        devices: RefCell::new(Vec::new()),
        subscribers: RefCell::new(tokio::task::JoinSet::new()),
        cpu_marks: Cell::new((None, None)),
        hot: RefCell::new(None),
    });
    let (back_tx, mut back) = tmpsc::unbounded_channel();
    if shared.plan.hot && hot_transport(&shared.plan) {
        match HotLoop::spawn(shared.plan.clone(), tx.clone(), back_tx) {
            Ok(hot) => *shared.hot.borrow_mut() = Some(hot),
            Err(e) => tracing::warn!("no readiness loop ({e}); every subscriber is a task"),
        }
    }
    let (stop_tx, stop) = watch::channel(false);
    let window_marks: Rc<Cell<Option<CountersSnapshot>>> = Rc::new(Cell::new(None));
    let mut tasks = tokio::task::JoinSet::new();

    // Control: window marks, and the stop (also when the collector is gone).
    {
        let (shared, marks) = (shared.clone(), window_marks.clone());
        tasks.spawn_local(async move {
            while let Some(c) = control.recv().await {
                match c {
                    Control::Window(at) => {
                        let (shared, marks) = (shared.clone(), marks.clone());
                        tokio::task::spawn_local(async move {
                            tokio::time::sleep_until(at.into()).await;
                            marks.set(Some(shared.counters.snapshot()));
                            shared.window_open.set(Some(at));
                            shared.cpu_marks.set((thread_cpu(), None));
                            if let Some(hot) = shared.hot.borrow().as_ref() {
                                hot.window_open();
                            }
                        });
                    }
                    Control::Offline { from, until } => {
                        shared.away.send_replace(Some((from, until)));
                    }
                    Control::Stop => break,
                }
            }
            let (open, _) = shared.cpu_marks.get();
            shared.cpu_marks.set((open, thread_cpu()));
            let _ = stop_tx.send(true);
        });
    }

    // Health and hand-offs: the loop-lag probe, live counts, interval histograms.
    {
        let (shared, tx, mut stop) = (shared.clone(), tx.clone(), stop.clone());
        tasks.spawn_local(async move {
            let mut next_probe = Instant::now() + LAG_PROBE;
            let mut next_progress = Instant::now() + PROGRESS;
            let mut next_interval = Instant::now() + INTERVAL;
            loop {
                // While every subscriber is with the readiness loop, this runtime has nothing
                // that could lag: the task sleeps until its next report instead of probing.
                // Why: each probe of an idle runtime is a wake-up of its core, tens of µs on a
                // virtual CPU, and 100 of them a second were a tenth of what the load
                // generator spent at 10,000 subscribers.
                let probing = !shared.subscribers.borrow().is_empty();
                let wake = match probing {
                    true => next_probe,
                    false => next_progress.min(next_interval),
                };
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    () = tokio::time::sleep_until(wake.into()) => {}
                }
                let now = Instant::now();
                if probing && shared.window_open.get().is_some_and(|at| now >= at) {
                    shared
                        .rec
                        .borrow_mut()
                        .loop_lag
                        .saturating_record(lag_us(now, next_probe));
                }
                next_probe = now + LAG_PROBE;
                // A subscription handed to the readiness loop ends its task; reap those, or
                // each would keep its task's memory until the end of the run.
                while shared.subscribers.borrow_mut().try_join_next().is_some() {}
                if now >= next_progress {
                    let _ = tx.send(WorkerMsg::Progress {
                        worker,
                        delivered: shared.delivered.get() + hot_delivered(&shared),
                        connected: shared.connected.get(),
                        reconnects: shared.counters.snapshot().reconnects,
                    });
                    next_progress += PROGRESS;
                }
                if now >= next_interval {
                    let histogram = shared.rec.borrow_mut().take_interval();
                    let _ = tx.send(WorkerMsg::Interval { worker, histogram });
                    next_interval += INTERVAL;
                }
            }
        });
    }

    // Subscriptions the readiness loop gives back go on as tasks.
    {
        let (shared, stop) = (shared.clone(), stop.clone());
        tasks.spawn_local(async move {
            while let Some(returned) = back.recv().await {
                spawn_returned(returned, &shared, stop.clone());
            }
        });
    }

    // Open subscriptions at the ramp rate; each runs as its own task until stopped.
    let clients = shared.plan.clients;
    let pending = Rc::new(Cell::new(clients));
    let started = Instant::now();
    let mut ramp_stop = stop.clone();
    for i in 0..clients {
        let at = started + Duration::from_secs_f64(i as f64 / shared.plan.ramp);
        tokio::select! {
            _ = ramp_stop.wait_for(|s| *s) => break,
            () = tokio::time::sleep_until(at.into()) => {}
        }
        let (shared, tx, pending, stop) =
            (shared.clone(), tx.clone(), pending.clone(), stop.clone());
        let gateway = shared.plan.target.gateway();
        let mut config = shared.plan.client.clone();
        config.device_token =
            gateway.and_then(|g| g.tokens.get(shared.plan.first_device + i).cloned());
        let registered_here = gateway.is_some() && config.device_token.is_none();
        let goes_offline = gateway
            .and_then(|g| g.offline)
            .is_some_and(|o| o.includes(i));
        tasks.spawn_local(async move {
            let t0 = Instant::now();
            let client =
                Client::connect(&shared.plan.target, config, shared.counters.clone()).await;
            {
                let mut r = shared.rec.borrow_mut();
                match &client {
                    Ok(_) => {
                        r.connect
                            .saturating_record((t0.elapsed().as_micros() as u64).max(1));
                        r.clients_connected += 1;
                        shared.connected.set(shared.connected.get() + 1);
                    }
                    Err(err) => {
                        r.clients_failed += 1;
                        r.error(err);
                    }
                }
            }
            pending.set(pending.get() - 1);
            if pending.get() == 0 {
                let connected = shared.connected.get();
                let _ = tx.send(WorkerMsg::Subscribed { worker, connected });
            }
            if let Ok(client) = client {
                if let Some(token) = client.device_token().filter(|_| registered_here) {
                    shared.devices.borrow_mut().push(token.to_owned());
                }
                // This task, sized for a connect, ends here; the subscription goes on in a
                // task sized for its own transport.
                spawn_subscriber(client, &shared, stop, goes_offline);
            }
        });
    }
    if clients == 0 {
        let _ = tx.send(WorkerMsg::Subscribed {
            worker,
            connected: 0,
        });
    }
    let _ = ramp_stop.wait_for(|s| *s).await;
    // The readiness loop stops with the tasks, so its traffic and CPU end with the window (a
    // poll it sent later would be counted in the window), and the channel it gives
    // subscriptions back on closes.
    let hot = shared.hot.borrow_mut().as_mut().and_then(HotLoop::stop);
    // Every task watches `stop`; give them a moment to finish, then drop the rest.
    let mut subscribers = shared.subscribers.take();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
        while subscribers.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    subscribers.abort_all();
    let total = shared.counters.snapshot();
    // Devices leave the gateway, so the next run against it starts clean (uncounted traffic,
    // after the counters were read).
    let devices = shared.devices.take();
    if !devices.is_empty() {
        let left = tokio::time::timeout(
            UNREGISTER_TIMEOUT,
            crate::gateway::unregister_devices(&shared.plan.target, &devices),
        )
        .await;
        if !matches!(left, Ok(Ok(n)) if n == devices.len()) {
            tracing::warn!("not every device of worker {worker} could unregister: {left:?}");
        }
    }
    let window = total.since(&window_marks.get().unwrap_or(total));
    let mut recorder = Box::new(shared.rec.borrow().clone());
    let mut window_cpu_ns = match shared.cpu_marks.get() {
        (Some(open), Some(stop)) => stop.saturating_sub(open).as_nanos() as u64,
        _ => 0,
    };
    if let Some(hot) = hot {
        recorder.merge(&hot.recorder);
        window_cpu_ns += hot.window_cpu_ns;
    }
    let _ = tx.send(WorkerMsg::Done {
        worker,
        recorder,
        window,
        total,
        window_cpu_ns,
    });
}

/// Where a device that goes offline on schedule stands.
enum Away {
    /// Not one of those devices, or already back.
    Never,
    /// Waiting for the collector to say when.
    Unknown(watch::Receiver<Option<(Instant, Instant)>>),
    /// Will go at `.0`, come back at `.1`.
    Due(Instant, Instant),
    /// Gone until this instant.
    Gone(Instant),
}

/// What [`Away::turn`] says to do.
enum Turn {
    Plan(Instant, Instant),
    GoOffline,
    GoOnline,
}

impl Away {
    /// Waits for the next change of state (forever, for a device that stays).
    async fn turn(&mut self) -> Turn {
        match self {
            Away::Never => std::future::pending().await,
            Away::Unknown(rx) => match rx.wait_for(Option::is_some).await.map(|w| *w) {
                Ok(Some((from, until))) => Turn::Plan(from, until),
                _ => std::future::pending().await,
            },
            Away::Due(from, _) => {
                tokio::time::sleep_until((*from).into()).await;
                Turn::GoOffline
            }
            Away::Gone(until) => {
                tokio::time::sleep_until((*until).into()).await;
                Turn::GoOnline
            }
        }
    }
}

/// Runs `client`'s subscription as a task of its own concrete type (see [`Subscription`]).
fn spawn_subscriber(
    client: Client,
    shared: &Rc<Shared>,
    stop: watch::Receiver<bool>,
    goes_offline: bool,
) {
    let mut set = shared.subscribers.borrow_mut();
    let sh = shared.clone();
    let state = SubState::new(&shared.plan);
    match client {
        Client::Poll(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
        Client::LongPoll(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
        Client::Stream(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
        Client::Sse(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
        Client::Ws(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
        Client::Gateway(c) => set.spawn_local(subscriber(c, sh, stop, goes_offline, state, None)),
    };
}

/// Runs a subscription the readiness loop gave back as a task again, its socket back on this
/// thread's runtime.
fn spawn_returned(returned: Returned, shared: &Rc<Shared>, stop: watch::Receiver<bool>) {
    let Returned { sub, pending } = returned;
    let from_loop = Some(pending);
    let HotSub {
        mut client,
        socket,
        state,
    } = sub;
    if let Err(e) = client.attach(socket) {
        // The connection is left without a socket; the client's next read reconnects.
        tracing::debug!("could not put a socket back on the runtime: {e}");
    }
    let mut set = shared.subscribers.borrow_mut();
    let sh = shared.clone();
    match client {
        HotClient::Stream(c) => set.spawn_local(subscriber(c, sh, stop, false, state, from_loop)),
        HotClient::Sse(c) => set.spawn_local(subscriber(c, sh, stop, false, state, from_loop)),
        HotClient::Ws(c) => set.spawn_local(subscriber(c, sh, stop, false, state, from_loop)),
        HotClient::Poll(c) => set.spawn_local(subscriber(c, sh, stop, false, state, from_loop)),
        HotClient::LongPoll(c) => set.spawn_local(subscriber(c, sh, stop, false, state, from_loop)),
    };
}

/// Whether this worker's subscriptions can go to a readiness loop: every subscriber of a push
/// server (a gateway device goes offline and acknowledges, so it stays a task).
fn hot_transport(plan: &WorkerPlan) -> bool {
    plan.target.gateway().is_none()
}

fn hot_delivered(shared: &Shared) -> u64 {
    shared.hot.borrow().as_ref().map_or(0, |h| {
        h.delivered.load(std::sync::atomic::Ordering::Relaxed)
    })
}

/// Reads one subscription until stopped, accounting for every item. `from_loop` is `Some` for a
/// subscription the readiness loop gave back, with the item it left to account first, if any. A device that `goes_offline` drops its
/// connection for the collector's offline period, then returns. A subscription that can go to
/// the readiness loop goes there whenever it is connected and has just yielded an item.
async fn subscriber<C: Subscription>(
    mut client: C,
    shared: Rc<Shared>,
    mut stop: watch::Receiver<bool>,
    goes_offline: bool,
    mut state: SubState,
    from_loop: Option<Option<Result<Item, ClientError>>>,
) {
    let plan = &shared.plan;
    let mut away = if goes_offline {
        Away::Unknown(shared.away.subscribe())
    } else {
        Away::Never
    };
    // The offline period in Unix ns, once known: deliveries of events due then were held.
    let mut held: Option<(u64, u64)> = None;
    // One stop future for the whole subscription: built inside the loop, it would register with
    // and leave the stop channel's waiter list (a lock each way) once per delivery.
    let stopped = stop.wait_for(|s| *s);
    tokio::pin!(stopped);
    // Given back by the loop, a subscription first gets one item of its own: going straight
    // back could only meet the same condition (a write that blocks, a lost connection) again,
    // and the two would hand it back and forth without end.
    let mut may_go_hot = from_loop.is_none();
    let mut pending = from_loop.flatten();
    loop {
        if may_go_hot {
            if let Some(hot) = shared.hot.borrow().as_ref() {
                match client.into_hot() {
                    Ok((client, socket)) => {
                        hot.add(HotSub {
                            client,
                            socket,
                            state,
                        });
                        return;
                    }
                    Err(c) => client = c,
                }
            }
        }
        let offline = matches!(away, Away::Gone(_));
        let item = match pending.take() {
            Some(item) => item,
            None => tokio::select! {
                biased;
                _ = &mut stopped => return,
                turn = away.turn() => {
                    match turn {
                        Turn::Plan(from, until) => {
                            held = Some((plan.clock.unix_ns(from), plan.clock.unix_ns(until)));
                            away = Away::Due(from, until);
                        }
                        Turn::GoOffline => {
                            let until = match away {
                                Away::Due(_, until) => until,
                                _ => Instant::now(),
                            };
                            let _ = client.go_offline().await;
                            shared.rec.borrow_mut().offline_clients += 1;
                            away = Away::Gone(until);
                        }
                        Turn::GoOnline => {
                            away = Away::Never;
                            if let Err(err) = client.go_online().await {
                                let mut r = shared.rec.borrow_mut();
                                r.error(&err);
                                r.clients_lost += 1;
                                return;
                            }
                        }
                    }
                    continue;
                }
                item = client.next(), if !offline => item,
            },
        };
        may_go_hot = item.is_ok();
        let accounted = account(plan, &mut shared.rec.borrow_mut(), &mut state, item, held);
        match accounted {
            Accounted::First => shared.delivered.set(shared.delivered.get() + 1),
            Accounted::Noted => {}
            Accounted::Stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{SseClient, StreamClient, WsClient};

    /// The size of the future `f` returns, without making one.
    fn future_size<A, B, C, D, Fut>(_f: impl Fn(A, B, C, D) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// Every long-lived subscriber is one task of this size, so at 10,000 subscribers each
    /// kilobyte here is 10 MB of the instrument's memory. Through the `Client` enum, with
    /// reconnects inline, it was about 5 KB; the budget leaves room for compiler changes.
    #[test]
    fn streaming_subscriber_tasks_stay_small() {
        type Stop = watch::Receiver<bool>;
        let sizes = [
            future_size(|c: WsClient, s: Rc<Shared>, st: Stop, g| {
                let state = SubState::new(&s.plan);
                subscriber(c, s, st, g, state, None)
            }),
            future_size(|c: SseClient, s: Rc<Shared>, st: Stop, g| {
                let state = SubState::new(&s.plan);
                subscriber(c, s, st, g, state, None)
            }),
            future_size(|c: StreamClient, s: Rc<Shared>, st: Stop, g| {
                let state = SubState::new(&s.plan);
                subscriber(c, s, st, g, state, None)
            }),
        ];
        for size in sizes {
            assert!(size <= 2560, "a subscriber task of {size} bytes: {sizes:?}");
        }
    }
}

//! Fan-out from the publishing side: one task per topic writes each burst of events to every
//! caught-up subscriber's socket itself, instead of waking one task per subscriber.
//!
//! Why: at 10,000 SSE subscribers, perf put about 70% of the server's CPU in the kernel's
//! `writev` and loopback path, which any server pays, and most of the rest in waking,
//! scheduling and polling one task per subscriber per event. Here a delivery costs a lock nobody
//! else holds, a cursor check and the `writev`: the shape of a plain `write(2)` loop.
//!
//! A subscriber is *direct* while it is caught up and its socket has taken everything. Then the
//! topic's fan-out task ([`run`]) writes its events (one chunk, one `writev`, per subscriber per
//! burst) and moves its cursor. The subscriber's own task sleeps meanwhile, and wakes only for
//! input from its peer, the end of the server, or a hand-back: when its
//! socket was full (the rest of the chunk is handed over with it), or when the fan-out itself
//! fell behind. Back in its own hands, a subscriber reads the ring itself as before, so the
//! slow-subscriber policy, gap signals and the write timeout apply unchanged, and it goes direct
//! again once it has caught up and flushed.
//!
//! The keep-alives are the topic's too: when the topic has published nothing for the keep-alive
//! interval, its fan-out writes the framing's keep-alive (an SSE comment, a blank NDJSON line, a
//! WebSocket ping) to every direct subscriber, and again each interval while it stays idle.
//! Why not a timer per subscriber, as before: each one woke its task every interval whether the
//! stream was idle or not, and at 10,000 subscribers with the default 15 s that was 667 task
//! wake-ups a second on the server, and as many reads on every client, for streams that were
//! carrying an event a second anyway. A subscriber in its own task's hands is never idle: it is
//! catching up, writing what its socket did not take, or answering its peer.
//!
//! Every change of hands happens under the subscriber's own lock ([`Entry`]), so the fan-out
//! and the subscriber never both write to one socket, and a subscriber goes direct only at the
//! ring's newest id: the fan-out's next burst starts at or before the id after it.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::chunked::{self, BURST};
use crate::event::Event;
use crate::framing::Framing;
use crate::hub::{Hub, Item, Subscription};
use crate::stats::Stats;

/// The fan-out tasks of one server, one per topic that has had a lean subscriber.
#[derive(Debug)]
pub(crate) struct Fanout {
    hub: Hub,
    /// How long a topic may publish nothing before its direct subscribers get a keep-alive.
    keepalive: Duration,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    topics: Mutex<HashMap<Box<str>, Arc<Registry>>>,
}

/// The subscribers of one topic that the fan-out may write to.
#[derive(Debug, Default)]
struct Registry {
    entries: Mutex<Vec<Arc<Entry>>>,
}

/// One subscriber, as the fan-out sees it: its socket, its framing, and who writes to it.
#[derive(Debug)]
pub(crate) struct Entry {
    socket: TcpStream,
    framing: Framing,
    state: Mutex<State>,
    /// Wakes the subscriber's task when the fan-out hands it back.
    handback: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The fan-out writes to this subscriber; its task does not.
    direct: bool,
    /// Id of the last event written to the socket or kept in `pending`.
    cursor: u64,
    /// What the socket did not take, handed back with the subscriber.
    pending: Vec<u8>,
}

/// A subscriber's place in its topic's registry, removed when dropped.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    entry: Arc<Entry>,
}

impl Fanout {
    pub(crate) fn new(
        hub: Hub,
        keepalive: Duration,
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Fanout {
        Fanout {
            hub,
            keepalive,
            shutdown,
            tasks,
            topics: Mutex::new(HashMap::new()),
        }
    }

    /// Puts `socket` under `topic`'s fan-out (starting the topic's task if it has none), in its
    /// own task's hands until [`Entry::go_direct`].
    pub(crate) fn register(
        &self,
        topic: &str,
        socket: TcpStream,
        framing: Framing,
    ) -> Registration {
        let registry = {
            let mut topics = lock(&self.topics);
            match topics.get(topic) {
                Some(r) => r.clone(),
                None => {
                    let registry = Arc::new(Registry::default());
                    topics.insert(topic.into(), registry.clone());
                    self.tasks.spawn(run(
                        self.hub.clone(),
                        topic.to_owned(),
                        registry.clone(),
                        self.keepalive,
                        self.shutdown.clone(),
                    ));
                    registry
                }
            }
        };
        let entry = Arc::new(Entry {
            socket,
            framing,
            state: Mutex::new(State::default()),
            handback: Notify::new(),
        });
        lock(&registry.entries).push(entry.clone());
        Registration { registry, entry }
    }
}

impl Registration {
    pub(crate) fn entry(&self) -> &Entry {
        &self.entry
    }

    /// The entry, for a task that hands its socket to a library (a WebSocket's) and still
    /// needs to change hands with the fan-out.
    pub(crate) fn entry_arc(&self) -> Arc<Entry> {
        self.entry.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.entry.state).direct = false;
        let mut entries = lock(&self.registry.entries);
        if let Some(i) = entries.iter().position(|e| Arc::ptr_eq(e, &self.entry)) {
            entries.swap_remove(i);
        }
    }
}

impl Entry {
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Resolves when the fan-out has handed this subscriber back (or spuriously, which only
    /// costs a look).
    pub(crate) fn handed_back(&self) -> Notified<'_> {
        self.handback.notified()
    }

    /// Hands the subscriber to the fan-out if it has every event published so far; its task
    /// must have nothing pending. Returns whether it did.
    pub(crate) fn go_direct(&self, sub: &Subscription) -> bool {
        let mut state = lock(&self.state);
        // Checked under the lock: a fan-out that has read a newer event either finds this
        // subscriber direct at the old cursor and writes it, or is already past and the
        // check fails.
        if !sub.caught_up() {
            return false;
        }
        state.direct = true;
        state.cursor = sub.cursor();
        true
    }

    /// Takes the subscriber back from the fan-out: its cursor moves past what the fan-out
    /// wrote, and what the socket did not take is returned, to be flushed first.
    pub(crate) fn take_back(&self, sub: &mut Subscription) -> Vec<u8> {
        let mut state = lock(&self.state);
        state.direct = false;
        sub.advance_to(state.cursor);
        std::mem::take(&mut state.pending)
    }

    /// Writes the events of `burst` this subscriber lacks, if it is direct; returns how many.
    fn offer(&self, burst: &mut Burst, stats: &Stats) -> u64 {
        let mut state = lock(&self.state);
        if !state.direct || state.cursor >= burst.to() {
            return 0;
        }
        if state.cursor + 1 < burst.from {
            // Never, by the invariant above; if it were so, its task catches up by itself.
            self.hand_back(state, stats);
            return 0;
        }
        let skip = (state.cursor + 1 - burst.from) as usize;
        state.cursor = burst.to();
        let items = &burst.encoded(self.framing)[skip..];
        self.write(state, items, stats);
        items.len() as u64
    }

    /// Writes the framing's keep-alive if the subscriber is direct (else its own task is busy
    /// with it, and it is not idle).
    fn keep_alive(&self, stats: &Stats) {
        let state = lock(&self.state);
        if !state.direct {
            return;
        }
        self.write(state, &[Bytes::from_static(self.framing.keepalive)], stats);
    }

    /// Writes `items` (at most [`BURST`]) to the socket as the framing wants them: one chunk,
    /// or the frames as they are. What the socket does not take is kept, and the subscriber is
    /// handed back with it.
    fn write(&self, mut state: MutexGuard<'_, State>, items: &[Bytes], stats: &Stats) {
        if self.framing.chunked {
            chunked::try_chunk(self.socket.as_raw_fd(), items, &mut state.pending);
        } else {
            let mut parts: [&[u8]; BURST] = [&[]; BURST];
            for (part, item) in parts.iter_mut().zip(items) {
                *part = item;
            }
            chunked::try_write(
                self.socket.as_raw_fd(),
                &parts[..items.len()],
                &mut state.pending,
            );
        }
        if !state.pending.is_empty() {
            self.hand_back(state, stats);
        }
    }

    fn hand_back(&self, mut state: MutexGuard<'_, State>, stats: &Stats) {
        state.direct = false;
        drop(state);
        self.handback.notify_one();
        Stats::inc(&stats.handbacks);
    }
}

/// Events read for one round of writes, and their bytes in each framing met so far.
struct Burst {
    events: Vec<Arc<Event>>,
    /// Id of `events[0]`.
    from: u64,
    /// Per framing name, each event's bytes: encoded once per burst, not once per subscriber.
    encoded: Vec<(&'static str, Vec<Bytes>)>,
}

impl Burst {
    fn to(&self) -> u64 {
        self.from + self.events.len() as u64 - 1
    }

    fn encoded(&mut self, framing: Framing) -> &[Bytes] {
        let i = match self.encoded.iter().position(|(n, _)| *n == framing.name) {
            Some(i) => i,
            None => {
                let bytes = self
                    .events
                    .iter()
                    .map(|e| (framing.encode)(&Item::Event(e.clone())))
                    .collect();
                self.encoded.push((framing.name, bytes));
                self.encoded.len() - 1
            }
        };
        &self.encoded[i].1
    }
}

/// A topic's fan-out: waits for events, reads up to [`BURST`] at a time, and offers them to
/// every registered subscriber; when the topic stays idle for `keepalive`, writes each direct
/// subscriber a keep-alive instead. Ends at shutdown.
async fn run(
    hub: Hub,
    topic: String,
    registry: Arc<Registry>,
    keepalive: Duration,
    shutdown: CancellationToken,
) {
    let mut reader: Option<Subscription> = None;
    let idle = tokio::time::sleep(keepalive);
    tokio::pin!(idle);
    loop {
        let sub = match reader.as_mut() {
            Some(sub) => sub,
            None => match hub.subscribe(&topic, None) {
                Ok(sub) => reader.insert(sub.uncounted()),
                // Never: the topic exists, since a subscriber was registered under it.
                Err(_) => return,
            },
        };
        let first = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            item = sub.next() => item,
            () = &mut idle => {
                registry.keep_alive(hub.stats());
                idle.as_mut().reset(tokio::time::Instant::now() + keepalive);
                continue;
            }
        };
        // Let whatever else is ready run first (publish requests among them) before reading
        // the burst: a burst to many sockets is a lot of work for one poll, and while events
        // keep coming the next one would be ready at once, so without this the task would keep
        // the runtime to itself, publishes would wait behind it, and each burst would hold one
        // event. Idle, this costs one turn of the scheduler; busy, the bursts grow.
        tokio::task::yield_now().await;
        let Some(mut burst) = read_burst(first, sub) else {
            // The fan-out fell behind the replay buffer: every subscriber goes back to its own
            // task, which applies the slow-subscriber policy to itself, and the fan-out starts
            // again from the newest event.
            registry.hand_back_all(hub.stats());
            reader = None;
            continue;
        };
        let entries = lock(&registry.entries).clone();
        let stats = hub.stats();
        let delivered: u64 = entries.iter().map(|e| e.offer(&mut burst, stats)).sum();
        Stats::add(&hub.stats().deliveries, delivered);
        idle.as_mut().reset(tokio::time::Instant::now() + keepalive);
    }
}

/// `first` and what else is ready, up to [`BURST`] events; `None` if the reader was found
/// slow or skipped events.
fn read_burst(
    first: Result<Item, crate::hub::SlowSubscriber>,
    sub: &mut Subscription,
) -> Option<Burst> {
    let Ok(Item::Event(first)) = first else {
        return None;
    };
    let from = first.id();
    let mut events = Vec::with_capacity(BURST);
    events.push(first);
    while events.len() < BURST {
        match sub.try_next() {
            Ok(Some(Item::Event(e))) => events.push(e),
            Ok(None) => break,
            // The fan-out's own subscription is never greeted (`Subscription::uncounted`).
            Ok(Some(Item::Gap(_) | Item::Hello(_))) | Err(_) => return None,
        }
    }
    Some(Burst {
        events,
        from,
        encoded: Vec::new(),
    })
}

impl Registry {
    /// A keep-alive to every direct subscriber. The entries are copied out first, as for a
    /// burst, so registering and leaving never wait behind the writes.
    fn keep_alive(&self, stats: &Stats) {
        let entries = lock(&self.entries).clone();
        for entry in &entries {
            entry.keep_alive(stats);
        }
    }

    fn hand_back_all(&self, stats: &Stats) {
        for entry in lock(&self.entries).iter() {
            let state = lock(&entry.state);
            if state.direct {
                entry.hand_back(state, stats);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

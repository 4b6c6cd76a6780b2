//! The hub: topics, their bounded replay buffers, and fan-out to subscribers.
//!
//! Each topic keeps its recent events in a ring (the replay buffer). A subscriber is only a
//! cursor into that ring plus a `watch` receiver that wakes it when the newest id changes, so
//! one publish costs one encode and one wake-up per subscriber, and a subscriber's pending
//! queue costs no memory of its own. A subscriber whose cursor falls more than
//! [`HubConfig::max_lag`] behind, or off the ring, is slow: the [`SlowPolicy`] decides whether it
//! skips ahead with a gap signal or is disconnected, and both are counted.
//!
//! Each hub is one life of a server: it draws an [`Epoch`] when made, and cursors are read
//! against it. A cursor from another life, or a bare id past the topic's newest, is a reset:
//! the reader starts from the oldest event kept and is told so ([`Hello::reset`],
//! [`Batch::reset`]), because ids count from 1 again in every life.
//!
//! A lean subscriber that is caught up is not woken at all: its topic's fan-out
//! (`crate::fanout`) reads each burst once, with an uncounted subscription of its own, and writes
//! it to the subscriber's socket.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::config::{HubConfig, SlowPolicy};
use crate::epoch::{Cursor, Epoch};
use crate::event::{Event, Gap, Hello};
use crate::protocol::{validate_payload, validate_topic, PayloadError, TopicError};
use crate::stats::Stats;

/// Why the hub refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The topic name is not valid.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The payload is not valid.
    #[error(transparent)]
    Payload(#[from] PayloadError),
    /// Creating the topic would pass [`HubConfig::max_topics`].
    #[error("topic limit reached ({0} topics exist)")]
    TopicLimit(usize),
    /// A cursor of this very life names an id the topic has not reached: no server sent it.
    /// (A bare id past the newest is a reset instead: it came from an earlier life.)
    #[error("after={after} is ahead of the topic's last id {last_id} in this server's life")]
    AheadOfTopic {
        /// The requested cursor.
        after: u64,
        /// The topic's newest id.
        last_id: u64,
    },
}

/// A slow subscriber under [`SlowPolicy::Disconnect`]: its connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("subscriber fell {pending} events behind and is disconnected")]
pub struct SlowSubscriber {
    /// Events it had pending.
    pub pending: u64,
}

/// What a subscriber receives next.
#[derive(Debug, Clone)]
pub enum Item {
    /// Where the subscription starts, in which life of the server: always the first item.
    Hello(Hello),
    /// The next event.
    Event(Arc<Event>),
    /// Events the subscriber will never receive.
    Gap(Gap),
}

/// The shared event store and fan-out point. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: HubConfig,
    epoch: Epoch,
    topics: RwLock<HashMap<Box<str>, Arc<Topic>>>,
    stats: Arc<Stats>,
}

#[derive(Debug)]
struct Topic {
    /// Held by a publisher while it assigns and encodes the next event.
    publishing: Mutex<()>,
    /// Held only to add or read events; never during an encode.
    ring: RwLock<Ring>,
    /// Carries the newest id; every subscriber holds a receiver.
    newest: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Ring {
    events: VecDeque<Arc<Event>>,
    bytes: usize,
    last_id: u64,
}

impl Ring {
    /// Id of the oldest event kept; `last_id + 1` when the ring is empty.
    fn first_id(&self) -> u64 {
        self.last_id + 1 - self.events.len() as u64
    }

    /// The event with `id`, which must lie in `first_id()..=last_id`.
    fn get(&self, id: u64) -> &Arc<Event> {
        &self.events[(id - self.first_id()) as usize]
    }
}

/// One poll's worth of events.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The server's life the ids belong to.
    pub epoch: Epoch,
    /// Whether the cursor named another life: the events are read from the oldest kept.
    pub reset: bool,
    /// Events after the cursor, oldest first, at most the requested number.
    pub events: Vec<Arc<Event>>,
    /// Ids the caller asked for that the replay buffer no longer holds.
    pub gap: Option<Gap>,
    /// The topic's newest id when the batch was read.
    pub last_id: u64,
}

impl Batch {
    /// No events, from a topic with none yet.
    pub fn empty(epoch: Epoch, reset: bool) -> Batch {
        Batch {
            epoch,
            reset,
            events: Vec::new(),
            gap: None,
            last_id: 0,
        }
    }
}

impl Hub {
    /// A hub with the given limits and fresh counters: a new life, with a new epoch.
    pub fn new(config: HubConfig) -> Hub {
        Hub::with_epoch(config, Epoch::fresh())
    }

    /// [`Hub::new`] with a chosen epoch: for tests that need to know it in advance.
    pub fn with_epoch(config: HubConfig, epoch: Epoch) -> Hub {
        Hub {
            inner: Arc::new(Inner {
                config,
                epoch,
                topics: RwLock::new(HashMap::new()),
                stats: Arc::new(Stats::default()),
            }),
        }
    }

    /// The counters every server on this hub reports.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.inner.stats
    }

    /// The hub's limits.
    pub fn config(&self) -> &HubConfig {
        &self.inner.config
    }

    /// This life of the server.
    pub fn epoch(&self) -> Epoch {
        self.inner.epoch
    }

    /// Where `after` puts a reader of a topic whose newest id is `last_id`: the id to read
    /// after, and whether that is a reset. No cursor reads from now. A cursor of another life,
    /// or a bare id past the newest (which only an earlier life can have sent), reads from the
    /// oldest kept, as a reset. A cursor of this life past the newest was never sent: refused.
    fn place(&self, after: Option<Cursor>, last_id: u64) -> Result<(u64, bool), HubError> {
        let Some(cursor) = after else {
            return Ok((last_id, false));
        };
        match cursor.epoch {
            Some(epoch) if epoch != self.inner.epoch => Ok((0, true)),
            None if cursor.id > last_id => Ok((0, true)),
            Some(_) if cursor.id > last_id => Err(HubError::AheadOfTopic {
                after: cursor.id,
                last_id,
            }),
            _ => Ok((cursor.id, false)),
        }
    }

    /// Validates and stores `payload` as the next event of `topic`, wakes its subscribers, and
    /// returns the new id.
    pub fn publish(&self, topic: &str, payload: &[u8]) -> Result<u64, HubError> {
        let text = validate_payload(payload)?;
        let topic = self.topic(topic)?;
        Ok(self.publish_on(&topic, text))
    }

    /// Publishes `text`, a checked payload, to `topic`; returns its id.
    fn publish_on(&self, topic: &Topic, text: &str) -> u64 {
        let cfg = &self.inner.config;
        // Publishers of one topic take turns here, so ids are assigned in order; the encode
        // (up to 64 KiB escaped three ways) happens under this lock only, never under the
        // ring's, so readers and subscribers never wait behind it.
        let _turn = topic
            .publishing
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let id = read(&topic.ring).last_id + 1;
        let event = Arc::new(Event::encode(self.inner.epoch, id, text));
        {
            let mut ring = write(&topic.ring);
            ring.bytes += event.retained_bytes();
            ring.events.push_back(event);
            ring.last_id = id;
            let mut evicted = 0;
            while ring.events.len() > cfg.replay_events.max(1)
                || (ring.bytes > cfg.replay_bytes && ring.events.len() > 1)
            {
                let Some(old) = ring.events.pop_front() else {
                    break;
                };
                ring.bytes -= old.retained_bytes();
                evicted += 1;
            }
            Stats::add(&self.inner.stats.evicted, evicted);
        }
        // After the ring holds the event, so a woken subscriber always finds it; still in turn,
        // so the watched value only grows.
        topic.newest.send_replace(id);
        Stats::inc(&self.inner.stats.events_published);
        id
    }

    /// Reads up to `max` events after `after` (`None`: from now, so none) without waiting.
    ///
    /// Reading never creates a topic: a topic that does not exist reads as empty, with
    /// `last_id` 0, so polls for arbitrary names cannot fill the topic table.
    pub fn read(&self, topic: &str, after: Option<Cursor>, max: usize) -> Result<Batch, HubError> {
        let Some(topic) = self.existing_topic(topic)? else {
            let (_, reset) = self.place(after, 0)?;
            return Ok(Batch::empty(self.inner.epoch, reset));
        };
        let ring = read(&topic.ring);
        let (after, reset) = self.place(after, ring.last_id)?;
        let mut batch = Batch {
            last_id: ring.last_id,
            ..Batch::empty(self.inner.epoch, reset)
        };
        let first = ring.first_id();
        let mut next = after + 1;
        if next < first {
            let gap = Gap {
                from: next,
                to: first - 1,
            };
            self.count_replay_miss(gap);
            batch.gap = Some(gap);
            next = first;
        }
        let end = ring
            .last_id
            .min(next.saturating_add(max as u64).saturating_sub(1));
        batch.events = (next..=end).map(|id| ring.get(id).clone()).collect();
        Stats::add(&self.inner.stats.deliveries, batch.events.len() as u64);
        Ok(batch)
    }

    /// The newest event on `topic` if it is newer than `after`: the current state, skipping
    /// whatever came between. No gap is signalled, because skipping is what the client asked for.
    pub fn read_latest(&self, topic: &str, after: Option<Cursor>) -> Result<Batch, HubError> {
        let Some(topic) = self.existing_topic(topic)? else {
            let (_, reset) = self.place(after, 0)?;
            return Ok(Batch::empty(self.inner.epoch, reset));
        };
        let ring = read(&topic.ring);
        let (after, reset) = self.place(after, ring.last_id)?;
        let mut batch = Batch {
            last_id: ring.last_id,
            ..Batch::empty(self.inner.epoch, reset)
        };
        if ring.last_id > after && ring.last_id >= ring.first_id() {
            batch.events.push(ring.get(ring.last_id).clone());
            Stats::inc(&self.inner.stats.deliveries);
        }
        Ok(batch)
    }

    /// A waiter for the first event after `after` on `topic` (created if need be, so a publish
    /// to it can wake the waiter). Unlike [`Hub::subscribe`] it hands out nothing, so it counts
    /// no gaps: a held long poll waits with this, and only the read that answers it counts.
    pub fn watch(&self, topic: &str, after: u64) -> Result<Waiter, HubError> {
        let topic = self.topic(topic)?;
        let mut newest = topic.newest.subscribe();
        newest.mark_unchanged();
        Ok(Waiter {
            topic,
            newest,
            after,
        })
    }

    /// Subscribes to `topic` after `after` (`None`: only events published from now on). Its
    /// first item is the [`Hello`]: the epoch, where it starts, and whether that is a reset.
    ///
    /// A resume never starts more than [`HubConfig::max_lag`] events behind, whatever the
    /// [`SlowPolicy`]: older ids are skipped with one gap signal, counted as `replay_misses` for
    /// the ids the replay buffer no longer held and as `drops` for the ones it did. Otherwise a
    /// backlog under the disconnect policy would cut the client at once, every time it resumed.
    pub fn subscribe(&self, topic: &str, after: Option<Cursor>) -> Result<Subscription, HubError> {
        let topic = self.topic(topic)?;
        let mut newest = topic.newest.subscribe();
        newest.mark_unchanged();
        let (cursor, hello, gap) = {
            let ring = read(&topic.ring);
            let (after, reset) = self.place(after, ring.last_id)?;
            let hello = Hello {
                epoch: self.inner.epoch,
                after,
                reset,
            };
            let stats = &self.inner.stats;
            // Ids up to `missed` are gone from the buffer; up to `skipped`, too far behind.
            let missed = after.max(ring.first_id() - 1);
            let skipped = missed.max(ring.last_id.saturating_sub(self.inner.config.max_lag));
            if skipped > after {
                Stats::add(&stats.replay_misses, missed - after);
                Stats::add(&stats.drops, skipped - missed);
                Stats::inc(&stats.gaps);
                let gap = Gap {
                    from: after + 1,
                    to: skipped,
                };
                (skipped, hello, Some(gap))
            } else {
                (after, hello, None)
            }
        };
        Ok(Subscription {
            hub: self.clone(),
            topic,
            newest,
            cursor,
            pending_hello: Some(hello),
            pending_gap: gap,
            counted: true,
        })
    }

    /// How many topics exist.
    pub fn topic_count(&self) -> usize {
        read(&self.inner.topics).len()
    }

    fn count_replay_miss(&self, gap: Gap) {
        Stats::add(&self.inner.stats.replay_misses, gap.len());
        Stats::inc(&self.inner.stats.gaps);
    }

    /// The topic named `name`, if it exists.
    fn existing_topic(&self, name: &str) -> Result<Option<Arc<Topic>>, HubError> {
        if let Some(t) = read(&self.inner.topics).get(name) {
            return Ok(Some(t.clone()));
        }
        validate_topic(name)?;
        Ok(None)
    }

    /// The topic named `name`, created if it does not exist yet.
    fn topic(&self, name: &str) -> Result<Arc<Topic>, HubError> {
        if let Some(t) = self.existing_topic(name)? {
            return Ok(t);
        }
        let mut topics = write(&self.inner.topics);
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        if topics.len() >= self.inner.config.max_topics {
            return Err(HubError::TopicLimit(topics.len()));
        }
        let topic = Arc::new(Topic {
            publishing: Mutex::new(()),
            ring: RwLock::new(Ring::default()),
            newest: watch::Sender::new(0),
        });
        topics.insert(name.into(), topic.clone());
        Stats::inc(&self.inner.stats.topics);
        Ok(topic)
    }
}

// A panic while holding these locks cannot leave the ring half-updated in a way that matters
// more than losing the server, so poisoning is ignored rather than propagated as a panic.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// One subscriber's position in a topic.
#[derive(Debug)]
pub struct Subscription {
    hub: Hub,
    topic: Arc<Topic>,
    newest: watch::Receiver<u64>,
    /// Id of the last item handed out.
    cursor: u64,
    /// Where it starts, handed out first.
    pending_hello: Option<Hello>,
    /// A resume gap found at subscribe time, handed out next.
    pending_gap: Option<Gap>,
    /// Whether what this subscription reads counts as deliveries, drops and gaps: not when it
    /// only reads events for others, who count their own (`crate::fanout`).
    counted: bool,
}

impl Subscription {
    /// Publishes `payload` to this subscription's topic, as [`Hub::publish`] does: for a
    /// subscriber that publishes upstream and keeps no copy of its topic's name. (Topics are
    /// never removed, so the topic held here is the one the name finds.)
    pub fn publish(&self, payload: &[u8]) -> Result<u64, HubError> {
        let text = validate_payload(payload)?;
        Ok(self.hub.publish_on(&self.topic, text))
    }

    /// This subscription, counting nothing it reads: it reads on behalf of subscribers who
    /// count their own deliveries.
    pub(crate) fn uncounted(mut self) -> Subscription {
        self.counted = false;
        // It reads for subscribers who were each greeted on their own.
        self.pending_hello = None;
        self
    }

    /// Whether every event published so far has been handed out (nothing pending, no gap).
    pub(crate) fn caught_up(&self) -> bool {
        self.pending_hello.is_none()
            && self.pending_gap.is_none()
            && read(&self.topic.ring).last_id <= self.cursor
    }

    /// Moves the cursor to `id`, whose events were delivered to this subscriber by someone
    /// else (the publishing side's fan-out). Never moves it back.
    pub(crate) fn advance_to(&mut self, id: u64) {
        self.cursor = self.cursor.max(id);
    }

    /// Id of the last event handed out (or skipped by a gap).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Waits for the next item. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> Result<Item, SlowSubscriber> {
        loop {
            // Mark the current value seen *before* looking at the ring: a publish that lands
            // after the look then always trips `changed()`.
            self.newest.borrow_and_update();
            if let Some(item) = self.try_next()? {
                return Ok(item);
            }
            if self.newest.changed().await.is_err() {
                // The sender lives in the topic, which this subscription keeps alive, so this
                // cannot happen; if it ever did, waiting forever is still correct.
                std::future::pending::<()>().await;
            }
        }
    }

    /// The next item if one is ready, without waiting: lets a sender batch a burst.
    pub fn try_next(&mut self) -> Result<Option<Item>, SlowSubscriber> {
        if let Some(hello) = self.pending_hello.take() {
            return Ok(Some(Item::Hello(hello)));
        }
        if let Some(gap) = self.pending_gap.take() {
            return Ok(Some(Item::Gap(gap)));
        }
        let ring = read(&self.topic.ring);
        if ring.last_id <= self.cursor {
            return Ok(None);
        }
        let cfg = &self.hub.inner.config;
        let stats = &self.hub.inner.stats;
        let count = |counter, n| {
            if self.counted {
                Stats::add(counter, n);
            }
        };
        let pending = ring.last_id - self.cursor;
        let fell_off = self.cursor + 1 < ring.first_id();
        if fell_off || pending > cfg.max_lag {
            match cfg.slow_policy {
                SlowPolicy::Disconnect => {
                    count(&stats.slow_disconnects, 1);
                    return Err(SlowSubscriber { pending });
                }
                SlowPolicy::Drop => {
                    let keep = cfg.max_lag.min(ring.events.len() as u64);
                    let gap = Gap {
                        from: self.cursor + 1,
                        to: ring.last_id - keep,
                    };
                    self.cursor = gap.to;
                    count(&stats.drops, gap.len());
                    count(&stats.gaps, 1);
                    return Ok(Some(Item::Gap(gap)));
                }
            }
        }
        self.cursor += 1;
        let event = ring.get(self.cursor).clone();
        count(&stats.deliveries, 1);
        Ok(Some(Item::Event(event)))
    }
}

/// Waits for a topic to pass an id, without receiving anything (see [`Hub::watch`]).
#[derive(Debug)]
pub struct Waiter {
    topic: Arc<Topic>,
    newest: watch::Receiver<u64>,
    after: u64,
}

impl Waiter {
    /// Waits until at least one event exists after the watched id. Cancel-safe.
    pub async fn ready(&mut self) {
        loop {
            self.newest.borrow_and_update();
            if read(&self.topic.ring).last_id > self.after {
                return;
            }
            if self.newest.changed().await.is_err() {
                // The sender lives in the topic, which this waiter keeps alive.
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub(replay: usize, max_lag: u64, policy: SlowPolicy) -> Hub {
        Hub::new(HubConfig {
            replay_events: replay,
            max_lag,
            slow_policy: policy,
            ..HubConfig::default()
        })
    }

    fn event_id(item: Item) -> u64 {
        match item {
            Item::Event(e) => e.id(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// `s` with its hello taken: the first item of every subscription.
    fn greeted(mut s: Subscription) -> Subscription {
        assert!(matches!(s.try_next(), Ok(Some(Item::Hello(_)))));
        s
    }

    #[tokio::test]
    async fn ids_start_at_one_per_topic() {
        let h = Hub::new(HubConfig::default());
        assert_eq!(h.publish("a", b"x").unwrap(), 1);
        assert_eq!(h.publish("a", b"y").unwrap(), 2);
        assert_eq!(h.publish("b", b"z").unwrap(), 1);
        assert_eq!(h.topic_count(), 2);
    }

    #[tokio::test]
    async fn subscriber_sees_events_in_order() {
        let h = Hub::new(HubConfig::default());
        let mut s = greeted(h.subscribe("t", Some(Cursor::bare(0))).unwrap());
        let waiter = tokio::spawn(async move {
            let mut ids = vec![];
            for _ in 0..5 {
                ids.push(event_id(s.next().await.unwrap()));
            }
            ids
        });
        for i in 0..5 {
            h.publish("t", format!("p{i}").as_bytes()).unwrap();
        }
        assert_eq!(waiter.await.unwrap(), vec![1, 2, 3, 4, 5]);
        assert_eq!(h.stats().snapshot().deliveries, 5);
    }

    #[tokio::test]
    async fn resume_older_than_replay_signals_gap() {
        let h = hub(4, 4, SlowPolicy::Drop);
        for _ in 0..10 {
            h.publish("t", b"x").unwrap();
        }
        let mut s = greeted(h.subscribe("t", Some(Cursor::bare(2))).unwrap());
        match s.next().await.unwrap() {
            Item::Gap(g) => assert_eq!(g, Gap { from: 3, to: 6 }),
            other => panic!("{other:?}"),
        }
        for want in 7..=10 {
            assert_eq!(event_id(s.next().await.unwrap()), want);
        }
        let b = h.read("t", Some(Cursor::bare(0)), 2).unwrap();
        assert_eq!(b.gap, Some(Gap { from: 1, to: 6 }));
        assert_eq!(
            b.events.iter().map(|e| e.id()).collect::<Vec<_>>(),
            vec![7, 8]
        );
        assert_eq!(b.last_id, 10);
        let snap = h.stats().snapshot();
        assert_eq!(snap.replay_misses, 4 + 6);
        assert_eq!(snap.drops, 0);
    }

    #[tokio::test]
    async fn slow_subscriber_drop_policy_skips_and_counts() {
        let h = hub(100, 3, SlowPolicy::Drop);
        let mut s = greeted(h.subscribe("t", None).unwrap());
        for _ in 0..10 {
            h.publish("t", b"x").unwrap();
        }
        match s.next().await.unwrap() {
            Item::Gap(g) => assert_eq!(g, Gap { from: 1, to: 7 }),
            other => panic!("{other:?}"),
        }
        for want in 8..=10 {
            assert_eq!(event_id(s.next().await.unwrap()), want);
        }
        assert_eq!(h.stats().snapshot().drops, 7);
    }

    #[tokio::test]
    async fn slow_subscriber_disconnect_policy() {
        let h = hub(100, 3, SlowPolicy::Disconnect);
        let mut s = greeted(h.subscribe("t", None).unwrap());
        for _ in 0..4 {
            h.publish("t", b"x").unwrap();
        }
        assert_eq!(s.next().await.unwrap_err(), SlowSubscriber { pending: 4 });
        assert_eq!(h.stats().snapshot().slow_disconnects, 1);
    }

    #[tokio::test]
    async fn falling_off_the_ring_is_slow_too() {
        let h = hub(4, 1000, SlowPolicy::Drop);
        let mut s = greeted(h.subscribe("t", None).unwrap());
        for _ in 0..10 {
            h.publish("t", b"x").unwrap();
        }
        match s.next().await.unwrap() {
            Item::Gap(g) => assert_eq!(g, Gap { from: 1, to: 6 }),
            other => panic!("{other:?}"),
        }
        assert_eq!(event_id(s.next().await.unwrap()), 7);
    }

    #[test]
    fn refuses_bad_input() {
        let h = Hub::new(HubConfig {
            max_topics: 1,
            ..HubConfig::default()
        });
        assert!(matches!(h.publish("a b", b"x"), Err(HubError::Topic(_))));
        assert!(matches!(h.publish("a", b"x\ny"), Err(HubError::Payload(_))));
        h.publish("a", b"x").unwrap();
        assert_eq!(h.publish("b", b"x"), Err(HubError::TopicLimit(1)));
        assert_eq!(
            h.read("a", Some(Cursor::of(h.epoch(), 5)), 10).unwrap_err(),
            HubError::AheadOfTopic {
                after: 5,
                last_id: 1
            }
        );
    }

    #[tokio::test]
    async fn resume_backlog_past_max_lag_skips_ahead_under_either_policy() {
        for policy in [SlowPolicy::Drop, SlowPolicy::Disconnect] {
            // Buffer 6, lag 3: after 10 events the ring holds 5..=10.
            let h = hub(6, 3, policy);
            for _ in 0..10 {
                h.publish("t", b"x").unwrap();
            }
            let mut s = greeted(h.subscribe("t", Some(Cursor::bare(1))).unwrap());
            match s.next().await.unwrap() {
                Item::Gap(g) => assert_eq!(g, Gap { from: 2, to: 7 }, "{policy:?}"),
                other => panic!("{policy:?}: {other:?}"),
            }
            for want in 8..=10 {
                assert_eq!(event_id(s.next().await.unwrap()), want, "{policy:?}");
            }
            let snap = h.stats().snapshot();
            // 2..=4 were gone from the buffer; 5..=7 were there but too far behind.
            assert_eq!(snap.replay_misses, 3, "{policy:?}");
            assert_eq!(snap.drops, 3, "{policy:?}");
            assert_eq!(snap.gaps, 1, "{policy:?}");
            assert_eq!(snap.slow_disconnects, 0, "{policy:?}");
        }
    }

    #[tokio::test]
    async fn reads_do_not_create_topics() {
        let h = hub(4, 4, SlowPolicy::Drop);
        let b = h.read("nobody", None, 10).unwrap();
        assert!(b.events.is_empty() && b.gap.is_none());
        assert_eq!(b.last_id, 0);
        assert_eq!(
            h.read("nobody", Some(Cursor::bare(0)), 10).unwrap().last_id,
            0
        );
        assert_eq!(
            h.read("nobody", Some(Cursor::of(h.epoch(), 3)), 10)
                .unwrap_err(),
            HubError::AheadOfTopic {
                after: 3,
                last_id: 0
            }
        );
        assert!(matches!(
            h.read("no body", None, 10),
            Err(HubError::Topic(_))
        ));
        assert_eq!(h.topic_count(), 0);
        assert_eq!(h.stats().snapshot().topics, 0);
        // Subscribing and publishing still create.
        h.subscribe("s", None).unwrap();
        h.publish("p", b"x").unwrap();
        assert_eq!(h.topic_count(), 2);
    }

    #[tokio::test]
    async fn watch_counts_no_gaps_and_wakes_on_publish() {
        let h = hub(4, 4, SlowPolicy::Drop);
        for _ in 0..10 {
            h.publish("t", b"x").unwrap();
        }
        // Ids 1..=6 are gone: a subscription would count a replay miss; a waiter does not.
        let mut w = h.watch("t", 0).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), w.ready())
            .await
            .unwrap();
        let mut w = h.watch("t", 10).unwrap();
        let publisher = h.clone();
        let waiter = tokio::spawn(async move { w.ready().await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        publisher.publish("t", b"y").unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        let snap = h.stats().snapshot();
        assert_eq!((snap.replay_misses, snap.gaps, snap.drops), (0, 0, 0));
    }

    #[test]
    fn read_latest_skips_to_the_newest() {
        let h = hub(100, 100, SlowPolicy::Drop);
        assert!(h.read_latest("t", None).unwrap().events.is_empty());
        for p in [b"a", b"b", b"c"] {
            h.publish("t", p).unwrap();
        }
        let b = h.read_latest("t", Some(Cursor::bare(0))).unwrap();
        let ids: Vec<_> = b.events.iter().map(|e| e.id()).collect();
        assert_eq!((ids, b.last_id, b.gap), (vec![3], 3, None));
        assert!(h
            .read_latest("t", Some(Cursor::bare(3)))
            .unwrap()
            .events
            .is_empty());
        assert!(h.read_latest("t", Some(Cursor::of(h.epoch(), 4))).is_err());
    }

    #[tokio::test]
    async fn a_cursor_of_another_life_resets_to_the_oldest_kept() {
        let (this, other) = (Epoch::from_bits(1), Epoch::from_bits(2));
        let h = Hub::with_epoch(HubConfig::default(), this);
        for _ in 0..3 {
            h.publish("t", b"x").unwrap();
        }
        let ids = |b: &Batch| b.events.iter().map(|e| e.id()).collect::<Vec<_>>();
        // Another life's cursor, behind or ahead of this life's newest, and a bare id past it.
        for cursor in [Cursor::of(other, 2), Cursor::of(other, 9), Cursor::bare(9)] {
            let b = h.read("t", Some(cursor), 10).unwrap();
            assert!(b.reset, "{cursor}");
            assert_eq!((ids(&b), b.epoch), (vec![1, 2, 3], this), "{cursor}");
            let b = h.read("nobody", Some(cursor), 10).unwrap();
            assert!(b.reset && b.events.is_empty(), "{cursor}");
            let mut s = h.subscribe("t", Some(cursor)).unwrap();
            let hello = Hello {
                epoch: this,
                after: 0,
                reset: true,
            };
            assert!(matches!(s.next().await.unwrap(), Item::Hello(x) if x == hello));
            for want in 1..=3 {
                assert_eq!(event_id(s.next().await.unwrap()), want);
            }
        }
        // This life's cursor, or a bare id within it, resumes where it says, with no reset.
        for cursor in [Cursor::of(this, 2), Cursor::bare(2)] {
            let b = h.read("t", Some(cursor), 10).unwrap();
            assert!(!b.reset);
            assert_eq!(ids(&b), vec![3]);
            let mut s = h.subscribe("t", Some(cursor)).unwrap();
            let hello = Hello {
                epoch: this,
                after: 2,
                reset: false,
            };
            assert!(matches!(s.next().await.unwrap(), Item::Hello(x) if x == hello));
            assert_eq!(event_id(s.next().await.unwrap()), 3);
        }
        // From now: the hello names the newest id, so a reconnect can resume from it.
        let mut s = h.subscribe("t", None).unwrap();
        assert!(matches!(s.next().await.unwrap(), Item::Hello(x) if x.after == 3 && !x.reset));
        assert_eq!(h.stats().snapshot().gaps, 0);
    }

    #[test]
    fn readers_do_not_wait_behind_an_encode() {
        // A publisher holding its turn (as during an encode) must not block a reader.
        let h = hub(100, 100, SlowPolicy::Drop);
        h.publish("t", b"x").unwrap();
        let topic = h.topic("t").unwrap();
        let _turn = topic.publishing.lock().unwrap();
        let reader = h.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(
                reader
                    .read("t", Some(Cursor::bare(0)), 10)
                    .map(|b| b.last_id),
            );
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        assert_eq!(got, Ok(Ok(1)));
    }

    #[test]
    fn replay_is_bounded_by_bytes() {
        let h = Hub::new(HubConfig {
            replay_bytes: 1000,
            ..HubConfig::default()
        });
        for _ in 0..100 {
            h.publish("t", &[b'x'; 100]).unwrap();
        }
        let b = h.read("t", Some(Cursor::bare(0)), 1000).unwrap();
        assert!(b.events.len() < 10, "kept {}", b.events.len());
        assert_eq!(b.last_id, 100);
    }
}

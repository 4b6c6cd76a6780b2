//! Devices, topics and device groups: who is registered, who listens to what, and how a send's
//! target becomes a list of devices.
//!
//! Projects share nothing: a device belongs to the project it registered with, its topics are
//! that project's topics, a group holds devices of one project, and a send in one project never
//! reaches a device of another (a token or key of another project is `SENDER_ID_MISMATCH`, as
//! in FCM).
//!
//! Lock order, where two are held: `groups` or `topics` before a device's own state, never the
//! other way round; the set of offline devices is taken last of all, under a device's state or
//! alone, so its view of who is connected changes with the device's. A send takes its
//! recipients under a read lock (a topic's members, shared) and queues to each device after
//! releasing it, so one large topic never blocks registrations for long.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Instant;

use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use super::direct::{self, Writer};
use super::error::FcmError;
use super::message::Target;
use super::queue::Queue;
use super::stats::{sub, GatewayStats};
use super::token;
use super::topic::TopicName;
use crate::stats::Stats;

/// One registered device.
#[derive(Debug)]
pub struct Device {
    /// Its registration token.
    pub token: Arc<str>,
    /// Its place in registration order, which orders every topic's members (see [`Members`]).
    serial: u64,
    /// The project its upstream messages go to.
    pub project: Arc<str>,
    /// Everything that changes.
    state: Mutex<DeviceState>,
    /// Woken when a message is queued for a connected device.
    pub wake: Notify,
}

/// A device's changing state.
#[derive(Debug)]
pub struct DeviceState {
    /// What waits for it.
    pub queue: Queue,
    /// The open connection, if any: its id, and how to close it when a newer one replaces it.
    pub session: Option<(u64, CancellationToken)>,
    /// Topics it is subscribed to.
    pub topics: HashSet<TopicName>,
    /// False once unregistered: nothing more is queued.
    pub registered: bool,
    /// Who writes its messages: its session, or the send path while the session is caught
    /// up (`super::direct`).
    pub writer: Writer,
}

impl DeviceState {
    /// The id of the open connection's session, if any.
    fn current(&self) -> Option<u64> {
        self.session.as_ref().map(|(id, _)| *id)
    }

    /// See [`direct::take_frames`].
    pub fn take_frames(
        &mut self,
        session: u64,
        max: usize,
        out: impl FnMut(Utf8Bytes),
        stats: &GatewayStats,
    ) -> Option<()> {
        let current = self.current();
        direct::take_frames(
            &mut self.queue,
            current,
            session,
            max,
            out,
            stats,
            Instant::now(),
        )
    }

    /// See [`Writer::go_direct`].
    pub fn go_direct(&mut self, session: u64, socket: &Arc<TcpStream>) -> bool {
        let current = self.current();
        self.writer.go_direct(&self.queue, current, session, socket)
    }

    /// See [`Writer::push`].
    pub fn push_direct(&mut self, stats: &GatewayStats, now: Instant) -> (bool, bool) {
        let current = self.current();
        self.writer.push(&mut self.queue, current, stats, now)
    }
}

impl Device {
    /// Locks its state.
    pub fn state(&self) -> MutexGuard<'_, DeviceState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A device group: up to a few devices of one user, addressed by one notification key.
#[derive(Debug)]
struct Group {
    project: Arc<str>,
    name: String,
    members: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
struct Groups {
    by_key: HashMap<String, Group>,
    /// Each project's group names and their keys.
    key_by_name: HashMap<Arc<str>, HashMap<String, String>>,
}

/// Each project's topics and their members.
type Topics = HashMap<Arc<str>, HashMap<TopicName, Arc<Members>>>;

/// A topic's subscribers, in registration order.
///
/// Why ordered: a topic send visits every member's state, socket and the kernel's socket, and
/// those were allocated in about the order the devices registered and connected. Visited in a
/// hash map's order, each visit missed the caches and the TLB; in registration order the
/// prefetchers help. At 10,000 devices that took a topic send from about 10.1 to 8.7 µs of
/// server CPU per delivery.
type Members = BTreeMap<u64, Arc<Device>>;

/// The devices a send reaches: a topic's members as the topic holds them, or a list.
#[derive(Debug)]
pub enum Recipients {
    Listed(Vec<Arc<Device>>),
    Topic(Arc<Members>),
}

impl Recipients {
    /// How many.
    pub fn len(&self) -> usize {
        match self {
            Recipients::Listed(v) => v.len(),
            Recipients::Topic(m) => m.len(),
        }
    }

    /// The one device, if exactly one.
    pub fn only(&self) -> Option<&Arc<Device>> {
        match self {
            Recipients::Listed(v) if v.len() == 1 => v.first(),
            Recipients::Topic(m) if m.len() == 1 => m.values().next(),
            _ => None,
        }
    }

    /// Each device, in registration order for a topic.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Device>> {
        let (listed, topic) = match self {
            Recipients::Listed(v) => (Some(v.iter()), None),
            Recipients::Topic(m) => (None, Some(m.values())),
        };
        listed
            .into_iter()
            .flatten()
            .chain(topic.into_iter().flatten())
    }
}

/// Limits of the registry.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Devices registered at once.
    pub max_devices: usize,
    /// Each device's queue.
    pub queue_capacity: usize,
    /// Topics one device may be subscribed to (FCM: 2,000).
    pub max_topics_per_device: usize,
    /// Members of one device group (FCM: 20).
    pub max_group_members: usize,
    /// Device groups at once.
    pub max_groups: usize,
}

/// Every device, topic and group of the gateway.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    devices: RwLock<HashMap<Arc<str>, Arc<Device>>>,
    /// Each topic's members, shared with the sends that are fanning out to them: a send takes
    /// the topic's members with one reference count, not one per device (each one a cache miss
    /// at 10,000 devices, twice: taken, and given back), and a change of members while a send
    /// holds them copies them first.
    topics: RwLock<Topics>,
    groups: RwLock<Groups>,
    next_serial: AtomicU64,
    /// The devices with no connection now: all the TTL sweeper needs to visit. Why not every
    /// device: at 10,000 connected devices, visiting each one four times a second (a clone of
    /// its `Arc` and a lock, in hash order) cost the gateway more than its acks.
    offline: Mutex<Members>,
}

fn lock<T>(l: &Mutex<T>) -> MutexGuard<'_, T> {
    l.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// Forgets `project`'s group name `name`.
fn forget_name(
    key_by_name: &mut HashMap<Arc<str>, HashMap<String, String>>,
    project: &str,
    name: &str,
) {
    if let Some(names) = key_by_name.get_mut(project) {
        names.remove(name);
        if names.is_empty() {
            key_by_name.remove(project);
        }
    }
}

impl Registry {
    /// An empty registry.
    pub fn new(limits: Limits) -> Registry {
        Registry {
            limits,
            devices: RwLock::default(),
            topics: RwLock::default(),
            groups: RwLock::default(),
            next_serial: AtomicU64::new(0),
            offline: Mutex::default(),
        }
    }

    /// Registers a new device of `project` and returns it.
    pub fn register(&self, project: &str, stats: &GatewayStats) -> Result<Arc<Device>, FcmError> {
        let token: Arc<str> = token::new_token()?.into();
        let device = Arc::new(Device {
            token: token.clone(),
            serial: self.next_serial.fetch_add(1, Ordering::Relaxed),
            project: project.into(),
            state: Mutex::new(DeviceState {
                queue: Queue::new(self.limits.queue_capacity),
                session: None,
                topics: HashSet::new(),
                registered: true,
                writer: Writer::default(),
            }),
            wake: Notify::new(),
        });
        let mut devices = write(&self.devices);
        if devices.len() >= self.limits.max_devices {
            return Err(FcmError::Unavailable(format!(
                "device limit reached ({} registered)",
                self.limits.max_devices
            )));
        }
        devices.insert(token, device.clone());
        drop(devices);
        // Nobody knows its token yet, so no connection can come before this.
        self.went_offline(&device);
        Stats::inc(&stats.devices);
        Stats::inc(&stats.registrations);
        Ok(device)
    }

    /// The device with this token.
    pub fn device(&self, token: &str) -> Option<Arc<Device>> {
        read(&self.devices).get(token).cloned()
    }

    /// Every registered device.
    pub fn all_devices(&self) -> Vec<Arc<Device>> {
        read(&self.devices).values().cloned().collect()
    }

    /// The devices with no connection now, in registration order.
    pub fn offline_devices(&self) -> Vec<Arc<Device>> {
        lock(&self.offline).values().cloned().collect()
    }

    /// `device` has a connection now. Called under its lock (see the lock order above).
    pub fn went_online(&self, device: &Device) {
        lock(&self.offline).remove(&device.serial);
    }

    /// `device`, still registered, has no connection now. Called under its lock, or before
    /// anyone knows the device.
    pub fn went_offline(&self, device: &Arc<Device>) {
        lock(&self.offline).insert(device.serial, device.clone());
    }

    /// Unregisters `token`: its topics and groups forget it, its queue is discarded, its
    /// connection is closed.
    pub fn unregister(&self, token: &str, stats: &GatewayStats) -> Result<(), FcmError> {
        let device = write(&self.devices)
            .remove(token)
            .ok_or_else(|| FcmError::Unregistered(token.to_owned()))?;
        let topics: Vec<TopicName> = {
            let mut st = device.state();
            st.registered = false;
            let held = st.queue.clear();
            sub(&stats.queued, held);
            Stats::add(&stats.discarded, held);
            if let Some((_, kick)) = &st.session {
                kick.cancel();
            }
            lock(&self.offline).remove(&device.serial);
            st.topics.drain().collect()
        };
        {
            let mut all = write(&self.topics);
            if let Some(project) = all.get_mut(&device.project) {
                for t in &topics {
                    if let Some(members) = project.get_mut(t) {
                        Arc::make_mut(members).remove(&device.serial);
                        if members.is_empty() {
                            project.remove(t);
                        }
                    }
                }
                if project.is_empty() {
                    all.remove(&device.project);
                }
            }
        }
        sub(&stats.subscriptions, topics.len() as u64);
        let mut groups = write(&self.groups);
        let Groups {
            by_key,
            key_by_name,
        } = &mut *groups;
        by_key.retain(|_, g| {
            g.members.retain(|m| &**m != token);
            let keep = !g.members.is_empty();
            if !keep {
                forget_name(key_by_name, &g.project, &g.name);
                Stats::dec(&stats.groups);
            }
            keep
        });
        Stats::dec(&stats.devices);
        Stats::inc(&stats.unregistrations);
        Ok(())
    }

    /// Subscribes (`add`) or unsubscribes each token to `topic`; per token, `None` or the
    /// error FCM's Instance ID API reports for it (`NOT_FOUND`, `TOO_MANY_TOPICS`).
    pub fn batch(
        &self,
        topic: &TopicName,
        tokens: &[String],
        add: bool,
        stats: &GatewayStats,
    ) -> Vec<Option<&'static str>> {
        let mut all = write(&self.topics);
        tokens
            .iter()
            .map(|token| {
                if !token::well_formed(token) {
                    return Some("INVALID_ARGUMENT");
                }
                let Some(device) = self.device(token) else {
                    return Some("NOT_FOUND");
                };
                let mut st = device.state();
                if !st.registered {
                    return Some("NOT_FOUND");
                }
                // The topic of the device's own project.
                let project = &device.project;
                if add {
                    if st.topics.contains(topic) {
                        return None;
                    }
                    if st.topics.len() >= self.limits.max_topics_per_device {
                        return Some("TOO_MANY_TOPICS");
                    }
                    st.topics.insert(topic.clone());
                    let topics = all.entry(project.clone()).or_default();
                    Arc::make_mut(topics.entry(topic.clone()).or_default())
                        .insert(device.serial, device.clone());
                    Stats::inc(&stats.subscriptions);
                } else if st.topics.remove(topic) {
                    if let Some(topics) = all.get_mut(project) {
                        if let Some(members) = topics.get_mut(topic) {
                            Arc::make_mut(members).remove(&device.serial);
                            if members.is_empty() {
                                topics.remove(topic);
                            }
                        }
                        if topics.is_empty() {
                            all.remove(project);
                        }
                    }
                    Stats::dec(&stats.subscriptions);
                }
                None
            })
            .collect()
    }

    /// Device group operations (`create`, `add`, `remove`), FCM's `/fcm/notification`.
    /// Returns the group's notification key.
    pub fn group(
        &self,
        project: &str,
        op: &str,
        name: &str,
        key: Option<&str>,
        tokens: &[String],
        stats: &GatewayStats,
    ) -> Result<String, FcmError> {
        let bad = |m: String| FcmError::InvalidArgument(m);
        if tokens.is_empty() {
            return Err(bad("registration_ids must name at least one token".into()));
        }
        for t in tokens {
            token::check(t)?;
        }
        let max = self.limits.max_group_members;
        let mut groups = write(&self.groups);
        // Checked under the groups lock: an unregistration takes it to remove its device from
        // every group, so no member can be left behind that nothing would clean up.
        for t in tokens {
            match self.device(t) {
                None => return Err(FcmError::Unregistered(t.clone())),
                Some(d) if *d.project != *project => {
                    return Err(FcmError::SenderIdMismatch(t.clone(), project.to_owned()))
                }
                Some(_) => {}
            }
        }
        let Groups {
            by_key,
            key_by_name,
        } = &mut *groups;
        match op {
            "create" => {
                if name.is_empty() {
                    return Err(bad("notification_key_name is required".into()));
                }
                if key_by_name
                    .get(project)
                    .is_some_and(|names| names.contains_key(name))
                {
                    return Err(bad(format!(
                        "notification_key_name {name:?} already exists"
                    )));
                }
                if by_key.len() >= self.limits.max_groups {
                    return Err(FcmError::Unavailable(format!(
                        "device group limit reached ({})",
                        self.limits.max_groups
                    )));
                }
                let mut members: Vec<Arc<str>> = Vec::new();
                for t in tokens {
                    if !members.iter().any(|m| **m == **t) {
                        members.push(t.as_str().into());
                    }
                }
                if members.len() > max {
                    return Err(bad(format!("a device group holds at most {max} devices")));
                }
                let key = token::new_group_key()?;
                by_key.insert(
                    key.clone(),
                    Group {
                        project: project.into(),
                        name: name.to_owned(),
                        members,
                    },
                );
                key_by_name
                    .entry(project.into())
                    .or_default()
                    .insert(name.to_owned(), key.clone());
                Stats::inc(&stats.groups);
                Ok(key)
            }
            "add" | "remove" => {
                let key = key
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| bad(format!("{op} needs notification_key")))?;
                let group = by_key
                    .get_mut(key)
                    .ok_or_else(|| FcmError::Unregistered(key.to_owned()))?;
                if *group.project != *project {
                    return Err(FcmError::SenderIdMismatch(
                        key.to_owned(),
                        project.to_owned(),
                    ));
                }
                if !name.is_empty() && group.name != name {
                    return Err(bad(format!(
                        "notification_key_name {name:?} does not match the key's name"
                    )));
                }
                if op == "add" {
                    let mut added: Vec<Arc<str>> = Vec::new();
                    for t in tokens {
                        if !group.members.iter().chain(&added).any(|m| **m == **t) {
                            added.push(t.as_str().into());
                        }
                    }
                    // All or nothing: a refused add changes nothing.
                    if group.members.len() + added.len() > max {
                        return Err(bad(format!("a device group holds at most {max} devices")));
                    }
                    group.members.extend(added);
                } else {
                    group.members.retain(|m| !tokens.iter().any(|t| **t == **m));
                    // FCM deletes a group whose last member is removed.
                    if group.members.is_empty() {
                        if let Some(gone) = by_key.remove(key) {
                            forget_name(key_by_name, &gone.project, &gone.name);
                        }
                        Stats::dec(&stats.groups);
                    }
                }
                Ok(key.to_owned())
            }
            other => Err(bad(format!(
                "operation must be create, add or remove, not {other:?}"
            ))),
        }
    }

    /// The notification key of `project`'s group named `name`.
    pub fn group_key(&self, project: &str, name: &str) -> Option<String> {
        read(&self.groups)
            .key_by_name
            .get(project)
            .and_then(|names| names.get(name))
            .cloned()
    }

    /// The devices a send reaches, and the message's `from`. A token that is neither a device
    /// nor a group is `UNREGISTERED`; a topic or condition nobody matches reaches no one, which
    /// is not an error (as in FCM).
    pub fn recipients(
        &self,
        target: &Target,
        project: &str,
    ) -> Result<(Recipients, String), FcmError> {
        match target {
            Target::Token(token) => {
                let mismatch = || FcmError::SenderIdMismatch(token.clone(), project.to_owned());
                if let Some(d) = self.device(token) {
                    if *d.project != *project {
                        return Err(mismatch());
                    }
                    return Ok((Recipients::Listed(vec![d]), project.to_owned()));
                }
                let groups = read(&self.groups);
                let group = groups
                    .by_key
                    .get(token.as_str())
                    .ok_or_else(|| FcmError::Unregistered(token.clone()))?;
                if *group.project != *project {
                    return Err(mismatch());
                }
                let devices = group
                    .members
                    .iter()
                    .filter_map(|m| self.device(m))
                    .collect();
                Ok((Recipients::Listed(devices), project.to_owned()))
            }
            Target::Topic(topic) => {
                let members = read(&self.topics)
                    .get(project)
                    .and_then(|topics| topics.get(topic))
                    .cloned()
                    .unwrap_or_default();
                Ok((Recipients::Topic(members), format!("/topics/{topic}")))
            }
            Target::Condition(cond) => {
                let candidates: Vec<Arc<Device>> = if cond.matches_outsiders() {
                    let mut all = self.all_devices();
                    all.retain(|d| *d.project == *project);
                    all
                } else {
                    let all = read(&self.topics);
                    let topics = all.get(project);
                    let mut seen: Members = BTreeMap::new();
                    for t in cond.topics() {
                        let members = topics.and_then(|topics| topics.get(t));
                        for (k, d) in members.into_iter().flat_map(|m| m.iter()) {
                            seen.entry(*k).or_insert_with(|| d.clone());
                        }
                    }
                    seen.into_values().collect()
                };
                let devices = candidates
                    .into_iter()
                    .filter(|d| {
                        let st = d.state();
                        cond.matches(&|i| st.topics.contains(&cond.topics()[i]))
                    })
                    .collect();
                Ok((Recipients::Listed(devices), "condition".to_owned()))
            }
        }
    }
}

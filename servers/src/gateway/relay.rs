//! The gateway's shared state: its knobs, devices and quota, and how a send becomes queued,
//! encoded-once messages for every recipient; and the sweeper that expires what waits for
//! offline devices.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::stats::Stats;

use super::error::FcmError;
use super::message::Send;
use super::queue::Queued;
use super::quota::Quota;
use super::registry::{Device, DeviceState, Limits, Registry};
use super::stats::{sub, GatewayStats};

/// How often offline devices' queues are swept for expired messages, so `expired` and `queued`
/// stay current while nobody connects.
const SWEEP: Duration = Duration::from_millis(250);

/// The gateway's knobs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The bearer token app servers must present; `None` accepts any request (say so loudly).
    pub auth_token: Option<String>,
    /// The bearer token a device must present to register (`POST /v1/devices:register`);
    /// `None`: anyone may register, up to `max_devices`.
    pub registration_token: Option<String>,
    /// Sends per minute per project (FCM's default quota is 600,000); 0: no quota.
    pub quota_per_minute: u64,
    /// Messages each device's queue holds (FCM keeps 100 for an offline device).
    pub queue_capacity: usize,
    /// Devices registered at once.
    pub max_devices: usize,
    /// Topics per device (FCM: 2,000).
    pub max_topics_per_device: usize,
    /// Devices per group (FCM: 20).
    pub max_group_members: usize,
    /// Groups at once.
    pub max_groups: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            auth_token: None,
            registration_token: None,
            quota_per_minute: 600_000,
            queue_capacity: 100,
            max_devices: 1_000_000,
            max_topics_per_device: 2000,
            max_group_members: 20,
            max_groups: 100_000,
        }
    }
}

/// The gateway's shared state.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(super) config: GatewayConfig,
    pub(super) registry: Registry,
    quota: Quota,
    pub(super) stats: Arc<GatewayStats>,
    next_message: AtomicU64,
    pub(super) next_session: AtomicU64,
    /// Held exclusively while a send to several devices takes its id and fans out, shared by
    /// sends to one device (see [`Gateway::send`]).
    send_order: std::sync::RwLock<()>,
}

impl Gateway {
    pub(super) fn new(config: GatewayConfig) -> Gateway {
        let limits = Limits {
            max_devices: config.max_devices,
            queue_capacity: config.queue_capacity,
            max_topics_per_device: config.max_topics_per_device,
            max_group_members: config.max_group_members,
            max_groups: config.max_groups,
        };
        Gateway {
            quota: Quota::new(config.quota_per_minute),
            registry: Registry::new(limits),
            stats: Arc::default(),
            next_message: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
            send_order: std::sync::RwLock::new(()),
            config,
        }
    }

    /// The counters.
    pub fn stats(&self) -> &GatewayStats {
        &self.stats
    }

    /// Resolves `send`'s target, queues it, encoded once, for every recipient, and returns its id.
    ///
    /// Ids are given and queued in one order: two sends never reach a device in the opposite
    /// order of their ids (which a device would rightly see as reordering). A send to several
    /// devices takes its id and fans out alone, under `send_order` held exclusively. A send to
    /// one device needs only that device in order: it shares `send_order` with other such sends
    /// and takes its id under the device's own lock, so unicasts to different devices do not
    /// wait for each other.
    ///
    /// The project's quota is charged only here, once the request is valid and its target
    /// resolved: a send refused for its content or an unregistered token costs nothing, as
    /// FCM counts only the sends it accepts.
    pub(super) fn send(&self, project: &str, send: &Send) -> Result<u64, FcmError> {
        let (devices, from) = self.registry.recipients(&send.target, project)?;
        if let Err(retry_after_s) = self.quota.take(project, Instant::now()) {
            Stats::inc(&self.stats.quota_refusals);
            return Err(FcmError::QuotaExceeded {
                project: project.to_owned(),
                per_minute: self.quota.per_minute(),
                retry_after_s,
            });
        }
        Stats::inc(&self.stats.sends);
        if send.validate_only {
            return Ok(self.next_message.fetch_add(1, Ordering::Relaxed));
        }
        Stats::add(&self.stats.targeted, devices.len() as u64);
        let now = Instant::now();
        let sent_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let message = |id| {
            Arc::new(Queued {
                id,
                frame: send.frame(id, &from, sent_ms),
                collapse_key: send.collapse_key.clone(),
                expires: now + send.ttl,
            })
        };
        if let Some(device) = devices.only() {
            let _shared = self
                .send_order
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            let st = device.state();
            let id = self.next_message.fetch_add(1, Ordering::Relaxed);
            let delivered = self.enqueue(device, st, &message(id), now);
            Stats::add(&self.stats.delivered, u64::from(delivered));
            return Ok(id);
        }
        let _alone = self
            .send_order
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        let msg = message(id);
        let delivered = devices
            .iter()
            .filter(|device| self.enqueue(device, device.state(), &msg, now))
            .count();
        Stats::add(&self.stats.delivered, delivered as u64);
        Ok(id)
    }

    /// Queues `msg` for `device`, whose state `st` is locked, and writes it at once if the
    /// device's session gave the send path its socket. Returns whether it wrote it.
    pub(super) fn enqueue(
        &self,
        device: &Device,
        mut st: MutexGuard<'_, DeviceState>,
        msg: &Arc<Queued>,
        now: Instant,
    ) -> bool {
        let s = &self.stats;
        if !st.registered {
            return false;
        }
        let online = st.session.is_some();
        let pushed = st.queue.push(msg.clone(), online, now);
        // Under the device's lock, so an ack or expiry of this very message cannot bring the
        // gauge down before it went up.
        if pushed.queued {
            Stats::inc(&s.queued);
        }
        sub(&s.queued, pushed.collapsed + pushed.overflowed);
        let (written, wake) = match pushed.queued {
            true => st.push_direct(s, now),
            false => (false, false),
        };
        drop(st);
        Stats::add(&s.expired, pushed.expired);
        Stats::add(&s.collapsed, pushed.collapsed);
        Stats::add(&s.overflowed, pushed.overflowed);
        if wake || (pushed.queued && online && !written) {
            device.wake.notify_one();
        }
        written
    }

    /// Expires what waits for offline devices, until `stop`.
    pub(super) async fn sweep(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            for device in self.registry.offline_devices() {
                let mut st = device.state();
                if st.session.is_some() || st.queue.len() == 0 {
                    continue;
                }
                let expired = st.queue.expire(now);
                sub(&self.stats.queued, expired);
                drop(st);
                Stats::add(&self.stats.expired, expired);
            }
        }
    }
}

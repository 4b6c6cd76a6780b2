//! What a run against the FCM-style gateway sends: its project and tokens, whom each event goes
//! to, time to live, acknowledgements, and devices that go offline. A [`crate::target::Target`]
//! carries these to every client, so this file depends on nothing else of the crate.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use serde::{Deserialize, Serialize};

/// The data key that carries the load generator's payload.
pub const PAYLOAD_KEY: &str = "pb";

/// Whom each event is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SendTo {
    /// One send to the run's topic; the gateway fans it out.
    #[default]
    Topic,
    /// One send per device, to its registration token (unicast). The load generator registers
    /// the devices before they connect, so the publisher knows their tokens.
    Token,
}

impl std::str::FromStr for SendTo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "topic" => Ok(SendTo::Topic),
            "token" => Ok(SendTo::Token),
            other => Err(format!(
                "unknown send target {other:?} (expected topic or token)"
            )),
        }
    }
}

/// Some devices go offline during the window, then come back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Offline {
    /// Share of the devices that go offline, from 0 to 1.
    pub fraction: f64,
    /// When they go, after the window opens, in seconds.
    #[serde(with = "crate::load::config::secs")]
    pub at: Duration,
    /// How long they stay away, in seconds.
    #[serde(with = "crate::load::config::secs")]
    pub duration: Duration,
}

impl Offline {
    /// Whether device `index` (of a worker's devices) is one that goes offline: spread evenly.
    pub fn includes(&self, index: usize) -> bool {
        let f = self.fraction.clamp(0.0, 1.0);
        ((index + 1) as f64 * f).floor() > (index as f64 * f).floor()
    }
}

/// How a run against the gateway sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayOptions {
    /// The project in the send path; devices register under it.
    pub project: String,
    /// The app server's bearer token. Never written into a report; worker processes get it
    /// through the environment ([`AUTH_ENV`]).
    #[serde(skip)]
    pub auth_token: Option<String>,
    /// The token devices register with, when the gateway asks for one. Never written into a
    /// report; worker processes get it through the environment ([`REGISTRATION_ENV`]).
    #[serde(skip)]
    pub registration_token: Option<String>,
    /// Topic fan-out, or one send per device.
    pub send_to: SendTo,
    /// `android.ttl` of every message (`None`: the gateway's default, four weeks).
    #[serde(with = "crate::load::config::opt_secs", default)]
    pub ttl: Option<Duration>,
    /// `android.collapse_key` of every message.
    #[serde(default)]
    pub collapse_key: Option<String>,
    /// Send notification messages (with a `notification`) instead of data messages.
    #[serde(default)]
    pub notification: bool,
    /// Devices that go offline for a while.
    #[serde(default)]
    pub offline: Option<Offline>,
    /// Each device acknowledges once per this many messages, all of them at once
    /// (`{"ack_through":N}`), and before it goes offline; 1 acknowledges each message
    /// (`{"ack":N}`). Absent from a report, it is 1: every run before this option existed.
    #[serde(default = "each_message")]
    pub ack_every: u32,
    /// When sending to tokens: the devices the run registered, in order. Device `i` of the run
    /// uses token `i`; the publisher sends each event to every one.
    #[serde(skip)]
    pub tokens: Arc<Vec<String>>,
}

/// How many messages a device acknowledges at once by default: FCM's own clients send a
/// stream ack once 10 messages are unacknowledged (Chromium's GCM client,
/// `google_apis/gcm/engine/mcs_client.cc`, `kUnackedMessageBeforeStreamAck = 10`).
pub const ACK_EVERY: u32 = 10;

fn each_message() -> u32 {
    1
}

/// The environment variable that carries the bearer token to worker processes.
pub const AUTH_ENV: &str = "PUSHBENCH_AUTH_TOKEN";

/// The environment variable that carries the registration token to worker processes.
pub const REGISTRATION_ENV: &str = "PUSHBENCH_REGISTRATION_TOKEN";

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            project: "pushbench".into(),
            auth_token: None,
            registration_token: None,
            send_to: SendTo::Topic,
            ttl: None,
            collapse_key: None,
            notification: false,
            offline: None,
            ack_every: ACK_EVERY,
            tokens: Arc::default(),
        }
    }
}

impl GatewayOptions {
    /// The send path.
    pub fn send_path(&self) -> String {
        format!("/v1/projects/{}/messages:send", self.project)
    }

    /// One send's body: `payload` in `data.pb`, to `to` (`"topic"` or `"token"`) `target`.
    pub fn send_body(&self, to: &str, target: &str, payload: &str) -> Bytes {
        let mut message = serde_json::json!({
            to: target,
            "data": { PAYLOAD_KEY: payload },
        });
        if self.notification {
            message["notification"] = serde_json::json!({ "title": "pushbench" });
        }
        let mut android = serde_json::Map::new();
        if let Some(ttl) = self.ttl {
            android.insert("ttl".into(), format!("{:.3}s", ttl.as_secs_f64()).into());
        }
        if let Some(key) = &self.collapse_key {
            android.insert("collapse_key".into(), key.clone().into());
        }
        if !android.is_empty() {
            message["android"] = android.into();
        }
        Bytes::from(serde_json::json!({ "message": message }).to_string())
    }
}

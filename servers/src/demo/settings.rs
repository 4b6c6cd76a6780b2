//! The demo's three knobs (publish rate, payload size, poll interval), their limits, and the
//! JSON body of `POST /demo/config` that changes them.
//!
//! The limits keep a browser tab responsive: five clients each parse every event, so the rate
//! and the payload size are capped well below what the servers themselves handle.

use serde::{Deserialize, Serialize};

/// The topic the demo publishes to and the page subscribes to.
pub const TOPIC: &str = "demo";

/// Highest publish rate, in events per second.
pub const MAX_RATE: f64 = 100.0;
/// Smallest payload: the publish time in its JSON envelope, `{"sent":<13 digits>,"pad":"x"}`.
pub const MIN_PAYLOAD_BYTES: usize = 32;
/// Largest payload.
pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;
/// Shortest poll interval, in milliseconds.
pub const MIN_POLL_INTERVAL_MS: u64 = 50;
/// Longest poll interval, in milliseconds.
pub const MAX_POLL_INTERVAL_MS: u64 = 10_000;

/// What the demo's publisher and the page's polling client do now.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Settings {
    rate: f64,
    payload_bytes: usize,
    poll_interval_ms: u64,
}

/// A setting outside its limits, or a control body that is not the expected JSON.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SettingsError {
    /// The publish rate is out of range.
    #[error("rate must be a number of events per second from 0 (paused) to {MAX_RATE}, got {0}")]
    Rate(f64),
    /// The payload size is out of range.
    #[error("payload_bytes must be from {MIN_PAYLOAD_BYTES} to {MAX_PAYLOAD_BYTES}, got {0}")]
    PayloadBytes(usize),
    /// The poll interval is out of range.
    #[error(
        "poll_interval_ms must be from {MIN_POLL_INTERVAL_MS} to {MAX_POLL_INTERVAL_MS}, got {0}"
    )]
    PollInterval(u64),
    /// The body is not a JSON object of known settings.
    #[error("expected a JSON object with any of rate, payload_bytes, poll_interval_ms: {0}")]
    Body(String),
}

impl Default for Settings {
    /// Slow enough to read each event as it arrives, with polling at one second.
    fn default() -> Self {
        Settings {
            rate: 2.0,
            payload_bytes: 64,
            poll_interval_ms: 1000,
        }
    }
}

/// The body of `POST /demo/config`: any subset of the settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    rate: Option<f64>,
    payload_bytes: Option<usize>,
    poll_interval_ms: Option<u64>,
}

impl Settings {
    /// Checked settings: `rate` events per second (0 pauses the publisher), payloads of
    /// `payload_bytes`, and the page's short polling every `poll_interval_ms`.
    pub fn new(
        rate: f64,
        payload_bytes: usize,
        poll_interval_ms: u64,
    ) -> Result<Settings, SettingsError> {
        if !(rate.is_finite() && (0.0..=MAX_RATE).contains(&rate)) {
            return Err(SettingsError::Rate(rate));
        }
        if !(MIN_PAYLOAD_BYTES..=MAX_PAYLOAD_BYTES).contains(&payload_bytes) {
            return Err(SettingsError::PayloadBytes(payload_bytes));
        }
        if !(MIN_POLL_INTERVAL_MS..=MAX_POLL_INTERVAL_MS).contains(&poll_interval_ms) {
            return Err(SettingsError::PollInterval(poll_interval_ms));
        }
        Ok(Settings {
            rate,
            payload_bytes,
            poll_interval_ms,
        })
    }

    /// Events published per second; 0 when paused.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Bytes of each published payload.
    pub fn payload_bytes(&self) -> usize {
        self.payload_bytes
    }

    /// The page's short-polling interval, in milliseconds.
    pub fn poll_interval_ms(&self) -> u64 {
        self.poll_interval_ms
    }

    /// These settings with the changes in a `POST /demo/config` body applied and checked.
    pub fn updated(&self, body: &[u8]) -> Result<Settings, SettingsError> {
        let update: Update =
            serde_json::from_slice(body).map_err(|e| SettingsError::Body(e.to_string()))?;
        Settings::new(
            update.rate.unwrap_or(self.rate),
            update.payload_bytes.unwrap_or(self.payload_bytes),
            update.poll_interval_ms.unwrap_or(self.poll_interval_ms),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(Settings::new(0.0, 32, 50).is_ok());
        assert!(Settings::new(MAX_RATE, MAX_PAYLOAD_BYTES, MAX_POLL_INTERVAL_MS).is_ok());
        assert_eq!(
            Settings::new(-1.0, 64, 1000),
            Err(SettingsError::Rate(-1.0))
        );
        assert!(Settings::new(f64::NAN, 64, 1000).is_err());
        assert!(Settings::new(f64::INFINITY, 64, 1000).is_err());
        assert_eq!(
            Settings::new(1.0, 31, 1000),
            Err(SettingsError::PayloadBytes(31))
        );
        assert_eq!(
            Settings::new(1.0, 64, 49),
            Err(SettingsError::PollInterval(49))
        );
    }

    #[test]
    fn updates_change_only_what_they_name() {
        let s = Settings::default();
        let u = s.updated(br#"{"rate":10.5}"#).unwrap();
        assert_eq!(u.rate(), 10.5);
        assert_eq!(u.payload_bytes(), s.payload_bytes());
        assert_eq!(s.updated(b"{}").unwrap(), s);
        for bad in [
            &b"not json"[..],
            br#"{"rate":"fast"}"#,
            br#"{"speed":1}"#,
            br#"{"payload_bytes":-5}"#,
            br#"[1]"#,
            br#"{"rate":1000}"#,
        ] {
            assert!(s.updated(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

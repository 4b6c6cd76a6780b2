//! The per-project send quota: a token bucket holding one minute's worth of sends, refilled
//! continuously, as FCM's per-minute quota behaves for a steady sender.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Projects tracked at once; past this, buckets that are full (idle) are forgotten first.
const MAX_PROJECTS: usize = 10_000;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Send quotas of every project.
#[derive(Debug)]
pub struct Quota {
    per_minute: u64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quota {
    /// `per_minute` sends per project; 0 means no quota.
    pub fn new(per_minute: u64) -> Quota {
        Quota {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The quota per minute (0: none).
    pub fn per_minute(&self) -> u64 {
        self.per_minute
    }

    /// Takes one send from `project`'s bucket: `Err(seconds until one is available)` when it is
    /// empty.
    pub fn take(&self, project: &str, now: Instant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let cap = self.per_minute as f64;
        let per_sec = cap / 60.0;
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_PROJECTS && !buckets.contains_key(project) {
            buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * per_sec < cap);
        }
        let b = buckets.entry(project.to_owned()).or_insert(Bucket {
            tokens: cap,
            at: now,
        });
        b.tokens =
            (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_sec).min(cap);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        Err(((1.0 - b.tokens) / per_sec).ceil().max(1.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_per_project() {
        let q = Quota::new(60);
        let t = Instant::now();
        for _ in 0..60 {
            q.take("a", t).unwrap();
        }
        assert_eq!(q.take("a", t), Err(1));
        q.take("b", t).unwrap();
        q.take("a", t + Duration::from_secs(1)).unwrap();
        assert!(Quota::new(0).take("a", t).is_ok());
    }
}

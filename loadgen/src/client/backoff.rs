//! How long a client waits before each reconnect attempt: the same delay every time, or
//! exponential backoff with full jitter.
//!
//! Why both: after a mass disconnect (a load balancer restarts, a server drops every
//! connection) clients that all wait the same fixed delay come back in one wave, a thundering
//! herd that meets the server's accept queue all at once. Full jitter (a uniform random wait
//! between zero and an exponentially growing cap, as in "Exponential Backoff And Jitter", AWS
//! Architecture Blog, 2015) spreads the wave out. The suite's `[faults]` measures both.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The reconnect policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// The reconnect delay before every attempt.
    #[default]
    Fixed,
    /// Before attempt `n` (0 after the connection was lost, 1 after one failed attempt, ...),
    /// a uniform random wait in `[0, min(max, delay × 2^n)]`.
    Jitter,
}

impl Backoff {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Backoff::Fixed => "fixed",
            Backoff::Jitter => "jitter",
        }
    }

    /// The wait before attempt `attempt` (0-based: failed attempts so far), with `delay` the
    /// base and `max` the cap of the jittered policy.
    pub fn wait(self, delay: Duration, max: Duration, attempt: u32) -> Duration {
        match self {
            Backoff::Fixed => delay,
            Backoff::Jitter => {
                let cap = delay.saturating_mul(1 << attempt.min(20)).min(max);
                let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
                Duration::from_nanos(uniform(nanos))
            }
        }
    }
}

impl std::str::FromStr for Backoff {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fixed" => Ok(Backoff::Fixed),
            "jitter" => Ok(Backoff::Jitter),
            other => Err(format!(
                "unknown reconnect backoff {other:?} (expected fixed or jitter)"
            )),
        }
    }
}

/// A uniform random number in `0..=max`. The OS's generator: one call per reconnect attempt
/// is nothing beside the connect it delays, and it needs no state per client.
fn uniform(max: u64) -> u64 {
    if max == 0 {
        return 0;
    }
    let r = getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, RandomState};
        RandomState::new().hash_one(std::time::Instant::now())
    });
    // Caps are minutes at most (under 2^40 ns), so the modulo's bias is under 2^-24.
    r % (max + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_waits_the_delay_and_jitter_stays_under_a_growing_cap() {
        let (d, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(Backoff::Fixed.wait(d, max, 5), d);
        for attempt in 0..8 {
            let cap = (d * (1 << attempt)).min(max);
            let waits: Vec<_> = (0..200)
                .map(|_| Backoff::Jitter.wait(d, max, attempt))
                .collect();
            assert!(waits.iter().all(|w| *w <= cap), "attempt {attempt}");
            // Spread out, not bunched at the cap: some in each half.
            assert!(waits.iter().any(|w| *w < cap / 2), "attempt {attempt}");
            assert!(waits.iter().any(|w| *w > cap / 2), "attempt {attempt}");
        }
        assert_eq!(Backoff::Jitter.wait(Duration::ZERO, max, 3), Duration::ZERO);
        assert_eq!("jitter".parse(), Ok(Backoff::Jitter));
        assert!("sometimes".parse::<Backoff>().is_err());
    }
}

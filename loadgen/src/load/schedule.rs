//! When to publish: the open-loop schedule. Event `k` is due at `start + k / rate`, whatever
//! happened to the events before it, so a slow server cannot slow the offered load down and
//! hide its own latency (coordinated omission).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Links the monotonic clock used for timing to the wall clock written into payloads, once,
/// so every instant in a run converts to Unix time the same way.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    unix_ns: u64,
}

impl Clock {
    /// Reads both clocks now.
    pub fn now() -> Clock {
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Clock {
            instant: Instant::now(),
            unix_ns,
        }
    }

    /// The instant at `unix_ns` ns since the Unix epoch (the inverse of [`Clock::unix_ns`]), for
    /// instants another process sends.
    pub fn instant_at(&self, unix_ns: u64) -> Instant {
        if unix_ns >= self.unix_ns {
            self.instant + Duration::from_nanos(unix_ns - self.unix_ns)
        } else {
            self.instant
                .checked_sub(Duration::from_nanos(self.unix_ns - unix_ns))
                .unwrap_or(self.instant)
        }
    }

    /// `at` as ns since the Unix epoch.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.unix_ns + d.as_nanos() as u64,
            None => self
                .unix_ns
                .saturating_sub(self.instant.duration_since(at).as_nanos() as u64),
        }
    }
}

/// The publish schedule of one run.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// When event 0 is due.
    pub start: Instant,
    /// Events per second; 0 for an idle run.
    pub rate: f64,
    /// The warm-up as asked for (an idle run has no events to count it in).
    pub warmup: Duration,
    /// The window as asked for.
    pub window: Duration,
    /// Events due before the measurement window (warm-up).
    pub warmup_events: u64,
    /// Events due inside the measurement window.
    pub window_events: u64,
}

impl Schedule {
    /// A schedule of `warmup` then `window` at `rate` events/s from `start`.
    pub fn new(start: Instant, rate: f64, warmup: Duration, window: Duration) -> Schedule {
        // Rate 0 is an idle run: nothing is published, the window still lasts `window`.
        let (warmup_events, window_events) = if rate > 0.0 {
            (
                (warmup.as_secs_f64() * rate).ceil() as u64,
                ((window.as_secs_f64() * rate).round() as u64).max(1),
            )
        } else {
            (0, 0)
        };
        Schedule {
            start,
            rate,
            warmup,
            window,
            warmup_events,
            window_events,
        }
    }

    /// When event `k` is due.
    pub fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }

    /// Whether nothing is published (rate 0).
    pub fn idle(&self) -> bool {
        self.window_events == 0
    }

    /// All events, warm-up and window.
    pub fn total_events(&self) -> u64 {
        self.warmup_events + self.window_events
    }

    /// Whether event `k` counts in the measurement.
    pub fn in_window(&self, k: u64) -> bool {
        k >= self.warmup_events && k < self.total_events()
    }

    /// When the window opens (event `warmup_events` is due).
    pub fn window_start(&self) -> Instant {
        if self.idle() {
            return self.start + self.warmup;
        }
        self.due(self.warmup_events)
    }

    /// When the last event is due (an idle run: when its window ends).
    pub fn last_due(&self) -> Instant {
        if self.idle() {
            return self.window_start() + self.window;
        }
        self.due(self.total_events() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_open_loop() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 100.0, Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(s.warmup_events, 100);
        assert_eq!(s.window_events, 200);
        assert_eq!(s.due(0), t0);
        assert_eq!(s.due(150), t0 + Duration::from_millis(1500));
        assert!(!s.in_window(99) && s.in_window(100) && s.in_window(299) && !s.in_window(300));
        // A fractional rate still schedules exactly.
        let s = Schedule::new(t0, 0.5, Duration::ZERO, Duration::from_secs(10));
        assert_eq!(s.window_events, 5);
        assert_eq!(s.due(3), t0 + Duration::from_secs(6));
    }

    #[test]
    fn an_idle_schedule_has_a_window_but_no_events() {
        let t0 = Instant::now();
        let s = Schedule::new(t0, 0.0, Duration::from_secs(1), Duration::from_secs(5));
        assert!(s.idle());
        assert_eq!(s.total_events(), 0);
        assert_eq!(s.window_start(), t0 + Duration::from_secs(1));
        assert_eq!(s.last_due(), t0 + Duration::from_secs(6));
    }

    #[test]
    fn clock_converts_both_ways() {
        let c = Clock::now();
        let later = c.instant + Duration::from_millis(5);
        assert_eq!(c.unix_ns(later), c.unix_ns + 5_000_000);
        assert_eq!(c.instant_at(c.unix_ns + 5_000_000), later);
    }
}

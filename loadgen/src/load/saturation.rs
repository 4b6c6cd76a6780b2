//! Whether the load generator kept up with what it measured, judged from signs it gathered in
//! the window, and why not in words.
//!
//! Why these signs: the generator's limit must never be published as the server's, and it
//! distorts a figure in only a few ways. Its subscribers' CPU says whether it had room at all
//! (it runs on cores of its own, so that is the whole of its effect on the server's CPU).
//! Past that, it matters what each transport waits on:
//! - short polling sends its polls on timers, so a timer that fired late is a late poll, and
//!   latency grows with it;
//! - a long poll sends its next request right after the read that completed the answer. When
//!   that request went out late ([`LATE_READ`] after the answer arrived), every event fetched
//!   by it that was due before it went out waited for the load generator; those deliveries are
//!   counted one by one (`waited_for_generator`). Late reads alone say less: in a burst of
//!   thousands of answers the last ones are read late as a matter of course, and at one event
//!   a second no event comes while they are;
//! - a stream, an SSE or a WebSocket subscription sends nothing back that the server waits
//!   for, and each delivery is timed by its kernel arrival stamp (`client/arrival.rs`), which no
//!   lateness of the reader moves. Late reads would matter only once the unread bytes filled the
//!   socket's buffer and held the server's writes back, which takes a backlog of seconds at the
//!   suite's rates, and only a generator out of CPU builds one. A gateway device's acks are
//!   such replies too: the gateway writes on without waiting for them (docs/GATEWAY.md §6),
//!   and only a queue of 100 unacked messages would make it drop one, which counts as lost.
//!
//! Late reads and late timers are reported for every run all the same (`late_reads`,
//! `loadgen.loop_lag_us`). On this machine about 1% of reads in a 1,000-subscriber fan-out come
//! over 5 ms late whether the reader is the readiness loop, a task per subscriber or a loop that
//! never pauses: the virtual CPU stalls, and the server's core with it.

use pushbench_protocol::Transport;

use crate::client::LATE_READ;

/// The subscribers' share of the usable cores past which the generator had no room left.
const CPU_SATURATED: f64 = 0.8;
/// Timer lateness (p99, µs) past which polls went out late: the same bound as a late read.
pub(super) const LAG_SATURATED_US: u64 = LATE_READ.as_micros() as u64;
/// The share of deliveries that may have waited for the load generator before the run is
/// flagged: past it, the p99 latency may be partly the generator's.
const WAITED_SATURATED: f64 = 0.01;

/// What the window showed of the generator's own health.
#[derive(Debug, Clone, Copy)]
pub(super) struct Signs {
    pub transport: Transport,
    /// Its subscribers' CPU over the window and its usable cores.
    pub subscriber_util: f64,
    pub cores: usize,
    /// First deliveries, and those of them that waited for a late request.
    pub delivered: u64,
    pub waited_for_generator: u64,
    /// How late its timers fired at p99, µs.
    pub loop_lag_p99_us: u64,
}

/// Whether the generator may have limited the run; each reason is pushed to `warnings`.
pub(super) fn judge(s: &Signs, warnings: &mut Vec<String>) -> bool {
    let busy = s.subscriber_util > CPU_SATURATED;
    if busy {
        warnings.push(format!(
            "the load generator's subscribers used {:.0}% of its {} usable core(s): it may \
             have been the bottleneck, so these latencies may not be the server's",
            s.subscriber_util * 100.0,
            s.cores
        ));
    }
    let waited = if s.delivered == 0 {
        0.0
    } else {
        s.waited_for_generator as f64 / s.delivered as f64
    };
    let requests_late = waited > WAITED_SATURATED;
    if requests_late {
        warnings.push(format!(
            "{:.1}% of deliveries waited for the load generator: it sent the long polls that \
             fetched them more than {} ms after the answers before them arrived, and the events \
             were due by then",
            waited * 100.0,
            LATE_READ.as_millis()
        ));
    }
    let timers_late = s.transport == Transport::Poll && s.loop_lag_p99_us > LAG_SATURATED_US;
    if timers_late {
        warnings.push(format!(
            "load generator timers ran {:.1} ms late at p99: its polls went out late",
            s.loop_lag_p99_us as f64 / 1000.0
        ));
    }
    busy || requests_late || timers_late
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signs(transport: Transport) -> Signs {
        Signs {
            transport,
            subscriber_util: 0.4,
            cores: 1,
            delivered: 10_000,
            waited_for_generator: 50,
            loop_lag_p99_us: 7_000,
        }
    }

    #[test]
    fn late_timers_flag_polling_only() {
        let mut w = Vec::new();
        assert!(!judge(&signs(Transport::Stream), &mut w), "{w:?}");
        assert!(!judge(&signs(Transport::LongPoll), &mut w), "{w:?}");
        assert!(w.is_empty());
        assert!(judge(&signs(Transport::Poll), &mut w));
        assert!(w[0].contains("7.0 ms late"), "{w:?}");
    }

    #[test]
    fn more_than_one_delivery_in_a_hundred_waiting_for_it_flags_the_run() {
        let waited = |t: Transport, n: u64| Signs {
            waited_for_generator: n,
            loop_lag_p99_us: 0,
            ..signs(t)
        };
        let mut w = Vec::new();
        assert!(judge(&waited(Transport::LongPoll, 101), &mut w));
        assert!(
            w[0].starts_with("1.0% of deliveries waited for the load generator"),
            "{w:?}"
        );
        assert!(!judge(&waited(Transport::LongPoll, 100), &mut Vec::new()));
    }

    #[test]
    fn a_busy_core_flags_whatever_the_rest() {
        let s = Signs {
            subscriber_util: 0.85,
            waited_for_generator: 0,
            loop_lag_p99_us: 0,
            ..signs(Transport::Ws)
        };
        let mut w = Vec::new();
        assert!(judge(&s, &mut w));
        assert!(w[0].contains("85%"), "{w:?}");
    }
}

//! [`Timers`]: the readiness loop's queue of subscriptions to drive at a given time.
//!
//! Why not just a binary heap: at 10,000 polling subscribers the loop sets 10,000 timers a
//! second, and a heap of that size costs a dozen cache-missing comparisons per pop (4% of the
//! loop's time when measured). Yet in the steady state timers come in order: every poll is due
//! one interval after the last, every long poll's deadline a fixed time after its start. So
//! timers set in order (or nearly) go to a plain FIFO, and only those that are not (the random
//! first phases, mostly) go to a heap; the earlier of the two fronts comes out first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

/// How far from the FIFO's back a timer may go into it.
const NEAR: usize = 32;

/// Timers of `(due, slot)`, earliest first.
#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Timers set in due order.
    fifo: VecDeque<(Instant, usize)>,
    /// The rest.
    heap: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl Timers {
    /// Adds a timer.
    pub(super) fn push(&mut self, at: Instant, slot: usize) {
        // Nearly in order is the common case too (the answers of one batch of polls are read
        // in the order the kernel reports them, not in the order they were sent), so a timer
        // a few places out goes into its place in the FIFO.
        let len = self.fifo.len();
        let place = (0..len.min(NEAR))
            .map(|back| len - back)
            .find(|&i| self.fifo[i - 1].0 <= at);
        match place {
            Some(i) => self.fifo.insert(i, (at, slot)),
            None if len == 0 => self.fifo.push_back((at, slot)),
            None => self.heap.push(Reverse((at, slot))),
        }
    }

    /// When the earliest timer is due.
    pub(super) fn next(&self) -> Option<Instant> {
        match (self.fifo.front(), self.heap.peek()) {
            (Some(&(a, _)), Some(&Reverse((b, _)))) => Some(a.min(b)),
            (Some(&(a, _)), None) => Some(a),
            (None, Some(&Reverse((b, _)))) => Some(b),
            (None, None) => None,
        }
    }

    /// Takes the earliest timer if it is due by `by`.
    pub(super) fn pop_due(&mut self, by: Instant) -> Option<(Instant, usize)> {
        let from_fifo = match (self.fifo.front(), self.heap.peek()) {
            (Some(&(a, _)), Some(&Reverse((b, _)))) => a <= b,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return None,
        };
        if from_fifo {
            let &(at, _) = self.fifo.front()?;
            (at <= by).then(|| self.fifo.pop_front()).flatten()
        } else {
            let &Reverse((at, _)) = self.heap.peek()?;
            (at <= by)
                .then(|| self.heap.pop().map(|Reverse(t)| t))
                .flatten()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_whichever_order_they_came_in() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        for (ms, slot) in [(5, 0), (3, 1), (7, 2), (9, 3), (1, 4), (9, 5)] {
            timers.push(at(ms), slot);
        }
        // Then many in order, and one far before them: to the heap.
        for ms in 100..200 {
            timers.push(at(ms), 9);
        }
        timers.push(at(2), 7);
        assert!(timers.heap.len() + timers.fifo.len() == 107 && timers.heap.len() <= 3);
        assert_eq!(timers.next(), Some(at(1)));
        assert_eq!(timers.pop_due(at(0)), None);
        let mut order = Vec::new();
        while let Some((_, slot)) = timers.pop_due(at(8)) {
            order.push(slot);
        }
        assert_eq!(order, [4, 7, 1, 0, 2]);
        assert_eq!(timers.next(), Some(at(9)));
        timers.push(at(8), 6);
        assert_eq!(timers.pop_due(at(100)).map(|t| t.1), Some(6));
        assert_eq!(timers.pop_due(at(100)).map(|t| t.0), Some(at(9)));
        assert_eq!(timers.pop_due(at(100)).map(|t| t.0), Some(at(9)));
        assert_eq!(timers.pop_due(at(100)).map(|t| t.0), Some(at(100)));
        let rest = std::iter::from_fn(|| timers.pop_due(at(1000))).count();
        assert_eq!(rest, 99);
    }
}

//! What a subscriber does with each item its client yields: one function shared by the
//! subscriber's task ([`super::worker`]) and the readiness loop ([`super::hot`]), so a
//! delivery is judged the same way wherever it was read.

use std::time::Instant;

use super::messages::WorkerPlan;
use super::recorder::{Outcome, Recorder, Track};
use crate::client::Item;
use crate::error::ClientError;

/// Errors in a row after which a client stops trying (its remaining events count as lost).
const MAX_ERRORS_IN_A_ROW: u32 = 20;

/// One subscriber's own accounting. It moves with the subscriber between its task and the
/// readiness loop.
#[derive(Debug)]
pub(super) struct SubState {
    /// Which window events it got, in what order.
    pub track: Track,
    /// Failures since its last event or gap.
    pub errors_in_a_row: u32,
}

impl SubState {
    pub(super) fn new(plan: &WorkerPlan) -> Self {
        SubState {
            track: Track::new(plan.window_events),
            errors_in_a_row: 0,
        }
    }
}

/// What [`account`] made of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Accounted {
    /// The first delivery of a window event.
    First,
    /// Anything else worth going on after: a duplicate, an event outside the window, a gap,
    /// an error the client recovers from.
    Noted,
    /// The subscriber is done: a fatal error, or too many in a row (counted as a lost client).
    Stop,
}

/// Accounts one item. `held` is a gateway device's offline period in Unix ns, if it had one:
/// a first delivery of an event that fell due then is recorded apart as well.
pub(super) fn account(
    plan: &WorkerPlan,
    rec: &mut Recorder,
    state: &mut SubState,
    item: Result<Item, ClientError>,
    held: Option<(u64, u64)>,
) -> Accounted {
    match item {
        Ok(Item::Event(d)) => {
            state.errors_in_a_row = 0;
            let window = (plan.warmup_events, plan.window_events);
            let outcome = rec.delivery(
                &mut state.track,
                window,
                &plan.clock,
                d.id,
                &d.payload,
                d.received,
            );
            if outcome != Outcome::First {
                return Accounted::Noted;
            }
            if let Some(period) = held {
                rec.held(&plan.clock, &d.payload, d.received, period);
            }
            if let Some(asked) = d.asked_late {
                rec.asked_late(&plan.clock, &d.payload, asked);
            }
            Accounted::First
        }
        Ok(Item::Gap { from, to }) => {
            state.errors_in_a_row = 0;
            rec.gaps += 1;
            rec.gap_events += to.saturating_sub(from) + 1;
            Accounted::Noted
        }
        // Loss is judged by payload, not id, so a restart needs no more than this: the ids that
        // follow are not out of order, only of a new life. What the last life published and
        // this client never got stays lost.
        Ok(Item::Reset { .. }) => {
            state.errors_in_a_row = 0;
            rec.resets += 1;
            state.track.restart_order();
            Accounted::Noted
        }
        Err(err) => {
            rec.error(&err);
            state.errors_in_a_row += 1;
            let fatal = matches!(
                err,
                ClientError::TooManyReconnects { .. }
                    | ClientError::Closed
                    | ClientError::Unsupported(_)
            );
            if fatal || state.errors_in_a_row >= MAX_ERRORS_IN_A_ROW {
                rec.clients_lost += 1;
                return Accounted::Stop;
            }
            Accounted::Noted
        }
    }
}

/// Microseconds from `since` to `now`, at least 1 (a histogram's floor).
pub(super) fn lag_us(now: Instant, since: Instant) -> u64 {
    (now.saturating_duration_since(since).as_micros() as u64).max(1)
}

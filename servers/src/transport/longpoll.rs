//! Long polling: `GET /longpoll?topic=T&after=ID&timeout_ms=MS` is held until an event exists
//! after ID or the timeout passes, then answers like a short poll.
//!
//! A poll is checked and read first ([`start`]); only one that finds nothing is held
//! ([`Hold`]). hyper answers through [`handle`]; a connection whose requests are all long
//! polls is answered by [`crate::lean`] with the same two steps, so that a held poll keeps
//! neither hyper's buffers nor the request.

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use tokio::time::Instant;

use crate::http::{ApiError, Body, Query};
use crate::hub::{Batch, Waiter};
use crate::protocol::Cursor;
use crate::state::App;
use crate::stats::GaugeGuard;

use super::poll::batch_response;

/// A long poll, checked and read once.
pub(crate) enum Start {
    /// Events (or a gap) are there already, or the client asked not to wait: answer now.
    Now(Batch),
    /// Nothing yet: hold the request.
    Hold(Hold),
}

/// A held long poll: what it waits for, and for how long.
pub(crate) struct Hold {
    waiter: Waiter,
    topic: String,
    after: u64,
    /// When the poll answers empty; a deadline, so a wait cut short and begun again keeps it.
    deadline: Instant,
    /// Keeps `subscribers_open` up while the poll is held.
    _open: GaugeGuard,
}

/// Checks `query` and reads what is there.
pub(crate) fn start(app: &App, query: Query) -> Result<Start, ApiError> {
    let max = app.config.longpoll_max_timeout;
    let timeout = match query.timeout_ms {
        None => app.config.longpoll_default_timeout,
        Some(ms) if Duration::from_millis(ms) > max => {
            return Err(ApiError::BadRequest(format!(
                "timeout_ms must be at most {}",
                max.as_millis()
            )))
        }
        Some(ms) => Duration::from_millis(ms),
    };
    let hub = &app.hub;
    let batch = hub.read(&query.topic, query.after, app.config.max_batch)?;
    // A reset answers at once too: the client must hear of the new life before it waits in it.
    if !batch.events.is_empty() || batch.gap.is_some() || batch.reset || timeout.is_zero() {
        return Ok(Start::Now(batch));
    }
    // Watching from the batch's last id cannot miss an event published since the read, because
    // the waiter sees it as already there. The waiter counts no gaps: only the read that
    // answers does, so nothing is counted twice.
    let waiter = hub.watch(&query.topic, batch.last_id)?;
    Ok(Start::Hold(Hold {
        waiter,
        topic: query.topic,
        after: batch.last_id,
        deadline: Instant::now() + timeout,
        _open: GaugeGuard::new(hub.stats().clone(), |s| &s.subscribers_open),
    }))
}

impl Hold {
    /// The id the poll waits after.
    pub(crate) fn after(&self) -> u64 {
        self.after
    }

    /// How long the poll is still held before it answers empty.
    pub(crate) fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits for an event after the cursor, or for the deadline. Cancel-safe.
    pub(crate) async fn wait(&mut self) {
        tokio::select! {
            () = self.waiter.ready() => {}
            () = tokio::time::sleep_until(self.deadline) => {}
        }
    }

    /// What the poll answers once [`Hold::wait`] is over.
    pub(crate) fn answer(self, app: &App) -> Result<Batch, ApiError> {
        Ok(app.hub.read(
            &self.topic,
            Some(Cursor::bare(self.after)),
            app.config.max_batch,
        )?)
    }
}

pub(crate) async fn handle(app: &Arc<App>, query: Query) -> Result<Response<Body>, ApiError> {
    let batch = match start(app, query)? {
        Start::Now(batch) => batch,
        Start::Hold(mut hold) => {
            // A held poll answers (empty) at shutdown instead of being cut.
            tokio::select! {
                () = hold.wait() => {}
                () = app.shutdown.cancelled() => {}
            }
            hold.answer(app)?
        }
    };
    Ok(batch_response(&batch))
}

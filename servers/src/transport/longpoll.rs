//! Long polling: `GET /longpoll?topic=T&after=ID&timeout_ms=MS` is held until an event exists
//! after ID or the timeout passes, then answers like a short poll.

use std::sync::Arc;
use std::time::Duration;

use http::Response;

use crate::app::App;
use crate::http::{ApiError, Body, Query};
use crate::protocol::Transport;
use crate::stats::GaugeGuard;

use super::poll::batch_response;

super::transport_server!(Transport::LongPoll);

pub(crate) async fn handle(app: &Arc<App>, query: Query) -> Result<Response<Body>, ApiError> {
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
    if !batch.events.is_empty() || batch.gap.is_some() || timeout.is_zero() {
        return Ok(batch_response(&batch));
    }
    // Nothing yet: hold the request. Watching from the batch's last id cannot miss an event
    // published since the read, because the waiter sees it as already there. The waiter counts
    // no gaps: only the read that answers does, so nothing is counted twice.
    let mut waiter = hub.watch(&query.topic, batch.last_id)?;
    let _open = GaugeGuard::new(hub.stats().clone(), |s| &s.subscribers_open);
    tokio::select! {
        () = waiter.ready() => {}
        () = tokio::time::sleep(timeout) => {}
        // A held poll answers (empty) at shutdown instead of being cut.
        () = app.shutdown.cancelled() => {}
    }
    let batch = hub.read(&query.topic, Some(batch.last_id), app.config.max_batch)?;
    Ok(batch_response(&batch))
}

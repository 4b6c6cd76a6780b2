//! The endless response body of a streaming subscriber (HTTP streaming and SSE).
//!
//! The body pulls from the hub only when hyper asks for the next frame, that is when the socket
//! has taken the previous one, so a slow reader builds no queue in this process: its cursor just
//! falls behind in the shared replay buffer until the hub's slow-subscriber policy applies.
//! A reader that stops altogether never lets the body be polled again, so no policy can see it;
//! the socket's write timeout (`crate::write_timeout`) cuts that connection instead.

use std::convert::Infallible;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::Response;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::framing::Framing;
use crate::http::Body;
use crate::hub::Subscription;
use crate::state::App;
use crate::stats::GaugeGuard;

/// A streaming subscription opened, before anything is written: what a transport answers with,
/// through hyper ([`Opened::into_response`]) or without it ([`crate::lean`]).
pub(crate) struct Opened {
    pub sub: Subscription,
    pub framing: Framing,
    /// Sent before the first item (the SSE `retry:` hint).
    pub preamble: Option<Bytes>,
    /// The response's status and headers.
    pub head: Response<()>,
    /// Keeps `subscribers_open` up while the subscription lives.
    pub open: GaugeGuard,
}

impl Opened {
    /// `sub`, to be answered with `head` and then `framing`'s items.
    pub(crate) fn new(
        app: &App,
        sub: Subscription,
        framing: Framing,
        preamble: Option<Bytes>,
        head: Response<()>,
    ) -> Opened {
        Opened {
            sub,
            framing,
            preamble,
            head,
            open: GaugeGuard::new(app.hub.stats().clone(), |s| &s.subscribers_open),
        }
    }

    /// The subscription as hyper's response: its head and an endless body.
    pub(crate) fn into_response(self, app: &App) -> Response<Body> {
        let body = subscriber_body(
            self.sub,
            self.framing,
            self.preamble,
            app.config.keepalive,
            &app.shutdown,
            self.open,
        );
        self.head.map(|()| body)
    }
}

struct State {
    sub: Subscription,
    framing: Framing,
    /// Sent before the first item (the SSE `retry:` hint).
    preamble: Option<Bytes>,
    /// Registered once, not per frame: a fresh `cancelled()` per event would lock the token's
    /// waiter list for every delivery.
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    keepalive: Interval,
    /// Keeps `subscribers_open` up while the body lives.
    _open: GaugeGuard,
}

/// A body that streams `sub` until shutdown or until the hub disconnects it as slow.
fn subscriber_body(
    sub: Subscription,
    framing: Framing,
    preamble: Option<Bytes>,
    keepalive: Duration,
    shutdown: &CancellationToken,
    open: GaugeGuard,
) -> Body {
    let mut ticker = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = State {
        sub,
        framing,
        preamble,
        shutdown: Box::pin(shutdown.clone().cancelled_owned()),
        keepalive: ticker,
        _open: open,
    };
    let frames = stream::unfold(state, |mut st| async move {
        if let Some(p) = st.preamble.take() {
            return Some((Ok(Frame::data(p)), st));
        }
        let bytes = tokio::select! {
            biased;
            () = &mut st.shutdown => return None,
            item = st.sub.next() => match item {
                Ok(item) => (st.framing.encode)(&item),
                // Ending the body closes the stream; the client resumes from its cursor.
                Err(_slow) => return None,
            },
            _ = st.keepalive.tick() => Bytes::from_static(st.framing.keepalive),
        };
        Some((Ok::<_, Infallible>(Frame::data(bytes)), st))
    });
    StreamBody::new(frames).boxed_unsync()
}

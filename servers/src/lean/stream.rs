//! HTTP streaming and SSE without hyper: the head hyper would write, chunked coding, a burst
//! of ready events as one chunk in one `writev`, and the terminating chunk when the stream
//! ends at a shutdown or a slow-subscriber disconnect.
//!
//! The socket is registered with the topic's fan-out (`crate::fanout`): while the subscriber is
//! caught up, the publishing side writes its events and this task only waits for its timer, its
//! peer, the end of the server, or a hand-back.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::body::Opened;
use crate::chunked::BURST;
use crate::drop_switch::Ended;
use crate::framing::Framing;
use crate::hub::{Item, Subscription};
use crate::state::App;
use crate::write_timeout::WriteTimeout;

use super::conn::{head_bytes, Conn, Length};
use super::shared::Shared;

/// The end of a chunked body.
const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// What ended the stream.
enum End {
    /// The server shuts down, or the subscriber is too slow and disconnected: the body ends
    /// properly, so the client knows to resume rather than suspect the network.
    Finish,
    /// The peer left, a write failed, or the demo cut every connection: close at once.
    Cut,
}

/// Streams `opened` on `stream` (under `topic`'s fan-out) until the peer leaves, the hub disconnects it as slow, or
/// `ended` fires (shutdown or a drop-all).
///
/// Not an `async fn`: the future keeps only what the stream needs. An `async fn` would keep its
/// arguments (the request's whole response head among them) for its whole life beside the
/// parts taken out of them.
pub(super) fn serve_stream(
    app: Arc<App>,
    stream: TcpStream,
    topic: String,
    opened: Opened,
    ended: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    let Opened {
        mut sub,
        framing,
        preamble,
        head,
        open,
    } = opened;
    let registration = app.fanout.register(&topic, stream, framing);
    drop(topic);
    let io = WriteTimeout::new(
        Shared::new(registration),
        app.config.write_timeout,
        app.hub.stats().clone(),
    );
    let mut conn = Conn::new(io);
    conn.try_write(&[&head_bytes(&head, Length::Chunked)]);
    drop(head);
    if let Some(p) = preamble {
        conn.try_chunk(&[p]);
    }
    async move {
        let _open = open;
        let end = match conn.flush().await {
            Ok(()) => stream_items(&mut conn, &mut sub, framing, &app, &ended).await,
            Err(_) => End::Cut,
        };
        if let End::Finish = end {
            conn.try_write(&[LAST_CHUNK]);
            // A peer that stopped reading does not hold the shutdown past its deadline.
            tokio::select! {
                _ = conn.flush() => {}
                () = app.hard_stop.cancelled() => {}
            }
        }
    }
}

/// What the stream does next.
enum Next {
    Stop(End),
    Item(Item),
    Readable,
    /// The fan-out handed the subscriber back.
    HandedBack,
}

async fn stream_items(
    conn: &mut Conn<Shared>,
    sub: &mut Subscription,
    framing: Framing,
    app: &App,
    ended: &CancellationToken,
) -> End {
    // No keep-alive timer here: while the stream is idle, the subscriber is direct, and the
    // topic's fan-out writes its keep-alives (`crate::fanout`).
    // Registered once, not per event: a fresh `cancelled()` per wake-up would lock the token's
    // waiter list for every delivery.
    let cancelled = ended.cancelled();
    tokio::pin!(cancelled);
    loop {
        // Nothing is pending here (the last flush wrote it all): if the subscriber has every
        // event, the fan-out writes the next ones (see `crate::fanout`).
        let entry = conn.io.get_ref().entry();
        let direct = entry.go_direct(sub);
        let next = tokio::select! {
            biased;
            () = &mut cancelled => Next::Stop(match Ended::cause(&app.shutdown) {
                Ended::Dropped => End::Cut,
                Ended::Shutdown => End::Finish,
            }),
            () = entry.handed_back(), if direct => Next::HandedBack,
            item = sub.next(), if !direct => match item {
                Ok(item) => Next::Item(item),
                Err(_slow) => Next::Stop(End::Finish),
            },
            ready = entry.socket().readable() => match ready {
                Ok(()) => Next::Readable,
                Err(_) => Next::Stop(End::Cut),
            },
        };
        if direct {
            // Whatever woke it, the subscriber is this task's again until it has caught up:
            // the fan-out writes nothing more to it, and what the socket did not take goes
            // out first.
            let rest = entry.take_back(sub);
            conn.push_pending(rest);
        }
        let stop = match next {
            Next::Stop(end) => return end,
            Next::Item(first) => try_burst(conn, sub, framing, first),
            Next::Readable => match conn.drain_input() {
                Ok(()) => None,
                Err(_) => return End::Cut,
            },
            Next::HandedBack => None,
        };
        if conn.flush().await.is_err() {
            return End::Cut;
        }
        if let Some(end) = stop {
            return end;
        }
    }
}

/// Writes `first` and whatever else is ready, up to [`BURST`] items, as one chunk; returns how
/// the stream must end if the hub found the subscriber too slow meanwhile.
fn try_burst(
    conn: &mut Conn<Shared>,
    sub: &mut Subscription,
    framing: Framing,
    first: Item,
) -> Option<End> {
    let mut items: [Bytes; BURST] = Default::default();
    items[0] = (framing.encode)(&first);
    let mut n = 1;
    let mut stop = None;
    while n < BURST {
        match sub.try_next() {
            Ok(Some(item)) => {
                items[n] = (framing.encode)(&item);
                n += 1;
            }
            Ok(None) => break,
            Err(_slow) => {
                stop = Some(End::Finish);
                break;
            }
        }
    }
    conn.try_chunk(&items[..n]);
    stop
}

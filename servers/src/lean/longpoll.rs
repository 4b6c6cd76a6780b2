//! Long polls without hyper: a held poll keeps its socket, its waiter and its deadline, and
//! nothing of hyper's or of the request; the answer is the one hyper would send, and the
//! connection then goes back to the accept loop's first-read step for the next poll.

use std::future::Future;

use bytes::Bytes;
use http::{header, HeaderValue};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::drop_switch::Ended;
use crate::http::ApiError;
use crate::hub::Batch;
use crate::state::App;
use crate::transport::longpoll::{Hold, Start};
use crate::transport::poll::batch_parts;
use crate::write_timeout::WriteTimeout;

use super::conn::{head_bytes, Conn, Length};
use super::Kept;

/// Answers the long poll `start` on `io`, holding it first if it must wait; gives the socket
/// back for the connection's next request unless the connection must close.
///
/// Not an `async fn`, for the reason `serve_stream`'s is not: its future keeps only what the
/// poll needs.
pub(super) fn serve_longpoll<'a>(
    app: &'a App,
    io: WriteTimeout<TcpStream>,
    start: Start,
    ended: &'a CancellationToken,
) -> impl Future<Output = Option<Kept>> + Send + 'a {
    let mut conn = Conn::new(io);
    async move {
        let mut read_ahead = Bytes::new();
        let batch = match start {
            Start::Now(batch) => Ok(batch),
            Start::Hold(mut hold) => {
                hold_poll(&mut conn, &mut hold, app, ended, &mut read_ahead).await?;
                hold.answer(app)
            }
        };
        // A poll answered because the server shuts down is the connection's last, and says so,
        // as hyper's graceful shutdown does when it comes first.
        let last = app.shutdown.is_cancelled();
        write_answer(&mut conn, batch, last);
        tokio::select! {
            flushed = conn.flush() => flushed.ok()?,
            () = app.hard_stop.cancelled() => return None,
        }
        (!last).then(|| Kept {
            stream: conn.io.into_inner(),
            read_ahead,
        })
    }
}

/// Writes the poll's answer as far as the socket takes it: the head and body hyper would send.
fn write_answer(conn: &mut Conn, batch: Result<Batch, ApiError>, last: bool) {
    let (mut head, body) = match batch {
        Ok(batch) => batch_parts(&batch),
        Err(err) => err.parts(),
    };
    if last {
        head.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    conn.try_write(&[&head_bytes(&head, Length::Known(body.len())), &body]);
}

/// Holds the poll until it must be answered (`Some`), or until the connection must be cut
/// (`None`): a drop-all, or a peer that left. Whatever the peer sends meanwhile (a pipelined
/// next request) is kept in `read_ahead`, and reads stop until the answer is sent.
async fn hold_poll(
    conn: &mut Conn,
    hold: &mut Hold,
    app: &App,
    ended: &CancellationToken,
    read_ahead: &mut Bytes,
) -> Option<()> {
    let cancelled = ended.cancelled();
    tokio::pin!(cancelled);
    loop {
        tokio::select! {
            biased;
            () = &mut cancelled => return match Ended::cause(&app.shutdown) {
                Ended::Dropped => None,
                Ended::Shutdown => Some(()),
            },
            () = hold.wait() => return Some(()),
            ready = conn.io.get_ref().readable(), if read_ahead.is_empty() => {
                ready.ok()?;
                if let Some(bytes) = conn.try_read().ok()? {
                    *read_ahead = bytes;
                }
            }
        }
    }
}

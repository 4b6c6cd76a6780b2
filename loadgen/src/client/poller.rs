//! [`Poller`]: how short and long polling send a request and take its answer, on one
//! keep-alive connection; *when* to send is the polling client's (`poll.rs`, `longpoll.rs`).
//!
//! An exchange (a request written, its answer awaited) is state in the poller, not in a
//! future, so it can be started and finished by different drivers: a task ([`Poller::fetch`])
//! or the load generator's readiness loop ([`Poller::begin`], [`Poller::write_to`],
//! [`Poller::buffered`]). Either leaves it where the other can take it up.
//!
//! Against Nchan (interval poll and long poll), an answer is one raw message, `304` or `408` is
//! an empty answer, and the cursor is Nchan's `Last-Modified`/`Etag` pair (`nchan.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::StatusCode;

use super::answer::{end_head, header, start_get, Reply};
use super::arrival::LATE_READ;
use super::nchan::{self, PollCursor};
use super::raw::RawConn;
use super::{ClientConfig, Delivery, Item, Retry, Setup};
use crate::counters::Counters;
use crate::envelope::{parse_batch, Batch};
use crate::error::{status_error, ClientError};
use crate::target::Target;
use pushbench_protocol::{Epoch, Transport};

/// Extra time a long poll may take beyond its own timeout before the client calls the
/// connection dead, so a hung server cannot stall a client forever.
const LONGPOLL_GRACE: Duration = Duration::from_secs(10);

/// A request on its way: how much of it is written, and by when its answer must be in.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    written: usize,
    deadline: Option<Instant>,
    /// When a long poll was begun, if that was late after the answer before it.
    asked_late: Option<Instant>,
}

/// Issues poll requests on one keep-alive connection and queues what they return.
#[derive(Debug)]
pub(crate) struct Poller {
    setup: Setup,
    retry: Retry,
    conn: Option<RawConn>,
    /// The request in `out`, while it is being written or awaits its answer.
    exchange: Option<Exchange>,
    /// The current request's bytes, in a buffer reused for every request.
    out: Vec<u8>,
    /// Against pushbench: the requests' fixed parts.
    template: Option<Template>,
    /// Where the id's digits are in `out` while it holds the template's request, and how
    /// many: the next request with as many digits rewrites just those in place. Why: the
    /// template lives on the heap per client, so building each request from it read two cold
    /// buffers and wrote a third, two more cache misses per poll at 10,000 clients than the
    /// `send` that reads `out` anyway.
    digits_at: Option<(usize, usize)>,
    /// What went wrong with an exchange the readiness loop drove, for the task it hands the
    /// client to: the task's next attempt fails with it, as if it had met it itself.
    failed: Option<ClientError>,
    queue: VecDeque<Item>,
    /// The `after` of the next request; `None` until "now" is pinned to an id.
    resume: Option<u64>,
    /// The server's life, once an answer named it: the next request's `after` is
    /// `EPOCH-ID`, so a restarted server sees the id is from its last life.
    epoch: Option<Epoch>,
    cursor: u64,
    /// The last answer stopped short of the topic's newest id: ask again without waiting.
    truncated: bool,
    /// Whether the client asked for "from now" and got it pinned by a poll during `connect`.
    pinned: bool,
    /// Against Nchan: where the next poll resumes (`None` against pushbench).
    nchan: Option<PollCursor>,
    /// When the last answer arrived on the current connection (`None` before its first): a
    /// failure of the next request may then just mean the server closed it while idle.
    answered: Option<Instant>,
}

impl Poller {
    /// Opens the connection; when starting from now, makes one request with `pin_timeout` to
    /// learn the current id. Failures are returned without retries.
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
        pin_timeout: Option<Duration>,
    ) -> Result<Self, ClientError> {
        let conn = RawConn::connect(&target, &counters).await?;
        let resume = config.after;
        let mut poller = Poller {
            setup: Setup::new(target, config, counters),
            retry: Retry::default(),
            conn: Some(conn),
            exchange: None,
            out: Vec::with_capacity(256),
            template: None,
            digits_at: None,
            failed: None,
            queue: VecDeque::new(),
            resume,
            epoch: None,
            cursor: 0,
            truncated: false,
            pinned: false,
            nchan: None,
            answered: None,
        };
        if poller.setup.dialect().resume == crate::profile::Resume::NchanIds {
            // An interval poll without a message id never moves on (it answers 304 with no
            // id to resume from), so "now" is pinned to the channel's newest message id.
            let start = match nchan::start_id(resume)? {
                Some(id) => http::HeaderValue::from_static(id),
                None => {
                    let Poller {
                        conn: Some(conn),
                        setup,
                        out,
                        ..
                    } = &mut poller
                    else {
                        return Err(ClientError::Closed);
                    };
                    nchan::newest_id(conn, out, &setup.target, &setup.config.topic)
                        .await
                        .inspect_err(|_| setup.counters.add_error())?
                }
            };
            poller.nchan = Some(PollCursor::after(start));
        } else if resume.is_none() {
            poller.fetch(pin_timeout, false).await?;
            poller.pinned = true;
        }
        Ok(poller)
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.setup.config
    }

    pub(crate) fn pop(&mut self) -> Option<Item> {
        self.queue.pop_front()
    }

    pub(crate) fn truncated(&self) -> bool {
        self.truncated
    }

    pub(crate) fn pinned(&self) -> bool {
        self.pinned
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Nothing queued, in flight or failed: the client decides when the next request goes.
    pub(crate) fn idle(&self) -> bool {
        self.queue.is_empty() && self.exchange.is_none() && self.failed.is_none()
    }

    /// The connection, while the poller has one and nothing failed (else a task must take over).
    pub(super) fn connection(&mut self) -> Option<&mut RawConn> {
        if self.failed.is_some() {
            return None;
        }
        self.conn.as_mut()
    }

    /// The connection, failed or not.
    pub(super) fn raw_connection(&mut self) -> Option<&mut RawConn> {
        self.conn.as_mut()
    }

    /// By when the answer in flight must be in, if one is in flight with a deadline.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.exchange.and_then(|e| e.deadline)
    }

    /// One successful request, after as many attempts as the reconnect policy allows. An
    /// exchange the readiness loop began is finished rather than begun again.
    ///
    /// A failure on a connection that already served a response is retried at once on a new
    /// connection, without counting as a failure: the server most likely closed it while idle.
    pub(crate) async fn fetch(
        &mut self,
        timeout: Option<Duration>,
        retry: bool,
    ) -> Result<(), ClientError> {
        let mut stale_retried = false;
        loop {
            let reused = self.conn.is_some() && self.answered.is_some();
            let err = match self.try_fetch(timeout).await {
                Ok(()) => {
                    self.retry.succeeded();
                    return Ok(());
                }
                Err(e) => e,
            };
            self.exchange = None;
            // After any failure but an error status (whose answer was read whole), the
            // connection is out of step or gone.
            if !matches!(err, ClientError::Status { .. }) {
                self.conn = None;
                self.answered = None;
            }
            if err.is_connection_error() && reused && !stale_retried {
                stale_retried = true;
                tracing::debug!("keep-alive connection lost ({err}); retrying on a new one");
                continue;
            }
            if !retry {
                self.setup.counters.add_error();
                return Err(err);
            }
            // The wait is chosen before the failure is counted: the first retry of a lost
            // connection is attempt 0, as for the streaming clients.
            let wait = self
                .retry
                .wait(&self.setup, self.setup.config.reconnect_delay);
            self.retry.failed(&self.setup, err)?;
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_fetch(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if self.conn.is_none() {
            // `connect` opened the first connection, so this one replaces a lost one.
            let conn = RawConn::connect(&self.setup.target, &self.setup.counters).await?;
            self.setup.counters.add_reconnect();
            self.conn = Some(conn);
        }
        let exchange = match self.exchange {
            Some(exchange) => exchange,
            None => self.start(timeout),
        };
        let Some(conn) = self.conn.as_mut() else {
            return Err(ClientError::Closed);
        };
        if exchange.written < self.out.len() {
            use tokio::io::AsyncWriteExt as _;
            conn.socket()?
                .write_all(&self.out[exchange.written..])
                .await?;
            self.exchange = Some(Exchange {
                written: self.out.len(),
                ..exchange
            });
        }
        let reply = conn.read_answer(exchange.deadline).await?;
        self.finish(reply)
    }

    /// Starts a request: its bytes wait in the poller for [`write_to`](Self::write_to) or
    /// [`fetch`](Self::fetch). `timeout`: how long a long poll may be held.
    pub(crate) fn begin(&mut self, timeout: Option<Duration>) {
        self.start(timeout);
    }

    /// [`begin`](Self::begin), returning the exchange begun.
    fn start(&mut self, timeout: Option<Duration>) -> Exchange {
        let hold = match (&self.nchan, self.resume) {
            (None, Some(after)) => {
                let epoch = self.epoch;
                let current = (self.template.as_ref())
                    .is_some_and(|t| t.timeout == timeout && t.epoch == epoch);
                let digits = Digits::of(after);
                match self.digits_at {
                    Some((at, len)) if current && len == digits.len() => {
                        self.out[at..at + len].copy_from_slice(digits.as_bytes());
                    }
                    _ => {
                        let t = template(&mut self.template, &self.setup, timeout, epoch);
                        self.digits_at = Some(t.write(&mut self.out, &digits));
                    }
                }
                timeout
            }
            (None, None) => {
                self.digits_at = None;
                let t = template(&mut self.template, &self.setup, timeout, self.epoch);
                self.out.clear();
                // The prefix ends in `&after=` (and the epoch); without an id the query stops
                // before it.
                self.out.extend_from_slice(&t.prefix[..t.query_end]);
                self.out.extend_from_slice(&t.suffix);
                timeout
            }
            (Some(cursor), _) => {
                self.digits_at = None;
                let (transport, topic) = (self.setup.config.transport, &self.setup.config.topic);
                let out = &mut self.out;
                let host = self.setup.target.host();
                start_get(
                    out,
                    host,
                    format_args!("{}?topic={topic}", transport.path()),
                );
                cursor.apply(out);
                end_head(out);
                // Nchan holds a long poll for its configured time, whatever the client wants.
                timeout.map(|t| t.max(nchan::LONGPOLL_HOLD))
            }
        };
        let now = Instant::now();
        // A long poll goes out as soon as the answer before it is read, so any wait past that
        // answer's arrival is the load generator's.
        let asked_late = self
            .answered
            .filter(|&a| hold.is_some() && now.saturating_duration_since(a) > LATE_READ)
            .map(|_| now);
        let exchange = Exchange {
            written: 0,
            deadline: hold.map(|t| now + t + LONGPOLL_GRACE),
            asked_late,
        };
        self.exchange = Some(exchange);
        self.setup.counters.add_request();
        exchange
    }

    /// Whether a begun request still has bytes to write.
    pub(crate) fn wants_write(&self) -> bool {
        self.exchange.is_some_and(|e| e.written < self.out.len())
    }

    /// Writes what is left of the begun request without blocking (`WouldBlock`: some is left).
    pub(crate) fn write_to(&mut self, socket: &std::net::TcpStream) -> std::io::Result<()> {
        let (Some(exchange), Some(conn)) = (self.exchange.as_mut(), self.conn.as_mut()) else {
            return Ok(());
        };
        while exchange.written < self.out.len() {
            exchange.written += conn.write_some(socket, &self.out[exchange.written..])?;
        }
        Ok(())
    }

    /// The next item from the queue, or from an answer already read whole, without I/O.
    /// `None`: nothing yet, or something failed and [`connection`](Self::connection) says a
    /// task must take over.
    pub(crate) fn buffered(&mut self) -> Option<Result<Item, ClientError>> {
        if let Some(item) = self.queue.pop_front() {
            return Some(Ok(item));
        }
        if self.exchange.is_none() || self.failed.is_some() {
            return None;
        }
        let taken = self.conn.as_mut()?.take_answer();
        let finished = match taken {
            Ok(None) => return None,
            Ok(Some(reply)) => self.finish(reply),
            Err(e) => Err(e),
        };
        match finished {
            Ok(()) => {
                self.retry.succeeded();
                self.queue.pop_front().map(Ok)
            }
            Err(e) => {
                self.failed = Some(e);
                None
            }
        }
    }

    /// Takes a whole answer: the exchange is over.
    fn finish(&mut self, reply: Reply) -> Result<(), ClientError> {
        let asked_late = self.exchange.take().and_then(|e| e.asked_late);
        self.answered = Some(reply.received);
        if reply.close {
            self.conn = None;
            self.answered = None;
        }
        if self.nchan.is_some() {
            return self.absorb_nchan(reply, asked_late);
        }
        if !reply.status.is_success() {
            return Err(status_error(reply.status, &reply.body));
        }
        let batch = parse_batch(&reply.body)?;
        self.absorb(batch, reply.received, asked_late);
        Ok(())
    }

    /// Takes an Nchan answer: one raw message (after which more may wait, so the next poll
    /// goes at once), or nothing new (`304` from an interval poll, `408` from a long poll held
    /// for its full time).
    fn absorb_nchan(
        &mut self,
        reply: Reply,
        asked_late: Option<Instant>,
    ) -> Result<(), ClientError> {
        let Some(cursor) = self.nchan.as_mut() else {
            return Err(ClientError::Protocol(
                "an Nchan answer to a pushbench poll".into(),
            ));
        };
        match reply.status {
            StatusCode::OK => {
                let Some(next) = reply.modified_etag else {
                    return Err(ClientError::Protocol(
                        "Nchan message without Last-Modified and Etag".into(),
                    ));
                };
                cursor.update(next);
                self.cursor += 1;
                self.queue.push_back(Item::Event(Delivery {
                    id: self.cursor,
                    payload: reply.body,
                    received: reply.received,
                    asked_late,
                }));
                self.truncated = true;
            }
            StatusCode::NOT_MODIFIED | StatusCode::REQUEST_TIMEOUT => {
                if let Some(next) = reply.modified_etag {
                    cursor.update(next);
                }
                self.setup.counters.add_empty_response();
                self.truncated = false;
            }
            other => return Err(status_error(other, &reply.body)),
        }
        Ok(())
    }

    /// Queues a batch's items (the gap first: it is about ids before the first event) and moves
    /// the cursor on.
    fn absorb(&mut self, batch: Batch, received: Instant, asked_late: Option<Instant>) {
        let Batch {
            events,
            gap,
            last_id,
            epoch,
            reset,
        } = batch;
        let progressed = gap.is_some() || !events.is_empty() || reset;
        if events.is_empty() {
            self.setup.counters.add_empty_response();
        }
        if let (true, Some(epoch)) = (reset, epoch) {
            // The cursor was from the server's last life: this one's events start at 1.
            self.queue.push_back(Item::Reset { epoch });
            self.cursor = 0;
            self.resume = Some(0);
        }
        if epoch.is_some() {
            self.epoch = epoch;
        }
        if let Some(gap) = gap {
            self.queue.push_back(Item::Gap {
                from: gap.from,
                to: gap.to,
            });
            self.cursor = self.cursor.max(gap.to);
            self.resume = Some(self.resume.unwrap_or(0).max(gap.to));
        }
        for event in events {
            self.cursor = event.id;
            self.resume = Some(self.resume.unwrap_or(0).max(event.id));
            self.queue.push_back(Item::Event(Delivery {
                id: event.id,
                payload: event.payload,
                received,
                asked_late,
            }));
        }
        if self.resume.is_none() {
            // The "from now" request: nothing before `last_id` is wanted.
            self.resume = Some(last_id);
        }
        self.truncated = progressed && last_id > self.resume.unwrap_or(0);
    }
}

/// The request around the `after` id for `timeout` (in `slot`), made once: a request differs
/// from the one before only by its id, and formatting the whole of each one was a tenth of the
/// readiness loop's time per poll.
fn template<'a>(
    slot: &'a mut Option<Template>,
    setup: &Setup,
    timeout: Option<Duration>,
    epoch: Option<Epoch>,
) -> &'a Template {
    if slot
        .as_ref()
        .is_some_and(|t| t.timeout != timeout || t.epoch != epoch)
    {
        *slot = None;
    }
    slot.get_or_insert_with(|| {
        let (transport, topic) = (setup.config.transport, &setup.config.topic);
        let mut prefix = format!("GET {}?topic={topic}", transport.path()).into_bytes();
        let query_end = prefix.len();
        prefix.extend_from_slice(AFTER.as_bytes());
        if let Some(epoch) = epoch {
            prefix.extend_from_slice(&epoch.hex());
            prefix.push(b'-');
        }
        let timeout_ms = Param("timeout_ms", timeout.map(|t| t.as_millis()));
        let latest = setup.config.latest && transport == Transport::Poll;
        let latest = if latest { "&latest=1" } else { "" };
        let mut suffix = format!(
            "{timeout_ms}{latest} HTTP/1.1\r\nHost: {}\r\n",
            setup.target.host()
        )
        .into_bytes();
        header(&mut suffix, "Accept", b"application/json");
        end_head(&mut suffix);
        Template {
            timeout,
            epoch,
            prefix,
            query_end,
            suffix,
        }
    })
}

/// The query parameter a poll's id goes in, last in a template's prefix.
const AFTER: &str = "&after=";

/// A poll request with a hole for its `after` id.
#[derive(Debug)]
struct Template {
    timeout: Option<Duration>,
    /// The life the `after` id is of, written before it.
    epoch: Option<Epoch>,
    /// `GET /poll?topic=T&after=`, then `EPOCH-` when the life is known.
    prefix: Vec<u8>,
    /// Where the prefix's `&after=` begins: a request without an id stops there.
    query_end: usize,
    /// The rest of the query, then the rest of the head.
    suffix: Vec<u8>,
}

impl Template {
    /// The request for the id `digits`, in `out` (cleared first); returns where the digits
    /// went, and how many there are.
    fn write(&self, out: &mut Vec<u8>, digits: &Digits) -> (usize, usize) {
        out.clear();
        out.extend_from_slice(&self.prefix);
        let at = out.len();
        out.extend_from_slice(digits.as_bytes());
        out.extend_from_slice(&self.suffix);
        (at, digits.len())
    }
}

/// An id in decimal, without an allocation.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn of(mut n: u64) -> Digits {
        let mut buf = [0u8; 20];
        let mut start = buf.len();
        loop {
            start -= 1;
            buf[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        Digits { buf, start }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// `&name=value` in a query when there is a value; nothing otherwise.
struct Param<T>(&'static str, Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for Param<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.1 {
            Some(v) => write!(f, "&{}={v}", self.0),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_and_template_requests() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (10, "10"),
            (u64::MAX, "18446744073709551615"),
        ] {
            let d = Digits::of(n);
            assert_eq!((d.as_bytes(), d.len()), (text.as_bytes(), text.len()));
        }
        let t = Template {
            timeout: None,
            epoch: None,
            prefix: b"GET /poll?topic=t&after=".to_vec(),
            query_end: 17,
            suffix: b" HTTP/1.1\r\n\r\n".to_vec(),
        };
        let mut out = Vec::new();
        let (at, len) = t.write(&mut out, &Digits::of(98));
        assert_eq!(out, b"GET /poll?topic=t&after=98 HTTP/1.1\r\n\r\n");
        // What `start` does for the next id of as many digits.
        out[at..at + len].copy_from_slice(Digits::of(99).as_bytes());
        assert_eq!(out, b"GET /poll?topic=t&after=99 HTTP/1.1\r\n\r\n");
    }
}

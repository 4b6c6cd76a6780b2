//! Short polling, and the request/batch machinery long polling shares with it.
//!
//! Against Nchan (interval poll and long poll), an answer is one raw message, `304` or `408` is
//! an empty answer, and the cursor is Nchan's `Last-Modified`/`Etag` pair (`nchan.rs`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, StatusCode};
use tokio::time::{Interval, MissedTickBehavior};

use super::nchan::{self, PollCursor};
use pushbench_servers::protocol::Transport;

use super::{subscribe_path, ClientConfig, Delivery, Item, Retry, Setup};
use crate::counters::Counters;
use crate::envelope::{parse_batch, Batch};
use crate::error::{status_error, ClientError};
use crate::http::{empty, HttpConn};
use crate::target::Target;

/// Extra time a long poll may take beyond its own timeout before the client calls the
/// connection dead, so a hung server cannot stall a client forever.
const LONGPOLL_GRACE: Duration = Duration::from_secs(10);

/// Issues poll requests on one keep-alive connection and queues what they return.
#[derive(Debug)]
pub(crate) struct Poller {
    setup: Setup,
    retry: Retry,
    conn: Option<HttpConn>,
    queue: VecDeque<Item>,
    /// The `after` of the next request; `None` until "now" is pinned to an id.
    resume: Option<u64>,
    cursor: u64,
    /// The last response stopped short of the topic's newest id: ask again without waiting.
    truncated: bool,
    /// Whether the client asked for "from now" and got it pinned by a poll during `connect`.
    pinned: bool,
    /// Against Nchan: where the next poll resumes (`None` against pushbench).
    nchan: Option<PollCursor>,
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
        let conn = HttpConn::open(&target, &counters).await?;
        let resume = config.after;
        let mut poller = Poller {
            setup: Setup::new(target, config, counters),
            retry: Retry::default(),
            conn: Some(conn),
            queue: VecDeque::new(),
            resume,
            cursor: 0,
            truncated: false,
            pinned: false,
            nchan: None,
        };
        if poller.setup.nchan() {
            // An interval poll without a message id never moves on (it answers 304 with no
            // id to resume from), so "now" is pinned to the channel's newest message id.
            let start = match nchan::start_id(resume)? {
                Some(id) => HeaderValue::from_static(id),
                None => {
                    let conn = poller.conn.as_mut().expect("opened above");
                    let topic = &poller.setup.config.topic;
                    nchan::newest_id(conn, topic).await.inspect_err(|_| {
                        poller.setup.counters.add_error();
                    })?
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

    /// One successful request, after as many attempts as the reconnect policy allows.
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
            let reused = self
                .conn
                .as_ref()
                .is_some_and(|c| !c.is_closed() && c.served());
            let err = match self.try_fetch(timeout).await {
                Ok(()) => {
                    self.retry.succeeded();
                    return Ok(());
                }
                Err(e) => e,
            };
            if err.is_connection_error() {
                self.conn = None;
                if reused && !stale_retried {
                    stale_retried = true;
                    tracing::debug!("keep-alive connection lost ({err}); retrying on a new one");
                    continue;
                }
            }
            if !retry {
                self.setup.counters.add_error();
                return Err(err);
            }
            self.retry.failed(&self.setup, err)?;
            tokio::time::sleep(self.setup.config.reconnect_delay).await;
        }
    }

    async fn try_fetch(&mut self, timeout: Option<Duration>) -> Result<(), ClientError> {
        let conn = match &mut self.conn {
            Some(conn) if !conn.is_closed() => conn,
            slot => {
                // `connect` opened the first connection, so this one replaces a lost one.
                *slot = None;
                let conn = HttpConn::open(&self.setup.target, &self.setup.counters).await?;
                self.setup.counters.add_reconnect();
                slot.insert(conn)
            }
        };
        let (transport, topic) = (self.setup.config.transport, &self.setup.config.topic);
        let (req, deadline) = match &self.nchan {
            None => (
                conn.request(Method::GET, &{
                    let mut path = subscribe_path(transport, topic, self.resume, timeout);
                    if self.setup.config.latest && transport == Transport::Poll {
                        path.push_str("&latest=1");
                    }
                    path
                })
                .header(header::ACCEPT, "application/json"),
                timeout,
            ),
            // Nchan holds a long poll for its configured time, whatever the client wants.
            Some(cursor) => (
                cursor.apply(
                    conn.request(Method::GET, &subscribe_path(transport, topic, None, None)),
                ),
                timeout.map(|t| t.max(nchan::LONGPOLL_HOLD)),
            ),
        };
        let req = req
            .body(empty())
            .map_err(|e| ClientError::Protocol(format!("invalid request: {e}")))?;
        let exchange = async {
            let response = conn.send(req).await?;
            let (parts, body) = response.into_parts();
            let body = conn.read_body(body).await?;
            Ok::<_, ClientError>((parts, body))
        };
        let (parts, body) = match deadline {
            Some(t) => tokio::time::timeout(t + LONGPOLL_GRACE, exchange)
                .await
                .map_err(|_| {
                    ClientError::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "long poll held past its timeout",
                    ))
                })??,
            None => exchange.await?,
        };
        let received = Instant::now();
        if self.nchan.is_some() {
            return self.absorb_nchan(parts, body, received);
        }
        if !parts.status.is_success() {
            return Err(status_error(parts.status, &body));
        }
        let batch = parse_batch(&body)?;
        self.absorb(batch, received);
        Ok(())
    }

    /// Takes an Nchan answer: one raw message (after which more may wait, so the next poll
    /// goes at once), or nothing new (`304` from an interval poll, `408` from a long poll held
    /// for its full time).
    fn absorb_nchan(
        &mut self,
        parts: http::response::Parts,
        body: Bytes,
        received: Instant,
    ) -> Result<(), ClientError> {
        let cursor = self.nchan.as_mut().expect("an Nchan poller");
        match parts.status {
            StatusCode::OK => {
                if !cursor.update(&parts.headers) {
                    return Err(ClientError::Protocol(
                        "Nchan message without Last-Modified and Etag".into(),
                    ));
                }
                self.cursor += 1;
                self.queue.push_back(Item::Event(Delivery {
                    id: self.cursor,
                    payload: body,
                    received,
                }));
                self.truncated = true;
            }
            StatusCode::NOT_MODIFIED | StatusCode::REQUEST_TIMEOUT => {
                cursor.update(&parts.headers);
                self.setup.counters.add_empty_response();
                self.truncated = false;
            }
            other => return Err(status_error(other, &body)),
        }
        Ok(())
    }

    /// Queues a batch's items (the gap first: it is about ids before the first event) and moves
    /// the cursor on.
    fn absorb(&mut self, batch: Batch, received: Instant) {
        let Batch {
            events,
            gap,
            last_id,
        } = batch;
        let progressed = gap.is_some() || !events.is_empty();
        if events.is_empty() {
            self.setup.counters.add_empty_response();
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
            }));
        }
        if self.resume.is_none() {
            // The "from now" request: nothing before `last_id` is wanted.
            self.resume = Some(last_id);
        }
        self.truncated = progressed && last_id > self.resume.unwrap_or(0);
    }
}

/// A number in (0, 1], from the standard library's randomly keyed hasher (no RNG crate needed
/// for a phase).
fn random_fraction() -> f64 {
    use std::hash::BuildHasher;
    let bits = std::collections::hash_map::RandomState::new().hash_one(std::time::Instant::now());
    ((bits >> 11) as f64 + 1.0) / (1u64 << 53) as f64
}

/// Short polling: `GET /poll` every `poll_interval`, at once again after a truncated answer.
#[derive(Debug)]
pub struct PollClient {
    poller: Poller,
    /// `None` for a zero interval: poll back to back.
    interval: Option<Interval>,
}

impl PollClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let poller = Poller::connect(target, config, counters, None).await?;
        let period = poller.config().poll_interval;
        let interval = (!period.is_zero()).then(|| {
            // A poll already happened during connect when pinning "now": the next comes at a
            // random point of the coming period. Real clients start at random times; clients
            // connected within a few milliseconds of each other would otherwise poll in
            // lockstep at one phase of the publish schedule, and their latency would be that
            // phase's rather than the interval/2 a user sees on average. Otherwise (resuming
            // from a given id) the first tick fires at once.
            let start = if poller.pinned() {
                tokio::time::Instant::now() + period.mul_f64(random_fraction())
            } else {
                tokio::time::Instant::now()
            };
            let mut interval = tokio::time::interval_at(start, period);
            // Fixed rate, but after a stall the next poll comes one full period later rather
            // than in a burst.
            interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
            interval
        });
        Ok(PollClient { poller, interval })
    }

    /// See [`Client::next`](super::Client::next).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.poller.pop() {
                return Ok(item);
            }
            if !self.poller.truncated() {
                if let Some(interval) = &mut self.interval {
                    interval.tick().await;
                }
            }
            self.poller.fetch(None, true).await?;
        }
    }

    /// See [`Client::cursor`](super::Client::cursor).
    pub fn cursor(&self) -> u64 {
        self.poller.cursor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{respond, spawn};
    use pushbench_servers::protocol::Transport;

    fn config(after: Option<u64>) -> ClientConfig {
        let mut c = ClientConfig::new(Transport::Poll, "t");
        c.after = after;
        c.poll_interval = Duration::from_millis(20);
        c
    }

    #[tokio::test]
    async fn pins_now_then_polls_and_follows_truncation() {
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        let (heads_tx, heads_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // One keep-alive connection serves every request.
            let mut a = rx.recv().await.unwrap();
            let mut heads = vec![a.head.clone()];
            respond(
                &mut a.socket,
                "200 OK",
                "application/json",
                r#"{"events":[],"last_id":5}"#,
            )
            .await;
            let answers = [
                r#"{"events":[{"id":6,"data":"a"}],"gap":{"from":1,"to":1},"last_id":8}"#,
                r#"{"events":[{"id":7,"data":"b\u00fc"},{"id":8,"data":"c"}],"last_id":8}"#,
                r#"{"events":[],"last_id":8}"#,
            ];
            for body in answers {
                heads.push(crate::http::test_server::read_head(&mut a.socket).await);
                respond(&mut a.socket, "200 OK", "application/json", body).await;
            }
            heads_tx.send(heads).unwrap();
            // Keep the connection open, leaving later polls unanswered.
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let mut client =
            PollClient::connect(Target::from_addr(addr), config(None), counters.clone())
                .await
                .unwrap();
        assert_eq!(client.cursor(), 0);
        assert_eq!(client.next().await.unwrap(), Item::Gap { from: 1, to: 1 });
        let ids: Vec<_> = [
            client.next().await,
            client.next().await,
            client.next().await,
        ]
        .into_iter()
        .map(|i| match i.unwrap() {
            Item::Event(d) => (d.id, String::from_utf8(d.payload.to_vec()).unwrap()),
            other => panic!("{other:?}"),
        })
        .collect();
        assert_eq!(ids, [(6, "a".into()), (7, "bü".into()), (8, "c".into())]);
        assert_eq!(client.cursor(), 8);
        // The empty answer comes back, then the client waits for the next tick.
        assert!(
            tokio::time::timeout(Duration::from_millis(500), client.next())
                .await
                .is_err()
        );
        let heads = heads_rx.await.unwrap();
        let lines: Vec<_> = heads
            .iter()
            .map(|h| h.lines().next().unwrap().to_owned())
            .collect();
        assert_eq!(
            lines,
            [
                "GET /poll?topic=t HTTP/1.1",
                "GET /poll?topic=t&after=5 HTTP/1.1",
                "GET /poll?topic=t&after=6 HTTP/1.1",
                "GET /poll?topic=t&after=8 HTTP/1.1",
            ]
        );
        let s = counters.snapshot();
        // Four answered requests plus the unanswered one the timeout cut short.
        assert_eq!(
            (s.connects, s.requests, s.empty_responses, s.reconnects),
            (1, 5, 2, 0)
        );
    }

    #[tokio::test]
    async fn reconnects_when_the_server_closed_the_idle_connection() {
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            respond(
                &mut a.socket,
                "200 OK",
                "application/json",
                r#"{"events":[],"last_id":0}"#,
            )
            .await;
            drop(a);
            let mut b = rx.recv().await.unwrap();
            assert!(
                b.head.starts_with("GET /poll?topic=t&after=0 "),
                "{}",
                b.head
            );
            respond(
                &mut b.socket,
                "200 OK",
                "application/json",
                r#"{"events":[{"id":1,"data":"x"}],"last_id":1}"#,
            )
            .await;
            let _keep = b;
            std::future::pending::<()>().await;
        });
        let mut client =
            PollClient::connect(Target::from_addr(addr), config(None), counters.clone())
                .await
                .unwrap();
        match client.next().await.unwrap() {
            Item::Event(d) => assert_eq!(d.id, 1),
            other => panic!("{other:?}"),
        }
        let s = counters.snapshot();
        assert_eq!((s.connects, s.reconnects, s.errors), (2, 1, 0));
    }

    #[tokio::test]
    async fn error_status_is_returned_with_its_message() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            respond(
                &mut a.socket,
                "400 Bad Request",
                "application/json",
                r#"{"error":"after is in the future"}"#,
            )
            .await;
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let mut client = PollClient::connect(
            Target::from_addr(addr),
            config(Some(99)),
            Counters::new_shared(),
        )
        .await
        .unwrap();
        let err = client.next().await.unwrap_err();
        assert_eq!(
            err.server_message(),
            Some("after is in the future"),
            "{err}"
        );
    }
}

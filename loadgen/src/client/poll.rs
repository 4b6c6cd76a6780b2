//! Short polling: `GET /poll` every `poll_interval`, at once again after a truncated answer.
//!
//! When to poll is decided here ([`Pacer`]); how a request goes and what its answer holds is
//! the [`Poller`]'s (`poller.rs`), which long polling shares.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::poller::Poller;
use super::{ClientConfig, Item};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// How late a poll may fire and still count as on time; later, the schedule restarts from
/// then (as tokio's `MissedTickBehavior::Delay` does, with the same allowance).
const MISSED: Duration = Duration::from_millis(5);

/// When a polling client's next request is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// A request is in flight, or items wait to be taken.
    Busy,
    /// At once.
    Now,
    /// At this time.
    At(Instant),
}

impl Due {
    /// Whether a request should be begun at `now`.
    pub(crate) fn by(self, now: Instant) -> bool {
        match self {
            Due::Busy => false,
            Due::Now => true,
            Due::At(t) => t <= now,
        }
    }
}

/// A fixed-rate schedule of polls.
#[derive(Debug)]
struct Pacer {
    period: Duration,
    due: Instant,
}

impl Pacer {
    /// The poll due now has gone: the next is one period after it, or, after a stall, one
    /// period from now rather than a burst of the missed ones.
    fn fired(&mut self, now: Instant) {
        self.due = if now > self.due + MISSED {
            now + self.period
        } else {
            self.due + self.period
        };
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
    pub(super) poller: Poller,
    /// `None` for a zero interval: poll back to back.
    pacer: Option<Pacer>,
}

impl PollClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        let poller = Poller::connect(target, config, counters, None).await?;
        let period = poller.config().poll_interval;
        let pacer = (!period.is_zero()).then(|| {
            // A poll already happened during connect when pinning "now": the next comes at a
            // random point of the coming period. Real clients start at random times; clients
            // connected within a few milliseconds of each other would otherwise poll in
            // lockstep at one phase of the publish schedule, and their latency would be that
            // phase's rather than the interval/2 a user sees on average. Otherwise (resuming
            // from a given id) the first poll goes at once.
            let due = if poller.pinned() {
                Instant::now() + period.mul_f64(random_fraction())
            } else {
                Instant::now()
            };
            Pacer { period, due }
        });
        Ok(PollClient { poller, pacer })
    }

    /// See [`Client::next`](super::Client::next).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.poller.pop() {
                return Ok(item);
            }
            if let Due::At(at) = self.due() {
                tokio::time::sleep_until(at.into()).await;
            }
            if self.poller.idle() {
                self.fire(Instant::now());
            }
            self.poller.fetch(None, true).await?;
        }
    }

    /// When the next request is due.
    pub(crate) fn due(&self) -> Due {
        match &self.pacer {
            _ if !self.poller.idle() => Due::Busy,
            Some(pacer) if !self.poller.truncated() => Due::At(pacer.due),
            _ => Due::Now,
        }
    }

    /// Begins the request due (see [`due`](Self::due)) at `now`.
    pub(crate) fn begin(&mut self, now: Instant) {
        self.fire(now);
        self.poller.begin(None);
    }

    /// A poll goes now: the schedule moves on, unless it is a truncated answer's follow-up.
    fn fire(&mut self, now: Instant) {
        if let Some(pacer) = &mut self.pacer {
            if !self.poller.truncated() {
                pacer.fired(now);
            }
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
    use pushbench_protocol::Transport;

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

//! Long polling: `GET /longpoll`, held by the server until an event exists, re-issued at once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::poll::Due;
use super::poller::Poller;
use super::{ClientConfig, Item};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// A long-polling subscriber on one keep-alive connection.
#[derive(Debug)]
pub struct LongPollClient {
    pub(super) poller: Poller,
}

impl LongPollClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        // Pinning "now" must not be held: a zero timeout makes the server answer at once.
        let poller = Poller::connect(target, config, counters, Some(Duration::ZERO)).await?;
        Ok(LongPollClient { poller })
    }

    /// See [`Client::next`](super::Client::next).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.poller.pop() {
                return Ok(item);
            }
            let timeout = self.poller.config().longpoll_timeout;
            self.poller.fetch(Some(timeout), true).await?;
        }
    }

    /// When the next request is due: at once whenever nothing is in flight or waiting.
    pub(crate) fn due(&self) -> Due {
        if self.poller.idle() {
            Due::Now
        } else {
            Due::Busy
        }
    }

    /// Begins the request due.
    pub(crate) fn begin(&mut self, _now: Instant) {
        let timeout = self.poller.config().longpoll_timeout;
        self.poller.begin(Some(timeout));
    }

    /// See [`Client::cursor`](super::Client::cursor).
    pub fn cursor(&self) -> u64 {
        self.poller.cursor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{read_head, respond, spawn};
    use pushbench_protocol::Transport;

    #[tokio::test]
    async fn reissues_at_once_and_counts_empty_answers() {
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        let (heads_tx, heads_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let mut heads = vec![a.head.clone()];
            respond(
                &mut a.socket,
                "200 OK",
                "application/json",
                r#"{"events":[],"last_id":3}"#,
            )
            .await;
            for body in [
                r#"{"events":[],"last_id":3}"#,
                r#"{"events":[{"id":4,"data":"x"}],"last_id":4}"#,
            ] {
                heads.push(read_head(&mut a.socket).await);
                respond(&mut a.socket, "200 OK", "application/json", body).await;
            }
            heads_tx.send(heads).unwrap();
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::new(Transport::LongPoll, "t");
        config.longpoll_timeout = Duration::from_millis(1500);
        let mut client = LongPollClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        match client.next().await.unwrap() {
            Item::Event(d) => assert_eq!((d.id, &d.payload[..]), (4, &b"x"[..])),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.cursor(), 4);
        let heads = heads_rx.await.unwrap();
        let lines: Vec<_> = heads.iter().map(|h| h.lines().next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "GET /longpoll?topic=t&timeout_ms=0 HTTP/1.1",
                "GET /longpoll?topic=t&after=3&timeout_ms=1500 HTTP/1.1",
                "GET /longpoll?topic=t&after=3&timeout_ms=1500 HTTP/1.1",
            ]
        );
        assert_eq!(counters.snapshot().empty_responses, 2);
    }

    async fn next_event(client: &mut LongPollClient) -> super::super::Delivery {
        match tokio::time::timeout(Duration::from_secs(5), client.next()).await {
            Ok(Ok(Item::Event(d))) => d,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_long_poll_sent_late_marks_the_events_it_fetched() {
        let (addr, mut rx) = spawn().await;
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let ok = |id: u64| format!(r#"{{"events":[{{"id":{id},"data":"x"}}],"last_id":{id}}}"#);
            respond(&mut a.socket, "200 OK", "application/json", &ok(1)).await;
            for id in 2..=3 {
                read_head(&mut a.socket).await;
                respond(&mut a.socket, "200 OK", "application/json", &ok(id)).await;
            }
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::new(Transport::LongPoll, "t");
        config.after = Some(0);
        let mut client =
            LongPollClient::connect(Target::from_addr(addr), config, Counters::new_shared())
                .await
                .unwrap();
        // The first answer; the load generator then dawdles 30 ms before asking again.
        assert_eq!(next_event(&mut client).await.id, 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        let resumed = Instant::now();
        let d = next_event(&mut client).await;
        assert_eq!(d.id, 2);
        let asked = d
            .asked_late
            .expect("a long poll sent 30 ms after its answer is late");
        assert!(asked >= resumed);
    }

    #[tokio::test]
    async fn nchan_pins_now_then_follows_last_modified_and_etag() {
        use tokio::io::AsyncWriteExt;
        let (addr, mut rx) = spawn().await;
        let counters = Counters::new_shared();
        let (heads_tx, heads_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let mut heads = vec![a.head.clone()];
            respond(
                &mut a.socket,
                "200 OK",
                "text/json",
                r#"{"messages": 2, "requested": 0, "subscribers": 0, "last_message_id": "100:2" }"#,
            )
            .await;
            // Held for Nchan's full time: 408, naming no message.
            heads.push(read_head(&mut a.socket).await);
            respond(&mut a.socket, "408 Request Timeout", "text/plain", "").await;
            heads.push(read_head(&mut a.socket).await);
            a.socket
                .write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\
                      Last-Modified: Thu, 01 Jan 1970 00:01:41 GMT\r\nEtag: 0\r\n\r\nraw",
                )
                .await
                .unwrap();
            heads.push(read_head(&mut a.socket).await);
            heads_tx.send(heads).unwrap();
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let mut config = ClientConfig::new(Transport::LongPoll, "t");
        config.longpoll_timeout = Duration::from_millis(100);
        let target = Target::from_addr(addr).with_profile(crate::profile::Profile::Nchan);
        let mut client = LongPollClient::connect(target, config, counters.clone())
            .await
            .unwrap();
        match client.next().await.unwrap() {
            Item::Event(d) => assert_eq!((d.id, &d.payload[..]), (1, &b"raw"[..])),
            other => panic!("{other:?}"),
        }
        assert_eq!(client.cursor(), 1);
        // The next poll goes out (and stays unanswered).
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.next())
                .await
                .is_err()
        );
        let heads: Vec<_> = heads_rx
            .await
            .unwrap()
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        assert!(heads[0].starts_with("get /pub?topic=t "), "{}", heads[0]);
        for held in &heads[1..3] {
            assert!(held.starts_with("get /longpoll?topic=t "), "{held}");
            assert!(held.contains("last-event-id: 100:2\r\n"), "{held}");
        }
        assert!(
            heads[3].starts_with("get /longpoll?topic=t "),
            "{}",
            heads[3]
        );
        assert!(
            heads[3].contains("if-modified-since: thu, 01 jan 1970 00:01:41 gmt\r\n")
                && heads[3].contains("if-none-match: 0\r\n")
                && !heads[3].contains("last-event-id"),
            "{}",
            heads[3]
        );
        let s = counters.snapshot();
        assert_eq!((s.requests, s.empty_responses, s.errors), (4, 1, 0));
    }
}

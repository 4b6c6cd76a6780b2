//! Long polling: `GET /longpoll`, held by the server until an event exists, re-issued at once.

use std::sync::Arc;
use std::time::Duration;

use super::poll::Poller;
use super::{ClientConfig, Item};
use crate::counters::Counters;
use crate::error::ClientError;
use crate::target::Target;

/// A long-polling subscriber on one keep-alive connection.
#[derive(Debug)]
pub struct LongPollClient {
    poller: Poller,
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

    /// See [`Client::cursor`](super::Client::cursor).
    pub fn cursor(&self) -> u64 {
        self.poller.cursor()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::test_server::{read_head, respond, spawn};
    use pushbench_servers::protocol::Transport;

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
}

//! [`HotClient`]: a subscription whose steady state a readiness loop drives, with no task.
//!
//! Once a streaming, SSE or WebSocket subscription is open, all it does is read; a polling
//! subscription writes a request when one is due and reads its answer. As a task of its own,
//! every delivery or poll costs a wake-up through the async runtime (scheduling, polling a
//! stack of futures) on top of the system calls themselves, and at 10,000 subscribers that
//! overhead made the load generator cost most of what the server it measured cost. The load
//! generator therefore detaches such a subscription's socket from the runtime and hands it to
//! one readiness loop per worker (`load/hot.rs`), which reads it and decodes with the client's
//! own code ([`HotClient::buffered`]): the same parsers, the same ids, gaps and errors as the
//! client's `next`, just without its I/O. Anything else (a reconnect, an error, a write that
//! would block) goes back to a task, which calls `next` as usual.

use std::io;
use std::net::TcpStream;
use std::time::Instant;

use super::arrival::Clocks;
use super::raw::RawConn;
use super::{Item, LongPollClient, PollClient, SseClient, StreamClient, WsClient};
use crate::error::ClientError;

/// A subscription that can run without a task.
#[derive(Debug)]
pub enum HotClient {
    /// `GET /stream`.
    Stream(StreamClient),
    /// `GET /sse`.
    Sse(SseClient),
    /// `GET /ws`.
    Ws(WsClient),
    /// `GET /poll`, every poll interval.
    Poll(PollClient),
    /// `GET /longpoll`, again as soon as one is answered.
    LongPoll(LongPollClient),
}

impl HotClient {
    /// The connection, failed or not (its socket goes back to it whatever happened).
    fn conn(&mut self) -> Option<&mut RawConn> {
        match self {
            HotClient::Stream(c) => c.connection(),
            HotClient::Sse(c) => c.connection(),
            HotClient::Ws(c) => c.connection().map(|ws| ws.conn_mut()),
            HotClient::Poll(c) => c.poller.raw_connection(),
            HotClient::LongPoll(c) => c.poller.raw_connection(),
        }
    }

    /// Puts a socket taken by [`Subscription::into_hot`](super::Subscription::into_hot) back on the current runtime, so a task
    /// can drive the client again. A socket whose connection the client has dropped meanwhile
    /// is closed.
    pub fn attach(&mut self, socket: TcpStream) -> io::Result<()> {
        match self.conn() {
            Some(conn) => conn.attach(socket),
            None => Ok(()),
        }
    }

    /// One non-blocking read of `socket` into the client's buffer: the bytes read (`0` at the
    /// end of the stream) and whether the socket is drained. What it reads is timed by the
    /// kernel's arrival stamp, against `clocks` (read once per batch of reads: see
    /// [`arrival`](super::arrival)). `NotConnected` when the client has dropped its connection.
    pub fn read_from(&mut self, socket: &TcpStream, clocks: &Clocks) -> io::Result<(usize, bool)> {
        match self.conn() {
            Some(conn) => conn.read_from(socket, clocks),
            None => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    /// Whether something is to be written at `now`: a WebSocket's pong or Close reply, or a
    /// poll that is due or half written.
    pub fn wants_write(&mut self, now: Instant) -> bool {
        match self {
            HotClient::Ws(c) => c.connection().is_some_and(|ws| ws.wants_write()),
            HotClient::Poll(c) => c.poller.wants_write() || c.due().by(now),
            HotClient::LongPoll(c) => c.poller.wants_write() || c.due().by(now),
            HotClient::Stream(_) | HotClient::Sse(_) => false,
        }
    }

    /// Writes what waits at `now` (beginning a poll that is due), without blocking
    /// (`WouldBlock`: the rest still waits).
    pub fn write_to(&mut self, socket: &TcpStream, now: Instant) -> io::Result<()> {
        match self {
            HotClient::Ws(c) => match c.connection() {
                Some(ws) => ws.write_to(socket),
                None => Ok(()),
            },
            HotClient::Poll(c) => {
                if c.due().by(now) {
                    c.begin(now);
                }
                c.poller.write_to(socket)
            }
            HotClient::LongPoll(c) => {
                if c.due().by(now) {
                    c.begin(now);
                }
                c.poller.write_to(socket)
            }
            HotClient::Stream(_) | HotClient::Sse(_) => Ok(()),
        }
    }

    /// When the client must be looked at again even if its socket stays quiet: its next poll,
    /// or the deadline of the long poll in flight (past it, a task takes over and times out).
    pub fn wake_at(&self) -> Option<Instant> {
        let (due, poller) = match self {
            HotClient::Poll(c) => (c.due(), &c.poller),
            HotClient::LongPoll(c) => (c.due(), &c.poller),
            HotClient::Stream(_) | HotClient::Sse(_) | HotClient::Ws(_) => return None,
        };
        match due {
            super::poll::Due::At(at) => Some(at),
            super::poll::Due::Now => None,
            super::poll::Due::Busy => poller.deadline(),
        }
    }

    /// What the client's `next` would return from the bytes already read. `None`: write
    /// first ([`wants_write`](Self::wants_write)), read more, or, when
    /// [`connected`](Self::connected) says so, connect again (which only a task does).
    pub fn buffered(&mut self) -> Option<Result<Item, ClientError>> {
        match self {
            HotClient::Stream(c) => c.buffered(),
            HotClient::Sse(c) => c.buffered(),
            HotClient::Ws(c) => c.buffered(),
            HotClient::Poll(c) => c.poller.buffered(),
            HotClient::LongPoll(c) => c.poller.buffered(),
        }
    }

    /// Whether the client still has its connection, in working order.
    pub fn connected(&mut self) -> bool {
        match self {
            HotClient::Poll(c) => c.poller.connection().is_some(),
            HotClient::LongPoll(c) => c.poller.connection().is_some(),
            _ => self.conn().is_some(),
        }
    }
}

/// Takes `client`'s socket off the runtime for a readiness loop, if it has a connection.
#[allow(clippy::result_large_err)] // `Err` hands the client back, as in `into_hot_client`
fn detach<C>(
    mut client: C,
    wrap: fn(C) -> HotClient,
    conn: fn(&mut C) -> Option<&mut RawConn>,
) -> Result<(HotClient, TcpStream), C> {
    match conn(&mut client).and_then(RawConn::detach) {
        Some(Ok(socket)) => Ok((wrap(client), socket)),
        // Deregistering failed (it does not, short of a broken epoll): the connection has lost
        // its socket, and the client's next read finds it closed and reconnects.
        Some(Err(e)) => {
            tracing::debug!("could not detach a socket: {e}");
            Err(client)
        }
        None => Err(client),
    }
}

impl StreamClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Stream, StreamClient::connection)
    }
}

impl SseClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Sse, SseClient::connection)
    }
}

impl WsClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Ws, |c| {
            c.connection().map(|ws| ws.conn_mut())
        })
    }
}

impl PollClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::Poll, |c| c.poller.connection())
    }
}

impl LongPollClient {
    // `Err` hands the client back unchanged, not an error; moving it is what it is for.
    #[allow(clippy::result_large_err)]
    pub(super) fn into_hot_client(self) -> Result<(HotClient, TcpStream), Self> {
        detach(self, HotClient::LongPoll, |c| c.poller.connection())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::client::{ClientConfig, Subscription as _};
    use crate::counters::Counters;
    use crate::http::test_server::{read_head, respond, spawn};
    use crate::target::Target;
    use pushbench_protocol::Transport;

    /// Drives `client` on `socket` as the readiness loop does, until it yields an item, needs a
    /// task (`None`), or 5 s pass.
    async fn drive(client: &mut HotClient, socket: &TcpStream) -> Option<Item> {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let now = Instant::now();
            if client.wants_write(now) {
                client.write_to(socket, now).unwrap();
            }
            match client.buffered() {
                Some(item) => return Some(item.unwrap()),
                None if !client.connected() => return None,
                None => match client.read_from(socket, &Clocks::now()) {
                    Ok((0, _)) => return None,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(e) => panic!("{e}"),
                },
            }
        }
        panic!("nothing came");
    }

    #[tokio::test]
    async fn a_poll_in_the_loop_times_itself_and_goes_back_to_a_task_when_the_server_hangs_up() {
        let (addr, mut rx) = spawn().await;
        let (heads_tx, heads_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            // First connection: the pin, one poll answered, then the server closes it.
            let mut a = rx.recv().await.unwrap();
            let mut heads = vec![a.head.clone()];
            respond(
                &mut a.socket,
                "200 OK",
                "application/json",
                r#"{"events":[],"last_id":4}"#,
            )
            .await;
            heads.push(read_head(&mut a.socket).await);
            let batch = r#"{"events":[{"id":5,"data":"a"}],"last_id":5}"#;
            respond(&mut a.socket, "200 OK", "application/json", batch).await;
            drop(a);
            // The task reconnects and resumes after 5.
            let mut b = rx.recv().await.unwrap();
            heads.push(b.head.clone());
            let batch = r#"{"events":[{"id":6,"data":"b"}],"last_id":6}"#;
            respond(&mut b.socket, "200 OK", "application/json", batch).await;
            heads_tx.send(heads).unwrap();
            let _keep = b;
            std::future::pending::<()>().await;
        });
        let counters = Arc::new(Counters::default());
        let mut config = ClientConfig::new(Transport::Poll, "t");
        config.poll_interval = Duration::from_millis(50);
        let client = PollClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        let (mut hot, socket) = client.into_hot().unwrap();
        // Not due yet: the loop would set a timer within one interval.
        let wake = hot.wake_at().expect("a poll to come");
        assert!(wake <= Instant::now() + Duration::from_millis(50));
        let Some(Item::Event(d)) = drive(&mut hot, &socket).await else {
            panic!("no event")
        };
        assert_eq!((d.id, &d.payload[..]), (5, &b"a"[..]));
        // The next poll's answer is the end of the connection: a task takes over.
        assert!(drive(&mut hot, &socket).await.is_none());
        hot.attach(socket).unwrap();
        let HotClient::Poll(mut client) = hot else {
            panic!("not a poll")
        };
        let item = tokio::time::timeout(Duration::from_secs(5), client.next())
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(item, Item::Event(d) if d.id == 6));
        let heads = heads_rx.await.unwrap();
        let lines: Vec<_> = heads.iter().map(|h| h.lines().next().unwrap()).collect();
        assert_eq!(
            lines,
            [
                "GET /poll?topic=t HTTP/1.1",
                "GET /poll?topic=t&after=4 HTTP/1.1",
                "GET /poll?topic=t&after=5 HTTP/1.1",
            ]
        );
        let s = counters.snapshot();
        // The pin, the answered poll, the one the hang-up met, and the task's.
        assert_eq!(
            (s.connects, s.reconnects, s.requests, s.errors),
            (2, 1, 4, 0)
        );
    }

    #[tokio::test]
    async fn a_delivery_read_late_is_timed_when_it_arrived() {
        use tokio::io::AsyncWriteExt as _;
        let (addr, mut rx) = spawn().await;
        let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut a = rx.recv().await.unwrap();
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                        transfer-encoding: chunked\r\n\r\n";
            a.socket.write_all(head.as_bytes()).await.unwrap();
            for id in 1..=2 {
                // The first event also gives the kernel time to turn stamping on.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let event = format!("id: {id}\ndata: e{id}\n\n");
                let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                a.socket.write_all(chunk.as_bytes()).await.unwrap();
                sent_tx.send(Instant::now()).unwrap();
            }
            let _keep = a;
            std::future::pending::<()>().await;
        });
        let counters = Arc::new(Counters::default());
        let config = ClientConfig::new(Transport::Sse, "t");
        let client = SseClient::connect(Target::from_addr(addr), config, counters.clone())
            .await
            .unwrap();
        let (mut hot, socket) = client.into_hot().unwrap();
        let Some(Item::Event(first)) = drive(&mut hot, &socket).await else {
            panic!("no first event")
        };
        assert_eq!(first.id, 1);
        sent_rx.recv().await.unwrap();
        // The second event waits in the socket while the loop is elsewhere for 40 ms.
        let sent = sent_rx.recv().await.unwrap();
        tokio::time::sleep(Duration::from_millis(40)).await;
        let before = counters.snapshot();
        let Some(Item::Event(second)) = drive(&mut hot, &socket).await else {
            panic!("no second event")
        };
        let read = Instant::now();
        assert_eq!(second.id, 2);
        // Timed by its arrival (a little slack for the two clocks' readings), not its read.
        assert!(second.received + Duration::from_millis(2) >= sent);
        assert!(
            second.received < sent + Duration::from_millis(20),
            "timed {:?} after it was sent, {:?} before it was read",
            second.received.saturating_duration_since(sent),
            read.saturating_duration_since(second.received)
        );
        // And the read itself counts as late: the loop was behind its reading.
        let read = counters.snapshot().since(&before);
        assert_eq!((read.stamped_reads, read.late_reads), (1, 1));
    }
}

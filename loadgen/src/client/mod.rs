//! One subscriber of any transport behind one type, [`Client`].
//!
//! Every client yields exactly what the server sent, in the order sent: events and gap signals
//! alike. Judging duplicates, reordering and loss is left to the load generator, which sees all
//! transports the same way.
//!
//! Each client speaks its target's dialect ([`Target::profile`]): pushbench's protocol, or
//! Nchan's, whose differences are described in [`crate::profile`] and bridged in each
//! transport's module with the help of `nchan.rs` (start and resume ids) and `chunked.rs`
//! (chunk-framed streaming).

mod answer;
pub(crate) mod arrival;
mod backoff;
mod chunked;
mod device;
#[cfg(test)]
mod fuzz;
mod hot;
mod longpoll;
mod nchan;
mod poll;
mod poller;
pub(crate) mod post;
mod raw;
mod readbuf;
mod sse;
mod stream;
mod subscription;
mod ws;
mod wsconn;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pushbench_protocol::{Cursor, Epoch, Transport, DEFAULT_TOPIC};

use crate::counters::Counters;
use crate::error::{check_topic, ClientError};
use crate::profile::{Dialect, Numbering, Profile, Resume};
use crate::target::Target;

pub use arrival::{Clocks, LATE_READ};
pub use backoff::Backoff;
pub use device::GatewayClient;
pub use hot::HotClient;
pub use longpoll::LongPollClient;
pub use poll::PollClient;
pub use sse::SseClient;
pub use stream::StreamClient;
pub use subscription::Subscription;
pub use ws::WsClient;

/// How a client subscribes and recovers.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Which technique to use.
    pub transport: Transport,
    /// The topic to subscribe to.
    pub topic: String,
    /// Start after this id; `None` starts from now.
    pub after: Option<u64>,
    /// Short polling only: time between the starts of two polls (default 1 s).
    pub poll_interval: Duration,
    /// Long polling only: how long the server may hold a request (default 30 s).
    pub longpoll_timeout: Duration,
    /// Short polling only: ask for the newest event only (`latest=1`), the current state
    /// rather than every change (default false).
    pub latest: bool,
    /// Whether to reconnect when a connection ends or a request fails (default true).
    ///
    /// Polling clients replace a keep-alive connection the server closed while idle even when
    /// this is false: that is ordinary HTTP/1.1, not a failure.
    pub reconnect: bool,
    /// Wait before each reconnect attempt (default 250 ms). SSE uses the server's `retry:`
    /// hint instead when one was given, as `EventSource` does.
    pub reconnect_delay: Duration,
    /// How the wait before each attempt is chosen from `reconnect_delay` (default fixed).
    pub reconnect_backoff: Backoff,
    /// The longest wait of the jittered backoff (default 30 s).
    pub reconnect_max_delay: Duration,
    /// Failed attempts in a row after which the client gives up (default 10).
    pub max_reconnects: u32,
    /// Against the gateway: the registered device to be, instead of registering a new one
    /// (the run registers devices itself when it sends to tokens).
    pub device_token: Option<String>,
}

impl ClientConfig {
    /// The defaults for `transport` on `topic`.
    pub fn new(transport: Transport, topic: impl Into<String>) -> Self {
        ClientConfig {
            transport,
            topic: topic.into(),
            after: None,
            poll_interval: Duration::from_secs(1),
            longpoll_timeout: Duration::from_secs(30),
            latest: false,
            reconnect: true,
            reconnect_delay: Duration::from_millis(250),
            reconnect_backoff: Backoff::Fixed,
            reconnect_max_delay: Duration::from_secs(30),
            max_reconnects: 10,
            device_token: None,
        }
    }
}

impl Default for ClientConfig {
    /// Short polling on the default topic.
    fn default() -> Self {
        ClientConfig::new(Transport::Poll, DEFAULT_TOPIC)
    }
}

/// What [`Client::next`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One event.
    Event(Delivery),
    /// The server says ids `from..=to` are lost for this subscriber.
    Gap {
        /// First lost id.
        from: u64,
        /// Last lost id.
        to: u64,
    },
    /// The server says the client's cursor was from another life of it (it restarted): ids
    /// count from 1 again, and this life's events follow from the oldest it keeps. Whatever the
    /// last life published and this client had not read is gone with it.
    Reset {
        /// The server's new life.
        epoch: Epoch,
    },
}

/// One received event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event's id. Against Nchan, whose ids are not integers, the client's own count of
    /// events received (1, 2, 3...), so it says nothing about order.
    pub id: u64,
    /// The payload exactly as published.
    pub payload: Bytes,
    /// When the bytes completing this event were read (for a poll batch: the whole body).
    pub received: Instant,
    /// When the long poll that fetched it was sent, if the load generator sent it late: more
    /// than [`LATE_READ`] after the answer before it arrived. An event due before then waited
    /// for the load generator, not for the server (`load/saturation.rs`).
    pub asked_late: Option<Instant>,
}

/// A subscriber of one transport.
#[derive(Debug)]
pub enum Client {
    /// `GET /poll` on a fixed schedule.
    Poll(PollClient),
    /// `GET /longpoll`, re-issued as soon as it returns.
    LongPoll(LongPollClient),
    /// `GET /stream`, NDJSON.
    Stream(StreamClient),
    /// `GET /sse`, `text/event-stream`.
    Sse(SseClient),
    /// `GET /ws`, WebSocket.
    Ws(WsClient),
    /// A device of the FCM-style gateway: one WebSocket to `/v1/devices/{token}/connect`.
    Gateway(GatewayClient),
}

impl Client {
    /// Subscribes.
    ///
    /// For the streaming transports this returns once the server answered 200 (or 101), so the
    /// subscription is live. For the polling ones it opens the connection and, when
    /// `config.after` is `None`, makes one request to pin "now" to an id, so no event published
    /// after this returns can be missed. A failure here is returned at once, without retries.
    pub async fn connect(
        target: &Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Client, ClientError> {
        check_topic(&config.topic)?;
        let target = target.clone();
        if target.profile() == Profile::Gateway {
            return Ok(Client::Gateway(
                GatewayClient::connect(target, config, counters).await?,
            ));
        }
        Ok(match config.transport {
            Transport::Poll => Client::Poll(PollClient::connect(target, config, counters).await?),
            Transport::LongPoll => {
                Client::LongPoll(LongPollClient::connect(target, config, counters).await?)
            }
            Transport::Stream => {
                Client::Stream(StreamClient::connect(target, config, counters).await?)
            }
            Transport::Sse => Client::Sse(SseClient::connect(target, config, counters).await?),
            Transport::Ws => Client::Ws(WsClient::connect(target, config, counters).await?),
        })
    }

    /// The next event or gap, reconnecting as configured.
    ///
    /// Cancel-safe in the sense that matters here: dropping the future loses and duplicates no
    /// item. What a cancellation can cost is work: an in-flight poll is abandoned (and its
    /// connection closed, which HTTP/1.1 requires) and asked again by the next call; a pending
    /// reconnect restarts its delay.
    ///
    /// An error that is not final leaves the client usable: after [`ClientError::Server`] or
    /// [`ClientError::Protocol`] the connection goes on; after an error status the next call
    /// reconnects. [`ClientError::TooManyReconnects`] and [`ClientError::Closed`] are final
    /// unless called again on purpose, which starts a new round of attempts (or repeats
    /// `Closed` when reconnecting is disabled).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        match self {
            Client::Poll(c) => c.next().await,
            Client::LongPoll(c) => c.next().await,
            Client::Stream(c) => c.next().await,
            Client::Sse(c) => c.next().await,
            Client::Ws(c) => c.next().await,
            Client::Gateway(c) => c.next().await,
        }
    }

    /// The id of the last event received, or the end of a later gap (0 before anything, and
    /// again after a reset). Against Nchan: the number of events received.
    ///
    /// A reconnect (or the next poll) resumes after it. SSE is the exception, being faithful to
    /// browsers: its cursor and its `Last-Event-ID` move with `id:` fields only, which gap
    /// events do not carry.
    pub fn cursor(&self) -> u64 {
        match self {
            Client::Poll(c) => c.cursor(),
            Client::LongPoll(c) => c.cursor(),
            Client::Stream(c) => c.cursor(),
            Client::Sse(c) => c.cursor(),
            Client::Ws(c) => c.cursor(),
            Client::Gateway(c) => c.cursor(),
        }
    }

    /// The transport this client uses.
    pub fn transport(&self) -> Transport {
        match self {
            Client::Poll(_) => Transport::Poll,
            Client::LongPoll(_) => Transport::LongPoll,
            Client::Stream(_) => Transport::Stream,
            Client::Sse(_) => Transport::Sse,
            Client::Ws(_) | Client::Gateway(_) => Transport::Ws,
        }
    }

    /// Publishes `payload` over the subscription itself: WebSocket only, as a text frame.
    /// Other transports, and Nchan's WebSocket subscriber, return [`ClientError::Unsupported`].
    pub async fn send_upstream(&mut self, payload: &str) -> Result<(), ClientError> {
        match self {
            Client::Ws(c) => c.send_upstream(payload).await,
            other => Err(ClientError::Unsupported(other.transport())),
        }
    }
}

impl Client {
    /// Against the gateway: drops the connection as a device going offline does. Other
    /// clients return [`ClientError::Unsupported`].
    pub async fn go_offline(&mut self) -> Result<(), ClientError> {
        match self {
            Client::Gateway(c) => {
                c.go_offline().await;
                Ok(())
            }
            other => Err(ClientError::Unsupported(other.transport())),
        }
    }

    /// Against the gateway: the device's registration token.
    pub fn device_token(&self) -> Option<&str> {
        match self {
            Client::Gateway(c) => Some(c.token()),
            _ => None,
        }
    }

    /// Against the gateway: connects again after [`go_offline`](Self::go_offline).
    pub async fn go_online(&mut self) -> Result<(), ClientError> {
        match self {
            Client::Gateway(c) => c.go_online().await,
            other => Err(ClientError::Unsupported(other.transport())),
        }
    }
}

/// `PATH?topic=T[&after=CURSOR][&timeout_ms=MS]`.
pub(crate) fn subscribe_path(
    transport: Transport,
    topic: &str,
    after: Option<Cursor>,
    timeout: Option<Duration>,
) -> String {
    let mut path = String::with_capacity(64 + topic.len());
    // Topics are validated to URL-safe characters, so no escaping is needed.
    let _ = write!(path, "{}?topic={}", transport.path(), topic);
    if let Some(after) = after {
        let _ = write!(path, "&after={after}");
    }
    if let Some(timeout) = timeout {
        let _ = write!(path, "&timeout_ms={}", timeout.as_millis());
    }
    path
}

/// Where a client that resumes by id stands. NDJSON lines and WebSocket frames carry the same
/// event, gap and hello objects, so both clients keep their place with this one type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Position {
    /// Id of the last event handed out, or the end of a later gap (0 before anything).
    pub(crate) cursor: u64,
    /// What a reconnect asks for (`None`: from now).
    pub(crate) resume: Option<u64>,
    /// The server's life, once a hello named it: a reconnect sends `EPOCH-ID`, so that a
    /// restarted server sees the id is from its last life.
    pub(crate) epoch: Option<Epoch>,
}

impl Position {
    /// The start: `config.after`, except against Nchan, which has no ids to resume by, so only
    /// the first connection may start anywhere but now.
    pub(crate) fn start(setup: &Setup) -> Position {
        Position {
            cursor: 0,
            resume: if setup.counts_events() {
                None
            } else {
                setup.config.after
            },
            epoch: None,
        }
    }

    /// What a reconnect asks for: the resume id, in the life the server last named.
    pub(crate) fn resume_cursor(&self) -> Option<Cursor> {
        self.resume.map(|id| Cursor {
            epoch: self.epoch,
            id,
        })
    }

    /// One event, gap, hello or error object as the client yields it, moving the position past
    /// it. A hello that is not a reset yields nothing: it only tells the position where it is.
    pub(crate) fn envelope(
        &mut self,
        buf: &Bytes,
        received: Instant,
    ) -> Result<Option<Item>, ClientError> {
        match crate::envelope::parse_envelope(buf)? {
            crate::envelope::Envelope::Event(e) => {
                self.cursor = e.id;
                self.resume = Some(self.resume.unwrap_or(0).max(e.id));
                Ok(Some(Item::Event(Delivery {
                    id: e.id,
                    payload: e.payload,
                    received,
                    asked_late: None,
                })))
            }
            crate::envelope::Envelope::Gap(g) => {
                self.cursor = self.cursor.max(g.to);
                self.resume = Some(self.resume.unwrap_or(0).max(g.to));
                Ok(Some(Item::Gap {
                    from: g.from,
                    to: g.to,
                }))
            }
            crate::envelope::Envelope::Hello(h) => {
                self.epoch = Some(h.epoch);
                if h.reset {
                    self.cursor = h.after;
                    self.resume = Some(h.after);
                    return Ok(Some(Item::Reset { epoch: h.epoch }));
                }
                // A subscription from now learns here which id "now" was.
                self.resume = Some(self.resume.map_or(h.after, |r| r.max(h.after)));
                Ok(None)
            }
            crate::envelope::Envelope::Error(message) => Err(ClientError::Server(message)),
        }
    }

    /// A message without an id (Nchan): numbered by the client.
    pub(crate) fn numbered(&mut self, payload: Bytes, received: Instant) -> Item {
        self.cursor += 1;
        Item::Event(Delivery {
            id: self.cursor,
            payload,
            received,
            asked_late: None,
        })
    }
}

/// What a client needs to open connections: where, how, and what to count into.
#[derive(Debug)]
pub(crate) struct Setup {
    pub(crate) target: Target,
    pub(crate) config: ClientConfig,
    pub(crate) counters: Arc<Counters>,
}

impl Setup {
    /// Bundles what every connection of one client needs.
    pub(crate) fn new(target: Target, config: ClientConfig, counters: Arc<Counters>) -> Setup {
        Setup {
            target,
            config,
            counters,
        }
    }

    /// What the target's server is asked for (see [`crate::profile::Dialect`]).
    pub(crate) fn dialect(&self) -> &'static Dialect {
        self.target.profile().dialect()
    }

    /// Whether the client numbers events itself (the server sends no ids).
    pub(crate) fn counts_events(&self) -> bool {
        self.dialect().numbering == Numbering::Counted
    }

    /// The subscribe path of a streaming transport, starting after `after`. Nchan has no
    /// integer ids: there `after` can only say "from now" (`None`) or "the oldest kept"
    /// (`Some(0)`, sent as `last_event_id`, which Nchan reads when no header names one).
    pub(crate) fn stream_path(&self, after: Option<Cursor>) -> Result<String, ClientError> {
        let (transport, topic) = (self.config.transport, &self.config.topic);
        if self.dialect().resume == Resume::Cursor {
            return Ok(subscribe_path(transport, topic, after, None));
        }
        let mut path = subscribe_path(transport, topic, None, None);
        if let Some(id) = nchan::start_id(after.map(|c| c.id))? {
            let _ = write!(path, "&last_event_id={id}");
        }
        Ok(path)
    }
}

/// Reconnect bookkeeping shared by all clients.
///
/// Kept apart from [`Setup`] so a reconnect can borrow the setup for its `open` closure while
/// updating this.
#[derive(Debug, Default)]
pub(crate) struct Retry {
    failures: u32,
    /// Ended with reconnecting disabled: nothing more will come.
    closed: bool,
}

impl Retry {
    /// Records a failed attempt: `Ok` when another may follow, else the error to return.
    pub(crate) fn failed(&mut self, setup: &Setup, err: ClientError) -> Result<(), ClientError> {
        setup.counters.add_error();
        if !setup.config.reconnect || !(err.is_connection_error() || err.is_gateway_error()) {
            return Err(err);
        }
        tracing::debug!("{} attempt failed: {err}", setup.config.transport);
        self.failures += 1;
        if self.failures >= setup.config.max_reconnects {
            let attempts = std::mem::take(&mut self.failures);
            return Err(ClientError::TooManyReconnects {
                attempts,
                last: Box::new(err),
            });
        }
        Ok(())
    }

    /// The wait before the next attempt, from `delay` (the configured delay, or SSE's `retry:`)
    /// by the client's backoff policy.
    pub(crate) fn wait(&self, setup: &Setup, delay: Duration) -> Duration {
        let c = &setup.config;
        c.reconnect_backoff
            .wait(delay, c.reconnect_max_delay, self.failures)
    }

    /// Records a success, so earlier failures are no longer consecutive.
    pub(crate) fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// A streaming connection ended, broken by `error` or cleanly: `Ok` when it is to be
    /// replaced.
    pub(crate) fn ended(
        &mut self,
        setup: &Setup,
        error: Option<ClientError>,
    ) -> Result<(), ClientError> {
        if let Some(e) = &error {
            setup.counters.add_error();
            tracing::debug!("{} connection broke: {e}", setup.config.transport);
        }
        if !setup.config.reconnect {
            self.closed = true;
            return Err(error.unwrap_or(ClientError::Closed));
        }
        Ok(())
    }

    /// Opens a replacement connection with `open`, waiting before each attempt as the backoff
    /// policy says, from `delay`.
    pub(crate) async fn reconnect<T, F, Fut>(
        &mut self,
        setup: &Setup,
        delay: Duration,
        mut open: F,
    ) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        if self.closed {
            return Err(ClientError::Closed);
        }
        loop {
            tokio::time::sleep(self.wait(setup, delay)).await;
            match open().await {
                Ok(conn) => {
                    setup.counters.add_reconnect();
                    self.succeeded();
                    return Ok(conn);
                }
                Err(e) => self.failed(setup, e)?,
            }
        }
    }
}

/// Test helper: an event's id and payload as text; panics on anything else.
#[cfg(test)]
pub(crate) fn event_of(item: Item) -> (u64, String) {
    match item {
        Item::Event(d) => (d.id, String::from_utf8(d.payload.to_vec()).unwrap()),
        other => panic!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            subscribe_path(Transport::Poll, "t", None, None),
            "/poll?topic=t"
        );
        assert_eq!(
            subscribe_path(
                Transport::LongPoll,
                "a.b",
                Some(Cursor::bare(7)),
                Some(Duration::from_secs(30))
            ),
            "/longpoll?topic=a.b&after=7&timeout_ms=30000"
        );
        assert_eq!(
            subscribe_path(Transport::Ws, "x", Some(Cursor::bare(0)), None),
            "/ws?topic=x&after=0"
        );
        let epoch = Epoch::from_bits(0xbeef);
        assert_eq!(
            subscribe_path(Transport::Stream, "x", Some(Cursor::of(epoch, 3)), None),
            "/stream?topic=x&after=0000beef-3"
        );
    }

    #[tokio::test]
    async fn bad_topic_is_refused_before_connecting() {
        let target = Target::from_addr("127.0.0.1:9".parse().unwrap());
        let config = ClientConfig::new(Transport::Stream, "no spaces");
        let err = Client::connect(&target, config, Counters::new_shared())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Topic { .. }), "{err}");
    }

    #[test]
    fn give_up_after_max_consecutive_failures() {
        let mut config = ClientConfig::new(Transport::Stream, "t");
        config.max_reconnects = 3;
        let counters = Counters::new_shared();
        let setup = Setup {
            target: Target::from_addr("127.0.0.1:9".parse().unwrap()),
            config,
            counters: counters.clone(),
        };
        let mut retry = Retry::default();
        assert!(retry.failed(&setup, ClientError::Closed).is_ok());
        assert!(retry.failed(&setup, ClientError::Closed).is_ok());
        retry.succeeded();
        assert!(retry.failed(&setup, ClientError::Closed).is_ok());
        assert!(retry.failed(&setup, ClientError::Closed).is_ok());
        let err = retry.failed(&setup, ClientError::Closed).unwrap_err();
        assert!(
            matches!(err, ClientError::TooManyReconnects { attempts: 3, .. }),
            "{err}"
        );
        assert_eq!(counters.snapshot().errors, 5);
        // An answer, unlike a broken connection, is not retried.
        let answer = ClientError::Protocol("x".into());
        assert!(matches!(
            retry.failed(&setup, answer),
            Err(ClientError::Protocol(_))
        ));
    }
}

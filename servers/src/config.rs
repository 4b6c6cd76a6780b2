//! Limits and knobs of the hub and the servers. Every queue and cap has a default here.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// What the hub does with a subscriber that falls more than [`HubConfig::max_lag`] events behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowPolicy {
    /// Skip the oldest pending events, send a gap signal for them, and go on.
    #[default]
    Drop,
    /// Close the subscriber's connection.
    Disconnect,
}

impl std::str::FromStr for SlowPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(SlowPolicy::Drop),
            "disconnect" => Ok(SlowPolicy::Disconnect),
            other => Err(format!(
                "unknown slow-subscriber policy {other:?} (expected drop or disconnect)"
            )),
        }
    }
}

/// Limits of the [`Hub`](crate::Hub).
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Events each topic keeps for resume (the replay buffer), by count.
    pub replay_events: usize,
    /// The same buffer's cap in bytes, so 4,096 large payloads cannot exhaust memory. The
    /// default (4 MiB) keeps the worst case, `max_topics` × `replay_bytes` = 4 GiB, well under
    /// the memory of the machine the server runs on.
    pub replay_bytes: usize,
    /// Topics that may exist at once; publishing or subscribing to a new topic past this is
    /// refused with 503. (Polling a topic that does not exist does not create it.)
    pub max_topics: usize,
    /// A subscriber's outgoing queue: how many published events it may have pending before the
    /// [`SlowPolicy`] applies. Subscribers share the topic's replay buffer, so the queue costs
    /// no memory per subscriber; this bound decides when a subscriber counts as slow.
    pub max_lag: u64,
    /// What happens to a slow subscriber.
    pub slow_policy: SlowPolicy,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            replay_events: 4096,
            replay_bytes: 4 * 1024 * 1024,
            max_topics: 1024,
            max_lag: 4096,
            slow_policy: SlowPolicy::Drop,
        }
    }
}

/// Limits of the HTTP servers.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Concurrent connections; past this a new connection is answered 503 and closed.
    /// The default stays under the 20,000 open-files limit of this project's machines.
    pub max_connections: usize,
    /// Total bytes of request line and headers; past this the answer is 431.
    pub max_header_bytes: usize,
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// Interval of keep-alives on idle streams: SSE comments, NDJSON blank lines, WebSocket pings.
    pub keepalive: Duration,
    /// The SSE `retry:` hint sent at the start of each stream, in milliseconds.
    pub sse_retry_ms: u64,
    /// Long-poll timeout when the request names none.
    pub longpoll_default_timeout: Duration,
    /// Longest long-poll timeout a request may ask for.
    pub longpoll_max_timeout: Duration,
    /// Most events in one poll or long-poll response; the client polls again for the rest.
    pub max_batch: usize,
    /// How long graceful shutdown may take before remaining connections are cut.
    pub shutdown_deadline: Duration,
    /// How long a write to a socket may make no progress before the connection is cut (and
    /// counted in `write_timeouts`). A streaming body is only polled when the socket has room,
    /// so without this a client that stops reading would hold its connection, its subscriber
    /// and the graceful shutdown forever: the slow-subscriber policy never gets to run.
    pub write_timeout: Duration,
    /// Cuts every open connection each time it is notified, as the demo's drop-all button
    /// does, while the server keeps accepting: how `pushbench serve` answers SIGUSR1, so the
    /// suite's `[faults]` can drop every subscriber of a server it does not share memory with.
    pub drop_all: Option<Arc<Notify>>,
    /// Each accepted socket's send buffer (`SO_SNDBUF`, which the kernel doubles), or `None`
    /// for the kernel's autotuning. On loopback autotuning grows a buffer to megabytes, so a
    /// subscriber that stops reading at 10 KiB/s fills it only after minutes; a fixed buffer
    /// bounds the kernel memory each subscriber may hold and brings the write timeout into
    /// play within seconds (the suite's `[faults]` stalled readers).
    pub send_buffer: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 19_000,
            max_header_bytes: 8 * 1024,
            header_read_timeout: Duration::from_secs(10),
            keepalive: Duration::from_secs(15),
            sse_retry_ms: 1000,
            longpoll_default_timeout: Duration::from_secs(30),
            longpoll_max_timeout: Duration::from_secs(120),
            max_batch: 1000,
            shutdown_deadline: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            drop_all: None,
            send_buffer: None,
        }
    }
}

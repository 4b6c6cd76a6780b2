//! Target profiles: which server's dialect the clients and the publisher speak.
//!
//! `pushbench` is docs/PROTOCOL.md. `nchan` maps the same five techniques onto Nchan, the nginx
//! pub/sub module, and `pushpin` onto Pushpin, a GRIP proxy, so one load generator measures
//! production push servers beside ours. Each profile has a [`Dialect`]: what the clients and
//! the publisher ask of a server instead of asking which server it is.
//!
//! # Adding a peer
//!
//! A third production server takes five places, no more:
//! 1. a variant here, with its [`Dialect`] (and, if its wire format is not pushbench's or
//!    Nchan's, the client code its dialect names);
//! 2. `deploy/NAME/`: its configuration, on loopback only;
//! 3. `scripts/NAME.sh start|stop`, printing `listening on URL` (and `publish on URL` if
//!    publishes go elsewhere) and `pid PID` (the process whose tree to sample);
//! 4. a line in the suite's list of peers (`pushbench_suite::peer::PEERS`);
//! 5. `tests/NAME.rs`, against the real server.
//!
//! # The Pushpin dialect
//!
//! Pushpin holds the connections; its origin is `pushbench serve grip` (scripts/pushpin.sh
//! starts both), which answers each subscribe request with GRIP instructions and publishes
//! every event to Pushpin's publish API. So subscribers see pushbench's own wire protocol (ids,
//! hellos, batches, resume), and the publisher posts to the origin (`--publish-target`), as an
//! application server behind Pushpin does.
//!
//! # The Nchan dialect
//!
//! Against the locations of `deploy/nchan/nginx.conf` (run it with `scripts/nchan.sh start`):
//!
//! | pushbench transport | Nchan subscriber type | request |
//! |---|---|---|
//! | `poll` | intervalpoll | `GET /poll?topic=T` |
//! | `longpoll` | longpoll | `GET /longpoll?topic=T` |
//! | `stream` | http-chunked | `GET /stream?topic=T` with `TE: chunked` |
//! | `sse` | eventsource | `GET /sse?topic=T` with `Accept: text/event-stream` |
//! | `ws` | websocket | `GET /ws?topic=T`, upgraded |
//!
//! and publishing is `POST /pub?topic=T` (Nchan's publisher; `201 Created` or `202 Accepted`).
//!
//! What differs from pushbench's protocol, and how the clients bridge it:
//!
//! - **Payloads arrive raw**, not in pushbench's JSON envelope: a poll answer's body, a chunk, an
//!   SSE `data:` field, a WebSocket frame is the payload.
//! - **Ids.** Nchan's message ids are `time:tag` strings, not integers, and only the polling and
//!   SSE subscribers see them. A client's [`Delivery::id`](crate::Delivery::id) is therefore its
//!   own count of messages received (1, 2, 3...): out-of-order detection by id means nothing
//!   against Nchan (it never fires), while loss and duplicates are still found exactly, from the
//!   sequence number each load-generator payload carries. A publish returns the publisher's own
//!   count of accepted publishes, as Nchan's answer has no integer id.
//! - **Gaps.** Nchan sends no gap signal; a client never yields [`Item::Gap`](crate::Item::Gap).
//! - **Where a subscription starts.** `after: None` is "from now" as with pushbench; `after:
//!   Some(0)` is the oldest message kept; other values are refused (no integer ids). Polling
//!   clients pin "now" in `connect` by asking the publisher location for the channel's last
//!   message id (`GET /pub?topic=T`, Nchan's channel info) and resume after it, since an
//!   interval poll without a message id can never move forward; streaming clients subscribe with
//!   the config's `nchan_subscriber_first_message newest`.
//! - **Resuming.** Polls send `If-Modified-Since` and `If-None-Match` from the previous answer's
//!   `Last-Modified` and `Etag` (Nchan's long-poll protocol); a `304 Not Modified` (interval
//!   poll, nothing new) or `408 Request Timeout` (long poll held 30 s) is an empty response. SSE
//!   reconnects with `Last-Event-ID` as browsers do. HTTP-chunked and WebSocket subscribers see no
//!   ids, so after a reconnect they start from now again; what was published meanwhile is lost
//!   (and counted as lost by the load generator).
//! - **No upstream publishing** on the WebSocket: Nchan's subscriber location does not publish.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Nchan's publisher location in `deploy/nchan/nginx.conf`; a `GET` there is the channel's
/// info.
pub const NCHAN_PUBLISH_PATH: &str = "/pub";

/// A server dialect.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// pushbench's own protocol (docs/PROTOCOL.md).
    #[default]
    Pushbench,
    /// Nchan, with the locations of `deploy/nchan/nginx.conf`.
    Nchan,
    /// pushbench's FCM-style push gateway (docs/GATEWAY.md): subscribers are devices on one
    /// WebSocket each (`ws` only), the publisher is an app server using the send API
    /// ([`crate::gateway`]).
    Gateway,
    /// Pushpin in front of `pushbench serve grip` (scripts/pushpin.sh).
    Pushpin,
}

/// How events are told apart on a server's wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Numbering {
    /// pushbench's envelope: every event carries its id; hellos, gaps and resets are signalled.
    Envelope,
    /// Raw payloads without integer ids: the client numbers what it receives (1, 2, 3...).
    Counted,
}

/// Where a subscription starts and how a poll moves on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// pushbench's cursors: `after=ID` or `EPOCH-ID`, `Last-Event-ID`.
    Cursor,
    /// Nchan's message ids (`time:tag`) and conditional requests ([`crate::client`]'s `nchan`).
    NchanIds,
}

/// What the clients and the publisher need to know of a server, rather than its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dialect {
    /// How events are numbered.
    pub numbering: Numbering,
    /// How subscriptions start and resume.
    pub resume: Resume,
    /// The path events are published to.
    pub publish_path: &'static str,
    /// A publish's answer names the event's id (pushbench's `{"id":N}`); else it only says
    /// accepted (`201`/`202`) and the publisher counts.
    pub publish_names_id: bool,
    /// Publishes go to another address than subscriptions (`pushbench load --publish-target`).
    pub publish_elsewhere: bool,
    /// Request headers of an HTTP streaming subscription.
    pub stream_headers: &'static [(&'static str, &'static str)],
    /// Each chunk of an HTTP stream is one message (rather than NDJSON lines).
    pub chunk_per_message: bool,
    /// A WebSocket subscriber's text frames are published.
    pub upstream: bool,
}

const PUSHBENCH: Dialect = Dialect {
    numbering: Numbering::Envelope,
    resume: Resume::Cursor,
    publish_path: pushbench_protocol::PATH_PUBLISH,
    publish_names_id: true,
    publish_elsewhere: false,
    stream_headers: &[("Accept", "application/x-ndjson")],
    chunk_per_message: false,
    upstream: true,
};

const NCHAN: Dialect = Dialect {
    numbering: Numbering::Counted,
    resume: Resume::NchanIds,
    publish_path: NCHAN_PUBLISH_PATH,
    publish_names_id: false,
    publish_elsewhere: false,
    // Nchan picks its http-chunked subscriber by the TE header (and refuses without it).
    stream_headers: &[("TE", "chunked"), ("Connection", "TE")],
    chunk_per_message: true,
    upstream: false,
};

const PUSHPIN: Dialect = Dialect {
    publish_elsewhere: true,
    ..PUSHBENCH
};

impl Profile {
    /// What the clients and the publisher need to know of this server. (The gateway's send
    /// path names a project: see [`crate::gateway::GatewayOptions::send_path`].)
    pub fn dialect(self) -> &'static Dialect {
        match self {
            Profile::Pushbench | Profile::Gateway => &PUSHBENCH,
            Profile::Nchan => &NCHAN,
            Profile::Pushpin => &PUSHPIN,
        }
    }

    /// The path events are published to: `/publish`, or Nchan's `/pub`.
    pub fn publish_path(self) -> &'static str {
        self.dialect().publish_path
    }

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Pushbench => "pushbench",
            Profile::Nchan => "nchan",
            Profile::Gateway => "gateway",
            Profile::Pushpin => "pushpin",
        }
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pushbench" => Ok(Profile::Pushbench),
            "nchan" => Ok(Profile::Nchan),
            "gateway" => Ok(Profile::Gateway),
            "pushpin" => Ok(Profile::Pushpin),
            other => Err(format!(
                "unknown target profile {other:?} (expected pushbench, nchan, pushpin or gateway)"
            )),
        }
    }
}

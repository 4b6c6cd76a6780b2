//! Target profiles: which server's dialect the clients and the publisher speak.
//!
//! `pushbench` is docs/PROTOCOL.md. `nchan` maps the same five techniques onto Nchan, the nginx
//! pub/sub module, so one load generator measures a production push server beside ours.
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
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
}

impl Profile {
    /// The path events are published to: `/publish`, or Nchan's `/pub`. The gateway's send
    /// path names a project: see [`crate::gateway::GatewayOptions::send_path`].
    pub fn publish_path(self) -> &'static str {
        match self {
            Profile::Pushbench | Profile::Gateway => pushbench_protocol::PATH_PUBLISH,
            Profile::Nchan => NCHAN_PUBLISH_PATH,
        }
    }

    /// The name on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Profile::Pushbench => "pushbench",
            Profile::Nchan => "nchan",
            Profile::Gateway => "gateway",
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
            other => Err(format!(
                "unknown target profile {other:?} (expected pushbench, nchan or gateway)"
            )),
        }
    }
}

//! [`ClientError`], the one error type of every client and the publisher.

use std::io;
use std::net::SocketAddr;

use http::StatusCode;
use pushbench_protocol::{TopicError, Transport};
use tokio_tungstenite::tungstenite;

use crate::envelope::EnvelopeError;

/// Everything that can go wrong talking to a pushbench server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The topic would be refused by the server (checked locally so it never reaches a URL).
    #[error("invalid topic {topic:?}: {source}")]
    Topic {
        /// The topic given.
        topic: String,
        /// Why it is invalid.
        source: TopicError,
    },
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: SocketAddr,
        /// The socket error.
        source: io::Error,
    },
    /// A socket error on an open connection.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// HTTP/1.1 failed below the status line: connection reset, malformed response, and so on.
    #[error("HTTP error: {0}")]
    Hyper(#[from] hyper::Error),
    /// The WebSocket handshake or connection failed.
    #[error("WebSocket error: {0}")]
    WebSocket(#[source] Box<tungstenite::Error>),
    /// The server answered with an error status; `message` is its `{"error":...}` text.
    #[error("server answered {status}: {message}")]
    Status {
        /// The response status.
        status: StatusCode,
        /// The body's error text (or the raw body when it was not the usual JSON).
        message: String,
    },
    /// The server sent an in-band `{"error":...}` message; the connection stays usable.
    #[error("server reported: {0}")]
    Server(String),
    /// The server sent something that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The connection ended and reconnecting is disabled.
    #[error("connection closed")]
    Closed,
    /// The operation does not exist for this transport.
    #[error("the {0} transport does not support this operation")]
    Unsupported(Transport),
    /// Reconnecting failed `attempts` times in a row.
    #[error("gave up after {attempts} consecutive failed reconnect attempts: {last}")]
    TooManyReconnects {
        /// Failed attempts in a row.
        attempts: u32,
        /// The last attempt's error.
        #[source]
        last: Box<ClientError>,
    },
}

impl ClientError {
    /// Whether the error belongs to the connection, so a new connection may succeed.
    ///
    /// The other kinds are answers (an error status, a protocol violation): a new connection
    /// would most likely get the same answer.
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Io(_)
                | ClientError::Hyper(_)
                | ClientError::WebSocket(_)
                | ClientError::Closed
        )
    }

    /// Whether a proxy in front of the server could not reach it this time (`502 Bad Gateway`,
    /// `504 Gateway Timeout`): worth another attempt under the reconnect policy, as a lost
    /// connection is. Pushpin answers 502 when more requests wait for its origin than its proxy
    /// queues; a long-poll client that gave up there lost every later event. (`503` is not
    /// among them: a pushbench server answers it when full, and retrying would hide that.)
    pub fn is_gateway_error(&self) -> bool {
        matches!(
            self,
            ClientError::Status { status, .. }
                if *status == StatusCode::BAD_GATEWAY || *status == StatusCode::GATEWAY_TIMEOUT
        )
    }

    /// The text of an error status or in-band error message, if that is what this is.
    pub fn server_message(&self) -> Option<&str> {
        match self {
            ClientError::Status { message, .. } | ClientError::Server(message) => Some(message),
            _ => None,
        }
    }
}

impl From<EnvelopeError> for ClientError {
    fn from(e: EnvelopeError) -> Self {
        ClientError::Protocol(e.to_string())
    }
}

impl From<tungstenite::Error> for ClientError {
    fn from(e: tungstenite::Error) -> Self {
        ClientError::WebSocket(Box::new(e))
    }
}

/// Checks a topic before it goes into a URL.
pub(crate) fn check_topic(topic: &str) -> Result<(), ClientError> {
    pushbench_protocol::validate_topic(topic).map_err(|source| ClientError::Topic {
        topic: topic.to_owned(),
        source,
    })
}

/// Builds a [`ClientError::Status`] from an error response's body.
pub(crate) fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    let message = crate::envelope::error_message(body)
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    ClientError::Status { status, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_that_could_not_reach_its_origin_is_worth_another_attempt() {
        let status = |s: StatusCode| status_error(s, b"{\"error\":\"x\"}");
        assert!(status(StatusCode::BAD_GATEWAY).is_gateway_error());
        assert!(status(StatusCode::GATEWAY_TIMEOUT).is_gateway_error());
        // A full server and a bad request are answers, not a proxy's hiccup.
        assert!(!status(StatusCode::SERVICE_UNAVAILABLE).is_gateway_error());
        assert!(!status(StatusCode::BAD_REQUEST).is_gateway_error());
        assert!(!ClientError::Closed.is_gateway_error());
    }
}

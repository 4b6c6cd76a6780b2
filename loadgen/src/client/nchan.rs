//! What the clients need to speak Nchan's dialect (described in [`crate::profile`]): where a
//! subscription starts, and how a poll names the last message it has.

use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};

use crate::envelope::parse_nchan_last_message_id;
use crate::error::{status_error, ClientError};
use crate::http::{empty, HttpConn};
use crate::profile::NCHAN_PUBLISH_PATH;

/// A message id before every real one. (`0:0` will not do: Nchan reads it as "no id" and
/// applies `nchan_subscriber_first_message` instead.)
pub(crate) const OLDEST_ID: &str = "1:0";

/// How long Nchan holds a long poll before answering `408`: `nchan_subscriber_timeout` in
/// `deploy/nchan/nginx.conf`. The client cannot ask for another timeout.
pub(crate) const LONGPOLL_HOLD: Duration = Duration::from_secs(30);

/// The message id a new subscription starts after: `None` (from now) for `after: None`, the
/// oldest kept for `after: Some(0)`. Nchan's ids are not integers, so no other `after` exists.
pub(crate) fn start_id(after: Option<u64>) -> Result<Option<&'static str>, ClientError> {
    match after {
        None => Ok(None),
        Some(0) => Ok(Some(OLDEST_ID)),
        Some(n) => Err(ClientError::Protocol(format!(
            "Nchan message ids are not integers, so a subscription cannot start after {n}; \
             start from now or after 0 (the oldest message kept)"
        ))),
    }
}

/// The id of the channel's newest message, from Nchan's channel info (`GET` on the publisher
/// location): a poll that resumes after it gets exactly what is published from now on.
///
/// A channel that does not exist yet (`404`) or holds no message (`0:0`) gives [`OLDEST_ID`]:
/// whatever it will hold is published from now on.
pub(crate) async fn newest_id(
    conn: &mut HttpConn,
    topic: &str,
) -> Result<HeaderValue, ClientError> {
    let path = format!("{NCHAN_PUBLISH_PATH}?topic={topic}");
    let req = conn
        .request(Method::GET, &path)
        .header(header::ACCEPT, "text/json")
        .body(empty())
        .map_err(|e| ClientError::Protocol(format!("invalid request {path:?}: {e}")))?;
    let response = conn.send(req).await?;
    let status = response.status();
    let body = conn.read_body(response.into_body()).await?;
    let id = match status {
        StatusCode::OK => parse_nchan_last_message_id(&body)?,
        StatusCode::NOT_FOUND => return Ok(HeaderValue::from_static(OLDEST_ID)),
        other => return Err(status_error(other, &body)),
    };
    if id.is_empty() || id == "0:0" {
        return Ok(HeaderValue::from_static(OLDEST_ID));
    }
    HeaderValue::from_str(&id)
        .map_err(|_| ClientError::Protocol(format!("invalid Nchan message id {id:?}")))
}

/// Where the next poll resumes, in Nchan's long-poll protocol: the previous answer's
/// `Last-Modified` and `Etag`, sent back as `If-Modified-Since` and `If-None-Match`; before any
/// answer, a starting message id, sent as `Last-Event-ID` (which Nchan reads when those two are
/// absent, `nchan_subscriber_last_message_id`).
#[derive(Debug)]
pub(crate) struct PollCursor {
    start: HeaderValue,
    since: Option<(HeaderValue, HeaderValue)>,
}

impl PollCursor {
    /// A cursor before the first answer, resuming after message `start`.
    pub(crate) fn after(start: HeaderValue) -> Self {
        PollCursor { start, since: None }
    }

    /// Adds the resume headers to a poll request.
    pub(crate) fn apply(&self, req: http::request::Builder) -> http::request::Builder {
        match &self.since {
            Some((modified, etag)) => req
                .header(header::IF_MODIFIED_SINCE, modified.clone())
                .header(header::IF_NONE_MATCH, etag.clone()),
            None => req.header("last-event-id", self.start.clone()),
        }
    }

    /// Moves on to the message id an answer names; `false` when it names none (a `408` does
    /// not, and then the cursor stays).
    pub(crate) fn update(&mut self, headers: &HeaderMap) -> bool {
        match (
            headers.get(header::LAST_MODIFIED),
            headers.get(header::ETAG),
        ) {
            (Some(modified), Some(etag)) => {
                self.since = Some((modified.clone(), etag.clone()));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_ids() {
        assert_eq!(start_id(None).unwrap(), None);
        assert_eq!(start_id(Some(0)).unwrap(), Some(OLDEST_ID));
        assert!(matches!(start_id(Some(5)), Err(ClientError::Protocol(_))));
    }

    #[test]
    fn cursor_moves_with_last_modified_and_etag() {
        let mut cursor = PollCursor::after(HeaderValue::from_static("17:3"));
        let req = cursor.apply(http::Request::builder()).body(()).unwrap();
        assert_eq!(req.headers()["last-event-id"], "17:3");
        assert!(!req.headers().contains_key(header::IF_NONE_MATCH));
        assert!(!cursor.update(&HeaderMap::new()));
        let mut answer = HeaderMap::new();
        answer.insert(
            header::LAST_MODIFIED,
            HeaderValue::from_static("Wed, 25 Nov 2026 21:56:20 GMT"),
        );
        answer.insert(header::ETAG, HeaderValue::from_static("1"));
        assert!(cursor.update(&answer));
        let req = cursor.apply(http::Request::builder()).body(()).unwrap();
        assert_eq!(
            req.headers()[header::IF_MODIFIED_SINCE],
            "Wed, 25 Nov 2026 21:56:20 GMT"
        );
        assert_eq!(req.headers()[header::IF_NONE_MATCH], "1");
        assert!(!req.headers().contains_key("last-event-id"));
    }
}

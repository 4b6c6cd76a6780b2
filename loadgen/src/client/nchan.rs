//! What the clients need to speak Nchan's dialect (described in [`crate::profile`]): where a
//! subscription starts, and how a poll names the last message it has.

use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tokio::io::AsyncWriteExt as _;

use super::answer::{end_head, header, start_get};
use super::raw::RawConn;
use crate::envelope::parse_nchan_last_message_id;
use crate::error::{status_error, ClientError};
use crate::profile::NCHAN_PUBLISH_PATH;
use crate::target::Target;

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
/// location, on `conn`, with `out` for the request): a poll that resumes after it gets exactly
/// what is published from now on.
///
/// A channel that does not exist yet (`404`) or holds no message (`0:0`) gives [`OLDEST_ID`]:
/// whatever it will hold is published from now on.
pub(crate) async fn newest_id(
    conn: &mut RawConn,
    out: &mut Vec<u8>,
    target: &Target,
    topic: &str,
) -> Result<HeaderValue, ClientError> {
    start_get(
        out,
        target.host(),
        format_args!("{NCHAN_PUBLISH_PATH}?topic={topic}"),
    );
    header(out, "Accept", b"text/json");
    end_head(out);
    conn.counters().add_request();
    conn.socket()?.write_all(out).await?;
    let reply = conn.read_answer(None).await?;
    let id = match reply.status {
        StatusCode::OK => parse_nchan_last_message_id(&reply.body)?,
        StatusCode::NOT_FOUND => return Ok(HeaderValue::from_static(OLDEST_ID)),
        other => return Err(status_error(other, &reply.body)),
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

    /// Adds the resume headers to a poll request being written in `out`.
    pub(crate) fn apply(&self, out: &mut Vec<u8>) {
        match &self.since {
            Some((modified, etag)) => {
                header(out, "If-Modified-Since", modified.as_bytes());
                header(out, "If-None-Match", etag.as_bytes());
            }
            None => header(out, "Last-Event-ID", self.start.as_bytes()),
        }
    }

    /// Moves on to the message an answer named with its `Last-Modified` and `Etag`.
    pub(crate) fn update(&mut self, modified_etag: (HeaderValue, HeaderValue)) {
        self.since = Some(modified_etag);
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
        let request = |cursor: &PollCursor| {
            let mut out = Vec::new();
            cursor.apply(&mut out);
            String::from_utf8(out).unwrap()
        };
        let mut cursor = PollCursor::after(HeaderValue::from_static("17:3"));
        assert_eq!(request(&cursor), "Last-Event-ID: 17:3\r\n");
        cursor.update((
            HeaderValue::from_static("Wed, 25 Nov 2026 21:56:20 GMT"),
            HeaderValue::from_static("1"),
        ));
        assert_eq!(
            request(&cursor),
            "If-Modified-Since: Wed, 25 Nov 2026 21:56:20 GMT\r\nIf-None-Match: 1\r\n"
        );
    }
}

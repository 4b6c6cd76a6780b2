//! HTTP plumbing shared by every server: the response body type, JSON error responses, and
//! query-string parsing.

use std::convert::Infallible;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::hub::HubError;
use crate::protocol::{Cursor, CursorError, DEFAULT_TOPIC};

/// Every server's response body: a full buffer or an endless stream, boxed once per response.
pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A request the server refuses, with the status and message the client sees as
/// `{"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400: a bad or missing value.
    #[error("{0}")]
    BadRequest(String),
    /// 403: the request is understood and refused (a demo control from another origin).
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such path.
    #[error("no such path: {0}")]
    NotFound(String),
    /// 405: the path exists but not for this method.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods allowed, for the `Allow` header.
        allow: &'static str,
    },
    /// 413: the body is larger than allowed.
    #[error("body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 431: the request line and headers are larger than allowed.
    #[error("request headers are larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// 503: a capacity limit was reached.
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The error as a JSON response.
    pub fn response(&self) -> Response<Body> {
        let (head, body) = self.parts();
        head.map(|()| full(body))
    }

    /// [`ApiError::response`]'s head and body apart, for what writes them without hyper.
    pub(crate) fn parts(&self) -> (Response<()>, Bytes) {
        let body = serde_json::json!({ "error": self.to_string() }).to_string();
        let mut head = head(self.status(), "application/json");
        if let ApiError::MethodNotAllowed { allow, .. } = self {
            head.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        (head, Bytes::from(body))
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::TopicLimit(_) => ApiError::Unavailable(e.to_string()),
            HubError::Payload(crate::protocol::PayloadError::TooLarge) => {
                ApiError::PayloadTooLarge(crate::protocol::MAX_PAYLOAD_BYTES)
            }
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

/// The size of a request head with a request target of `target_len` bytes and `headers`, as
/// it is held against `max_header_bytes`: the target, 16 bytes for the method and version, and
/// each header with its separators.
pub(crate) fn head_size(target_len: usize, headers: &HeaderMap) -> usize {
    headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum::<usize>()
        + target_len
        + 16
}

/// Reads a request body of at most `limit` bytes; a larger one is refused with 413, whether
/// its `Content-Length` says so or a chunked body turns out so while it is read.
pub async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let collected = Limited::new(body, limit).collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ApiError::PayloadTooLarge(limit)
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    Ok(collected.to_bytes())
}

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// A response with a JSON body and the headers every pushbench response carries.
pub fn json_response(status: StatusCode, body: Bytes) -> Response<Body> {
    response(status, "application/json", full(body))
}

/// A response with the given content type and the headers every pushbench response carries:
/// no caching (push data is never fresh twice) and CORS open to any origin, so a browser page
/// served from anywhere (the demo, a teacher's own page) can subscribe.
pub fn response(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    head(status, content_type).map(|()| body)
}

/// The status and headers of [`response`], without a body yet.
pub fn head(status: StatusCode, content_type: &'static str) -> Response<()> {
    let mut resp = Response::new(());
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    resp
}

/// The query values the protocol defines. Unknown keys are ignored, so browsers' cache
/// busters (`_=123`) do no harm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `topic`, or `default`.
    pub topic: String,
    /// `after`: where to resume, `ID` or `EPOCH-ID`.
    pub after: Option<Cursor>,
    /// `timeout_ms`: the long-poll hold time.
    pub timeout_ms: Option<u64>,
    /// `latest=1`: short polling answers with the newest event only (a client that wants the
    /// current state, not every change).
    pub latest: bool,
}

impl Query {
    /// Parses a query string (without the `?`).
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let mut q = Query {
            topic: DEFAULT_TOPIC.to_owned(),
            after: None,
            timeout_ms: None,
            latest: false,
        };
        for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            match &*key {
                "topic" => q.topic = value.into_owned(),
                "after" => q.after = Some(parse_cursor("after", &value)?),
                "timeout_ms" => q.timeout_ms = Some(parse_u64("timeout_ms", &value)?),
                "latest" => {
                    q.latest = match &*value {
                        "1" | "true" => true,
                        "0" | "false" => false,
                        other => {
                            return Err(ApiError::BadRequest(format!(
                                "latest must be 1, true, 0 or false, got {other:?}"
                            )))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

/// A cursor (`ID` or `EPOCH-ID`) from a query value or a `Last-Event-ID` header.
pub(crate) fn parse_cursor(key: &str, value: &str) -> Result<Cursor, ApiError> {
    value
        .parse()
        .map_err(|e: CursorError| ApiError::BadRequest(format!("{key}: {e}")))
}

fn parse_u64(key: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "{key} must be a whole number from 0 to {}, got {value:?}",
            u64::MAX
        ))
    })
}

/// Refuses any method but `method`, naming the allowed ones (`allow`) in the 405.
pub(crate) fn allow(
    req: &Request<Incoming>,
    method: &Method,
    allow: &'static str,
) -> Result<(), ApiError> {
    if req.method() == method {
        return Ok(());
    }
    Err(ApiError::MethodNotAllowed {
        method: req.method().to_string(),
        allow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_values() {
        let q = Query::parse(None).unwrap();
        assert_eq!(q.topic, "default");
        assert_eq!(q.after, None);
        let q = Query::parse(Some("topic=a%3Ab&after=7&timeout_ms=10&_=1")).unwrap();
        assert_eq!(q.topic, "a:b");
        assert_eq!(q.after, Some(Cursor::bare(7)));
        assert_eq!(q.timeout_ms, Some(10));
        let q = Query::parse(Some("after=0000beef-7")).unwrap();
        let epoch = crate::protocol::Epoch::from_bits(0xbeef);
        assert_eq!(q.after, Some(Cursor::of(epoch, 7)));
        for bad in [
            "after=-1",
            "after=x",
            "after=",
            "after=beef-7",
            "timeout_ms=1e3",
        ] {
            let err = Query::parse(Some(bad)).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST, "{bad}");
        }
    }

    #[test]
    fn errors_are_json() {
        let r = ApiError::NotFound("/x".into()).response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    }
}

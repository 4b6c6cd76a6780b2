//! Errors in FCM's shape: `{"error":{"code":N,"message":"...","status":"...","details":[...]}}`.
//!
//! `status` is the canonical gRPC status name FCM puts there; where FCM adds an `FcmError`
//! detail with a more specific `errorCode` (`UNREGISTERED`, `QUOTA_EXCEEDED`), so does this.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use crate::http::{json_response, ApiError, Body};

/// The `@type` of FCM's error detail.
const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";

/// A refused gateway request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FcmError {
    /// 400 `INVALID_ARGUMENT`: a malformed request or a value out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// 401 `UNAUTHENTICATED`: no or a wrong `Authorization: Bearer` token.
    #[error("Request is missing required authentication credential or had invalid credentials. Expected OAuth 2 access token (Authorization: Bearer <token>).")]
    Unauthenticated,
    /// 404 `NOT_FOUND` (`UNREGISTERED`): a registration token or notification key that is not
    /// (or no longer) registered.
    #[error("Requested entity was not found: {0}")]
    Unregistered(String),
    /// 404 `NOT_FOUND`: no such path.
    #[error("no such path: {0}")]
    NoSuchPath(String),
    /// 403 `PERMISSION_DENIED` (`SENDER_ID_MISMATCH`): a token or notification key of another
    /// project.
    #[error("SenderId mismatch: {0} belongs to another project than {1}")]
    SenderIdMismatch(String, String),
    /// 405: the path exists, not for this method.
    #[error("method {method} is not allowed here; use {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The methods allowed.
        allow: &'static str,
    },
    /// 413: a body past the gateway's read limit.
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    /// 429 `RESOURCE_EXHAUSTED` (`QUOTA_EXCEEDED`): the project's send quota is used up.
    #[error("Quota exceeded for quota metric 'Send requests' of project {project}: {per_minute} per minute")]
    QuotaExceeded {
        /// The project.
        project: String,
        /// Its quota.
        per_minute: u64,
        /// Seconds until the next send would be allowed.
        retry_after_s: u64,
    },
    /// 503 `UNAVAILABLE`: a capacity limit (devices, topics, groups) was reached.
    #[error("{0}")]
    Unavailable(String),
}

impl FcmError {
    /// The HTTP status, the gRPC status name, and FCM's `errorCode` detail, if any.
    fn parts(&self) -> (StatusCode, &'static str, Option<&'static str>) {
        match self {
            FcmError::InvalidArgument(_) => (
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
            ),
            FcmError::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None),
            FcmError::Unregistered(_) => (StatusCode::NOT_FOUND, "NOT_FOUND", Some("UNREGISTERED")),
            FcmError::NoSuchPath(_) => (StatusCode::NOT_FOUND, "NOT_FOUND", None),
            FcmError::SenderIdMismatch(..) => (
                StatusCode::FORBIDDEN,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
            ),
            FcmError::MethodNotAllowed { .. } => {
                (StatusCode::METHOD_NOT_ALLOWED, "INVALID_ARGUMENT", None)
            }
            FcmError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
            ),
            FcmError::QuotaExceeded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
            ),
            FcmError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
            ),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The error as FCM answers it.
    pub fn response(&self) -> Response<Body> {
        let (status, name, code) = self.parts();
        let mut error = serde_json::json!({
            "code": status.as_u16(),
            "message": self.to_string(),
            "status": name,
        });
        if let Some(code) = code {
            error["details"] = serde_json::json!([{ "@type": FCM_ERROR_TYPE, "errorCode": code }]);
        }
        let body = serde_json::json!({ "error": error }).to_string();
        let mut resp = json_response(status, Bytes::from(body));
        let h = resp.headers_mut();
        match self {
            FcmError::MethodNotAllowed { allow, .. } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            FcmError::QuotaExceeded { retry_after_s, .. } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                    h.insert(header::RETRY_AFTER, v);
                }
            }
            FcmError::Unauthenticated => {
                h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        resp
    }
}

/// The shared plumbing's refusals (body limits, bad upgrades) in FCM's shape.
impl From<ApiError> for FcmError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::PayloadTooLarge(n) => FcmError::TooLarge(n),
            ApiError::NotFound(p) => FcmError::NoSuchPath(p),
            ApiError::MethodNotAllowed { method, allow } => {
                FcmError::MethodNotAllowed { method, allow }
            }
            ApiError::Unavailable(m) => FcmError::Unavailable(m),
            other => FcmError::InvalidArgument(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn json(e: FcmError) -> (StatusCode, serde_json::Value) {
        let r = e.response();
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn errors_take_fcms_shape() {
        let (s, v) = json(FcmError::Unregistered("tok".into())).await;
        assert_eq!(s, 404);
        assert_eq!(v["error"]["code"], 404);
        assert_eq!(v["error"]["status"], "NOT_FOUND");
        assert_eq!(v["error"]["details"][0]["errorCode"], "UNREGISTERED");
        let (s, v) = json(FcmError::Unauthenticated).await;
        assert_eq!(s, 401);
        assert_eq!(v["error"]["status"], "UNAUTHENTICATED");
        let quota = FcmError::QuotaExceeded {
            project: "p".into(),
            per_minute: 1,
            retry_after_s: 3,
        };
        assert_eq!(quota.response().headers()[header::RETRY_AFTER], "3");
        let (s, v) = json(quota).await;
        assert_eq!(s, 429);
        assert_eq!(v["error"]["details"][0]["errorCode"], "QUOTA_EXCEEDED");
    }
}

//! The send API's request (`{"message":{...}}` in FCM HTTP v1's shape), its validation, and the
//! frame a device receives, encoded once per message whatever the fan-out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::condition::Condition;
use super::error::FcmError;
use super::token;
use super::topic::{normalize_topic, TopicName};

/// FCM's default and largest time to live: four weeks.
pub const MAX_TTL: Duration = Duration::from_secs(28 * 24 * 3600);

/// FCM's limit on a message's payload (data keys and values, notification texts).
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// Whom a message is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A registration token, or a device group's notification key.
    Token(String),
    /// Every device subscribed to a topic.
    Topic(TopicName),
    /// Every device whose topics satisfy a condition.
    Condition(Condition),
}

/// Notification messages are shown by the device's system; data messages go to the app. A
/// message with both is a notification message that also carries data, as in FCM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `notification` was set.
    Notification,
    /// Only `data`.
    Data,
}

/// `android.priority`. Carried to the device, not otherwise modelled (see docs/GATEWAY.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// The default for data messages.
    Normal,
    /// The default for notification messages.
    High,
}

/// `notification`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Body text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Image URL (carried, not fetched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

/// A validated send.
#[derive(Debug, Clone)]
pub struct Send {
    /// Whom it is for.
    pub target: Target,
    /// Notification or data.
    pub kind: Kind,
    /// How long it may wait for an offline device; zero is "now or never".
    pub ttl: Duration,
    /// A newer undelivered message with the same key replaces an older one.
    pub collapse_key: Option<Arc<str>>,
    /// Carried to the device.
    pub priority: Priority,
    /// The notification, for notification messages.
    pub notification: Option<Notification>,
    /// The data, string to string.
    pub data: BTreeMap<String, String>,
    /// `validate_only`: check, answer, send nothing.
    pub validate_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest {
    message: Option<RawMessage>,
    #[serde(default)]
    validate_only: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    token: Option<String>,
    topic: Option<String>,
    condition: Option<String>,
    notification: Option<Notification>,
    data: Option<BTreeMap<String, String>>,
    android: Option<RawAndroid>,
    // Accepted and ignored: part of FCM's message, not of this model.
    #[allow(dead_code)]
    name: Option<serde_json::Value>,
    #[allow(dead_code)]
    apns: Option<serde_json::Value>,
    #[allow(dead_code)]
    webpush: Option<serde_json::Value>,
    #[allow(dead_code)]
    fcm_options: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAndroid {
    ttl: Option<String>,
    collapse_key: Option<String>,
    priority: Option<String>,
    // Accepted and ignored, as above.
    #[allow(dead_code)]
    restricted_package_name: Option<serde_json::Value>,
    #[allow(dead_code)]
    notification: Option<serde_json::Value>,
    #[allow(dead_code)]
    data: Option<serde_json::Value>,
    #[allow(dead_code)]
    fcm_options: Option<serde_json::Value>,
    #[allow(dead_code)]
    direct_boot_ok: Option<serde_json::Value>,
}

fn invalid(msg: impl Into<String>) -> FcmError {
    FcmError::InvalidArgument(msg.into())
}

impl Send {
    /// Parses and validates a send request's body.
    pub fn parse(body: &[u8]) -> Result<Send, FcmError> {
        let raw: RawRequest = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("Invalid JSON payload received. {e}")))?;
        let msg = raw
            .message
            .ok_or_else(|| invalid("Request contains an invalid argument: message is required"))?;
        let target = match (msg.token, msg.topic, msg.condition) {
            (Some(t), None, None) => {
                token::check(&t)?;
                Target::Token(t)
            }
            (None, Some(t), None) => Target::Topic(normalize_topic(&t).map_err(invalid)?),
            (None, None, Some(c)) => Target::Condition(Condition::parse(&c).map_err(invalid)?),
            (None, None, None) => {
                return Err(invalid(
                    "Request contains an invalid argument: message must set one of token, topic or condition",
                ))
            }
            _ => {
                return Err(invalid(
                    "Request contains an invalid argument: message must set only one of token, topic or condition",
                ))
            }
        };
        let data = msg.data.unwrap_or_default();
        if let Some(key) = data.keys().find(|k| reserved_key(k)) {
            return Err(invalid(format!("Invalid data payload key: {key}")));
        }
        let notification = msg.notification;
        let size: usize = data.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
            + notification.as_ref().map_or(0, |n| {
                [&n.title, &n.body, &n.image]
                    .iter()
                    .map(|s| s.as_ref().map_or(0, String::len))
                    .sum()
            });
        if size > MAX_MESSAGE_BYTES {
            return Err(invalid(format!(
                "Message is too big: {size} bytes of payload, at most {MAX_MESSAGE_BYTES}"
            )));
        }
        if notification.is_none() && data.is_empty() {
            return Err(invalid(
                "Request contains an invalid argument: message must carry notification or data",
            ));
        }
        let kind = if notification.is_some() {
            Kind::Notification
        } else {
            Kind::Data
        };
        let android = msg.android;
        let ttl = match android.as_ref().and_then(|a| a.ttl.as_deref()) {
            Some(text) => parse_ttl(text).map_err(invalid)?,
            None => MAX_TTL,
        };
        let collapse_key = match android.as_ref().and_then(|a| a.collapse_key.as_deref()) {
            Some("") => return Err(invalid("android.collapse_key must not be empty")),
            Some(k) if k.len() > 256 => {
                return Err(invalid("android.collapse_key is longer than 256 bytes"))
            }
            Some(k) => Some(Arc::from(k)),
            None => None,
        };
        let priority = match android.as_ref().and_then(|a| a.priority.as_deref()) {
            None if kind == Kind::Notification => Priority::High,
            None => Priority::Normal,
            Some(p) if p.eq_ignore_ascii_case("high") => Priority::High,
            Some(p) if p.eq_ignore_ascii_case("normal") => Priority::Normal,
            Some(p) => {
                return Err(invalid(format!(
                    "Invalid value at 'message.android.priority' ({p:?}): expected \"high\" or \"normal\""
                )))
            }
        };
        Ok(Send {
            target,
            kind,
            ttl,
            collapse_key,
            priority,
            notification,
            data,
            validate_only: raw.validate_only,
        })
    }

    /// The frame every recipient gets, encoded once: `{"message_id":N,"kind":...,"from":...,
    /// "data":{...}}` (see docs/GATEWAY.md).
    pub fn frame(&self, id: u64, from: &str, sent_unix_ms: u64) -> Utf8Bytes {
        #[derive(Serialize)]
        struct Frame<'a> {
            message_id: u64,
            kind: Kind,
            from: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            collapse_key: Option<&'a str>,
            priority: Priority,
            sent_time_ms: u64,
            ttl_s: f64,
            #[serde(skip_serializing_if = "Option::is_none")]
            notification: Option<&'a Notification>,
            data: &'a BTreeMap<String, String>,
        }
        let frame = Frame {
            message_id: id,
            kind: self.kind,
            from,
            collapse_key: self.collapse_key.as_deref(),
            priority: self.priority,
            sent_time_ms: sent_unix_ms,
            ttl_s: self.ttl.as_secs_f64(),
            notification: self.notification.as_ref(),
            data: &self.data,
        };
        // Serialising plain strings and numbers cannot fail.
        Utf8Bytes::from(serde_json::to_string(&frame).unwrap_or_default())
    }
}

/// FCM refuses these data keys: they collide with its own fields.
fn reserved_key(key: &str) -> bool {
    matches!(key, "from" | "notification" | "message_type")
        || key.starts_with("google")
        || key.starts_with("gcm")
}

/// A protobuf `Duration` in JSON: seconds with up to nine decimals and an `s`, like `"3.5s"`.
pub fn parse_ttl(text: &str) -> Result<Duration, String> {
    let err = || {
        format!(
            "Invalid value at 'message.android.ttl' ({text:?}): expected seconds like \"3600s\" or \"0.5s\", at most {}s",
            MAX_TTL.as_secs()
        )
    };
    let digits = text.strip_suffix('s').ok_or_else(err)?;
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty()
        || whole.len() > 12
        || frac.len() > 9
        || !all_digits(whole)
        || !all_digits(frac)
    {
        return Err(err());
    }
    let secs: u64 = whole.parse().map_err(|_| err())?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| err())?
    };
    let ttl = Duration::new(secs, nanos);
    if ttl > MAX_TTL {
        return Err(err());
    }
    Ok(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Send, String> {
        Send::parse(json.as_bytes()).map_err(|e| e.to_string())
    }

    #[test]
    fn targets_kinds_and_options() {
        let s = parse(r#"{"message":{"topic":"/topics/news","data":{"a":"1"}}}"#).unwrap();
        assert_eq!(s.target, Target::Topic("news".into()));
        assert_eq!(
            (s.kind, s.priority, s.ttl),
            (Kind::Data, Priority::Normal, MAX_TTL)
        );
        let s = parse(
            r#"{"message":{"token":"pb:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                "notification":{"title":"T","body":"B"},
                "android":{"ttl":"1.5s","collapse_key":"score","priority":"HIGH"}}}"#,
        )
        .unwrap();
        assert_eq!(
            s.target,
            Target::Token("pb:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into())
        );
        assert_eq!(s.kind, Kind::Notification);
        assert_eq!(s.ttl, Duration::from_millis(1500));
        assert_eq!(s.collapse_key.as_deref(), Some("score"));
        assert_eq!(s.priority, Priority::High);
        let s = parse(
            r#"{"validate_only":true,"message":{"condition":"'a' in topics","data":{"k":"v"}}}"#,
        )
        .unwrap();
        assert!(s.validate_only);
        let frame = s.frame(7, "/topics/a", 1);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["message_id"], 7);
        assert_eq!(v["kind"], "data");
        assert_eq!(v["data"]["k"], "v");
    }

    #[test]
    fn refusals_say_why() {
        for (body, why) in [
            ("not json", "Invalid JSON"),
            ("{}", "message is required"),
            (r#"{"message":{"data":{"a":"1"}}}"#, "one of token"),
            (
                r#"{"message":{"token":"a","topic":"b","data":{"a":"1"}}}"#,
                "only one",
            ),
            (
                r#"{"message":{"topic":"a b","data":{"a":"1"}}}"#,
                "Invalid topic",
            ),
            (
                r#"{"message":{"topic":"a","data":{"a":1}}}"#,
                "expected a string",
            ),
            (
                r#"{"message":{"topic":"a","data":{"from":"x"}}}"#,
                "key: from",
            ),
            (r#"{"message":{"topic":"a"}}"#, "notification or data"),
            (
                r#"{"message":{"topic":"a","data":{"a":"1"},"bogus":1}}"#,
                "unknown field",
            ),
            (
                r#"{"message":{"topic":"a","data":{"a":"1"},"android":{"ttl":"10"}}}"#,
                "ttl",
            ),
            (
                r#"{"message":{"topic":"a","data":{"a":"1"},"android":{"priority":"max"}}}"#,
                "priority",
            ),
            (
                r#"{"message":{"condition":"'a' in","data":{"a":"1"}}}"#,
                "condition",
            ),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
        let big = format!(
            r#"{{"message":{{"topic":"a","data":{{"a":"{}"}}}}}}"#,
            "x".repeat(4096)
        );
        assert!(parse(&big).unwrap_err().contains("too big"));
    }

    #[test]
    fn ttl_format() {
        assert_eq!(parse_ttl("0s").unwrap(), Duration::ZERO);
        assert_eq!(parse_ttl("3600s").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_ttl("0.000000001s").unwrap(), Duration::from_nanos(1));
        for bad in [
            "",
            "s",
            "1",
            "-1s",
            "1.s5",
            "1.0000000001s",
            "2419201s",
            "1e3s",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }
}

//! The FCM-style gateway's dialect (`pushbench serve gateway`, docs/GATEWAY.md): what a run
//! against it sends, and the app-server calls devices and publishers make.
//!
//! Subscribers are devices: each registers (`POST /v1/devices:register`), subscribes to the
//! run's topic (`POST /iid/v1:batchAdd`) unless the run sends to tokens, and holds one WebSocket
//! (`GET /v1/devices/{token}/connect`), acknowledging every message. The publisher is an app
//! server: `POST /v1/projects/{project}/messages:send`, with the load generator's payload in
//! `data.pb`, so every delivery is timed from its due time like any other transport's.
//!
//! # Layout
//! - this file: the app-server calls (send, register, subscribe, probe, counters);
//! - `options`: what a run against the gateway sends, carried by its [`Target`].

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, StatusCode};
use http_body_util::Full;
use serde::Deserialize;

use crate::counters::Counters;
use crate::error::{status_error, ClientError};
use crate::http::HttpConn;
use crate::target::Target;

pub mod options;

pub use options::*;

/// A `POST` of a JSON body with the bearer token, if any; the answer's body on success.
pub(crate) async fn post_json(
    conn: &mut HttpConn,
    path: &str,
    auth: Option<&str>,
    body: Bytes,
) -> Result<Bytes, ClientError> {
    let mut req = conn
        .request(Method::POST, path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = auth {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| ClientError::Protocol(format!("invalid request {path:?}: {e}")))?;
    let response = conn.send(req).await?;
    let status = response.status();
    let body = conn.read_body(response.into_body()).await?;
    if status != StatusCode::OK {
        return Err(status_error(status, &body));
    }
    Ok(body)
}

/// Sends `payload` as the run says (to the topic, or to every token) and returns the last
/// message id the gateway gave.
pub(crate) async fn send(
    conn: &mut HttpConn,
    options: &GatewayOptions,
    topic: &str,
    payload: &[u8],
) -> Result<u64, ClientError> {
    #[derive(Deserialize)]
    struct Sent {
        name: String,
    }
    let payload = std::str::from_utf8(payload)
        .map_err(|_| ClientError::Protocol("a gateway payload must be UTF-8".into()))?;
    let path = options.send_path();
    let auth = options.auth_token.as_deref();
    let bodies: Vec<Bytes> = match options.send_to {
        SendTo::Topic => vec![options.send_body("topic", topic, payload)],
        SendTo::Token => options
            .tokens
            .iter()
            .map(|t| options.send_body("token", t, payload))
            .collect(),
    };
    let mut last = 0;
    for body in bodies {
        let answer = post_json(conn, &path, auth, body).await?;
        let sent: Sent = serde_json::from_slice(&answer)
            .map_err(|e| ClientError::Protocol(format!("bad send answer: {e}")))?;
        last = sent
            .name
            .rsplit('/')
            .next()
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| ClientError::Protocol(format!("bad message name {:?}", sent.name)))?;
    }
    Ok(last)
}

/// Registers one device of the run's project on `conn` and returns its token.
pub(crate) async fn register_on(
    conn: &mut HttpConn,
    options: &GatewayOptions,
) -> Result<String, ClientError> {
    #[derive(Deserialize)]
    struct Registered {
        token: String,
    }
    let body = Bytes::from(serde_json::json!({ "project": options.project }).to_string());
    let auth = options.registration_token.as_deref();
    let answer = post_json(conn, "/v1/devices:register", auth, body).await?;
    let r: Registered = serde_json::from_slice(&answer)
        .map_err(|e| ClientError::Protocol(format!("bad register answer: {e}")))?;
    Ok(r.token)
}

/// Subscribes `tokens` to `topic` (Instance ID `batchAdd`); any per-token error fails.
pub(crate) async fn subscribe_on(
    conn: &mut HttpConn,
    auth: Option<&str>,
    topic: &str,
    tokens: &[String],
) -> Result<(), ClientError> {
    #[derive(Deserialize)]
    struct Results {
        results: Vec<serde_json::Map<String, serde_json::Value>>,
    }
    let body =
        serde_json::json!({ "to": format!("/topics/{topic}"), "registration_tokens": tokens });
    let answer = post_json(
        conn,
        "/iid/v1:batchAdd",
        auth,
        Bytes::from(body.to_string()),
    )
    .await?;
    let r: Results = serde_json::from_slice(&answer)
        .map_err(|e| ClientError::Protocol(format!("bad batchAdd answer: {e}")))?;
    if let Some(err) = r.results.iter().find_map(|m| m.get("error")) {
        return Err(ClientError::Protocol(format!(
            "batchAdd refused a token: {err}"
        )));
    }
    Ok(())
}

/// Readies a run's sending before any device connects: checks that the gateway accepts its
/// sends ([`probe`]) and, when it sends to tokens, registers the devices so the publisher knows
/// them. Returns the options to run with, or why the gateway refused.
pub async fn prepare(
    target: &Target,
    options: &GatewayOptions,
    topic: &str,
    devices: usize,
) -> Result<GatewayOptions, String> {
    let mut options = options.clone();
    probe(target, &options, topic)
        .await
        .map_err(|e| format!("a test send was refused: {e}"))?;
    if options.send_to == SendTo::Token {
        let tokens = register_devices(target, &options, devices)
            .await
            .map_err(|e| format!("registering devices: {e}"))?;
        options.tokens = Arc::new(tokens);
    }
    Ok(options)
}

/// Checks, before any device connects, that the gateway accepts this run's sends (token,
/// project, options): a `validate_only` send, which the gateway answers without sending.
pub async fn probe(
    target: &Target,
    options: &GatewayOptions,
    topic: &str,
) -> Result<(), ClientError> {
    let counters = Arc::new(Counters::default());
    let mut conn = HttpConn::open(target, &counters).await?;
    let body = options.send_body("topic", topic, "probe");
    let mut value: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("probe body: {e}")))?;
    value["validate_only"] = true.into();
    let body = Bytes::from(value.to_string());
    post_json(
        &mut conn,
        &options.send_path(),
        options.auth_token.as_deref(),
        body,
    )
    .await
    .map(|_| ())
}

/// Registers `count` devices of `options.project` over one connection (the load generator does
/// this itself when it sends to tokens, so that the publisher knows them).
pub async fn register_devices(
    target: &Target,
    options: &GatewayOptions,
    count: usize,
) -> Result<Vec<String>, ClientError> {
    let counters = Arc::new(Counters::default());
    let mut conn = HttpConn::open(target, &counters).await?;
    let mut tokens = Vec::with_capacity(count);
    for _ in 0..count {
        tokens.push(register_on(&mut conn, options).await?);
    }
    Ok(tokens)
}

/// Unregisters `tokens` (`DELETE /v1/devices/{token}`) over one keep-alive connection, so the
/// next run against the same gateway starts without this run's devices. Returns how many
/// were removed.
pub async fn unregister_devices(target: &Target, tokens: &[String]) -> Result<usize, ClientError> {
    let counters = Arc::new(Counters::default());
    let mut conn = HttpConn::open(target, &counters).await?;
    let mut removed = 0;
    for token in tokens {
        if conn.is_closed() {
            conn = HttpConn::open(target, &counters).await?;
        }
        let path = format!("/v1/devices/{token}");
        let req = conn
            .request(Method::DELETE, &path)
            .body(crate::http::empty())
            .map_err(|e| ClientError::Protocol(format!("invalid request {path:?}: {e}")))?;
        let response = conn.send(req).await?;
        let ok = response.status() == StatusCode::OK;
        conn.read_body(response.into_body()).await?;
        removed += usize::from(ok);
    }
    Ok(removed)
}

/// Reads the gateway's counters (`/stats`, under `gateway`).
pub async fn counters(target: &Target) -> Option<serde_json::Map<String, serde_json::Value>> {
    let (status, body) = crate::http::get(target, "/stats").await.ok()?;
    if !status.is_success() {
        return None;
    }
    let mut v: serde_json::Value = serde_json::from_slice(&body).ok()?;
    match v.get_mut("gateway")?.take() {
        serde_json::Value::Object(m) => Some(m),
        _ => None,
    }
}

/// `after − before` for every numeric counter.
pub fn counters_delta(
    before: &serde_json::Map<String, serde_json::Value>,
    after: &serde_json::Map<String, serde_json::Value>,
) -> std::collections::BTreeMap<String, i64> {
    after
        .iter()
        .filter_map(|(k, v)| {
            let a = v.as_u64()? as i64;
            let b = before.get(k).and_then(|v| v.as_u64()).unwrap_or(0) as i64;
            Some((k.clone(), a - b))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn offline_devices_are_spread_evenly() {
        let o = Offline {
            fraction: 0.25,
            at: Duration::ZERO,
            duration: Duration::ZERO,
        };
        let picked: Vec<usize> = (0..8).filter(|&i| o.includes(i)).collect();
        assert_eq!(picked, [3, 7]);
        let all = Offline { fraction: 1.0, ..o };
        assert!((0..5).all(|i| all.includes(i)));
    }

    #[test]
    fn send_body_shape() {
        let o = GatewayOptions {
            ttl: Some(Duration::from_millis(1500)),
            collapse_key: Some("k".into()),
            notification: true,
            ..GatewayOptions::default()
        };
        let v: serde_json::Value =
            serde_json::from_slice(&o.send_body("topic", "t", "pb1 0 1 ")).unwrap();
        assert_eq!(v["message"]["topic"], "t");
        assert_eq!(v["message"]["data"]["pb"], "pb1 0 1 ");
        assert_eq!(v["message"]["android"]["ttl"], "1.500s");
        assert_eq!(v["message"]["android"]["collapse_key"], "k");
        assert_eq!(v["message"]["notification"]["title"], "pushbench");
        // The token never reaches a report.
        let o = GatewayOptions {
            auth_token: Some("secret".into()),
            ..o
        };
        assert!(!serde_json::to_string(&o).unwrap().contains("secret"));
    }
}

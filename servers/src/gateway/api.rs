//! The gateway's HTTP endpoints, each in the shape of the FCM API it models:
//!
//! | endpoint | FCM counterpart |
//! |---|---|
//! | `POST /v1/projects/{p}/messages:send` | HTTP v1 `projects.messages.send` |
//! | `POST /v1/devices:register` | the client SDK's token registration |
//! | `GET`, `DELETE /v1/devices/{token}` | Instance ID info, `deleteToken` |
//! | `GET /v1/devices/{token}/connect` | the SDK's one connection to the transport layer |
//! | `POST /iid/v1:batchAdd`, `:batchRemove` | Instance ID topic management |
//! | `POST`, `GET /fcm/notification` | device group management |
//! | `GET /v1/projects/{p}/upstream` | upstream messages (FCM: XMPP; here an SSE stream) |
//!
//! App-server endpoints (send, topics, groups, upstream) need `Authorization: Bearer TOKEN`
//! when the gateway has an auth token; device endpoints need only the registration token.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::error::FcmError;
use super::message::Send;
use super::relay::Gateway;
use super::session::{self, upstream_topic, DEVICES};
use super::token;
use super::topic::normalize_topic;
use crate::http::{json_response, read_body, Body, Query};
use crate::state::{App, ConnSlot};

/// Largest request body: a send's payload is at most 4 KiB, its JSON a few times that.
const MAX_BODY: usize = 64 * 1024;

/// Most tokens in one Instance ID batch request (FCM's limit).
const MAX_BATCH: usize = 1000;

/// Project of a device that registers without naming one.
pub const DEFAULT_PROJECT: &str = "pushbench";

const PROJECTS: &str = "/v1/projects/";
const REGISTER: &str = "/v1/devices:register";
const BATCH_ADD: &str = "/iid/v1:batchAdd";
const BATCH_REMOVE: &str = "/iid/v1:batchRemove";
const GROUPS: &str = "/fcm/notification";

/// Answers one gateway request; errors become FCM-shaped responses here.
pub(crate) async fn route(
    app: &Arc<App>,
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Response<Body> {
    match dispatch(app, gw, req, slot).await {
        Ok(resp) => resp,
        Err(err) => err.response(),
    }
}

async fn dispatch(
    app: &Arc<App>,
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    slot: &ConnSlot,
) -> Result<Response<Body>, FcmError> {
    let path = req.uri().path().to_owned();
    if let Some(rest) = path.strip_prefix(PROJECTS) {
        let (project, action) = rest.split_once('/').unwrap_or((rest, ""));
        check_project(project)?;
        return match action {
            "messages:send" => {
                allow(&req, &Method::POST, "POST")?;
                authorize(gw, &req)?;
                send(gw, project, req).await
            }
            "upstream" => {
                allow(&req, &Method::GET, "GET")?;
                authorize(gw, &req)?;
                let query = Query::parse(req.uri().query())?;
                let query = Query {
                    topic: upstream_topic(project),
                    ..query
                };
                Ok(crate::transport::sse::handle(app, &req, query)?)
            }
            _ => Err(FcmError::NoSuchPath(path)),
        };
    }
    if path == REGISTER {
        allow(&req, &Method::POST, "POST")?;
        // With `--registration-token`, only devices given it may register: without it,
        // anyone who can reach the gateway can fill `--max-devices`.
        bearer(gw.config.registration_token.as_deref(), &req)?;
        return register(gw, req).await;
    }
    if let Some(rest) = path.strip_prefix(DEVICES) {
        if let Some(token) = rest.strip_suffix("/connect") {
            allow(&req, &Method::GET, "GET")?;
            token::check(token)?;
            let device = gw
                .registry
                .device(token)
                .ok_or_else(|| FcmError::Unregistered(token.to_owned()))?;
            return session::connect(app, device, req, slot);
        }
        let token = rest;
        if matches!(*req.method(), Method::GET | Method::DELETE) {
            token::check(token)?;
        }
        return match *req.method() {
            Method::GET => device_info(gw, token),
            Method::DELETE => {
                gw.registry.unregister(token, &gw.stats)?;
                Ok(json(StatusCode::OK, serde_json::json!({})))
            }
            _ => Err(FcmError::MethodNotAllowed {
                method: req.method().to_string(),
                allow: "GET, DELETE",
            }),
        };
    }
    if path == BATCH_ADD || path == BATCH_REMOVE {
        allow(&req, &Method::POST, "POST")?;
        authorize(gw, &req)?;
        return batch(gw, req, path == BATCH_ADD).await;
    }
    if path == GROUPS {
        authorize(gw, &req)?;
        return match *req.method() {
            Method::POST => group(gw, req).await,
            Method::GET => group_key(gw, &req),
            _ => Err(FcmError::MethodNotAllowed {
                method: req.method().to_string(),
                allow: "GET, POST",
            }),
        };
    }
    Err(FcmError::NoSuchPath(path))
}

fn allow(req: &Request<Incoming>, method: &Method, allow: &'static str) -> Result<(), FcmError> {
    Ok(crate::http::allow(req, method, allow)?)
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    json_response(status, Bytes::from(value.to_string()))
}

/// Checks an app server's `Authorization: Bearer TOKEN` against the gateway's token, when it
/// has one.
fn authorize(gw: &Gateway, req: &Request<Incoming>) -> Result<(), FcmError> {
    bearer(gw.config.auth_token.as_deref(), req)
}

/// Checks `Authorization: Bearer TOKEN` against `expected`, when there is one.
fn bearer(expected: Option<&str>, req: &Request<Incoming>) -> Result<(), FcmError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match given {
        Some(token) if same(token.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(FcmError::Unauthenticated),
    }
}

/// Compares in time independent of where the first difference is, so the token cannot be
/// guessed a byte at a time from response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_project(project: &str) -> Result<(), FcmError> {
    let ok = !project.is_empty()
        && project.len() <= 64
        && project
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(FcmError::InvalidArgument(format!(
            "Invalid project id {project:?}: 1 to 64 of [A-Za-z0-9-_.]"
        )))
    }
}

async fn body(req: Request<Incoming>) -> Result<Bytes, FcmError> {
    Ok(read_body(req.into_body(), MAX_BODY).await?)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, FcmError> {
    serde_json::from_slice(body)
        .map_err(|e| FcmError::InvalidArgument(format!("Invalid JSON payload received. {e}")))
}

async fn send(
    gw: &Gateway,
    project: &str,
    req: Request<Incoming>,
) -> Result<Response<Body>, FcmError> {
    let body = body(req).await?;
    let send = Send::parse(&body)?;
    let id = gw.send(project, &send)?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "name": format!("projects/{project}/messages/{id}") }),
    ))
}

async fn register(gw: &Gateway, req: Request<Incoming>) -> Result<Response<Body>, FcmError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Register {
        project: Option<String>,
    }
    let body = body(req).await?;
    let project = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        parse_json::<Register>(&body)?.project
    };
    let project = project.as_deref().unwrap_or(DEFAULT_PROJECT);
    check_project(project)?;
    let device = gw.registry.register(project, &gw.stats)?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "token": &*device.token, "project": project }),
    ))
}

fn device_info(gw: &Gateway, token: &str) -> Result<Response<Body>, FcmError> {
    let device = gw
        .registry
        .device(token)
        .ok_or_else(|| FcmError::Unregistered(token.to_owned()))?;
    let st = device.state();
    let mut topics: Vec<&str> = st.topics.iter().map(|t| &**t).collect();
    topics.sort_unstable();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({
            "token": &*device.token,
            "project": &*device.project,
            "online": st.session.is_some(),
            "queued": st.queue.len(),
            "topics": topics,
        }),
    ))
}

async fn batch(
    gw: &Gateway,
    req: Request<Incoming>,
    add: bool,
) -> Result<Response<Body>, FcmError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        to: String,
        registration_tokens: Vec<String>,
    }
    let body = body(req).await?;
    let b: Batch = parse_json(&body)?;
    let Some(name) = b.to.strip_prefix("/topics/") else {
        return Err(FcmError::InvalidArgument(format!(
            "\"to\" must be /topics/NAME, got {:?}",
            b.to
        )));
    };
    let topic = normalize_topic(name).map_err(FcmError::InvalidArgument)?;
    if b.registration_tokens.is_empty() || b.registration_tokens.len() > MAX_BATCH {
        return Err(FcmError::InvalidArgument(format!(
            "registration_tokens must hold 1 to {MAX_BATCH} tokens"
        )));
    }
    let results: Vec<serde_json::Value> = gw
        .registry
        .batch(&topic, &b.registration_tokens, add, &gw.stats)
        .into_iter()
        .map(|r| match r {
            None => serde_json::json!({}),
            Some(e) => serde_json::json!({ "error": e }),
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "results": results }),
    ))
}

async fn group(gw: &Gateway, req: Request<Incoming>) -> Result<Response<Body>, FcmError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Op {
        operation: String,
        #[serde(default)]
        notification_key_name: String,
        notification_key: Option<String>,
        registration_ids: Vec<String>,
    }
    let project = group_project(&req)?;
    let body = body(req).await?;
    let op: Op = parse_json(&body)?;
    let key = gw.registry.group(
        &project,
        &op.operation,
        &op.notification_key_name,
        op.notification_key.as_deref(),
        &op.registration_ids,
        &gw.stats,
    )?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "notification_key": key }),
    ))
}

/// The project a device-group request acts in: its `project_id` header, as FCM's device group
/// API takes it, or the default project.
fn group_project(req: &Request<Incoming>) -> Result<String, FcmError> {
    let project = match req.headers().get("project_id") {
        None => DEFAULT_PROJECT,
        Some(v) => v
            .to_str()
            .map_err(|_| FcmError::InvalidArgument("project_id is not text".into()))?,
    };
    check_project(project)?;
    Ok(project.to_owned())
}

/// `GET /fcm/notification?notification_key_name=NAME`: the group's key.
fn group_key(gw: &Gateway, req: &Request<Incoming>) -> Result<Response<Body>, FcmError> {
    let project = group_project(req)?;
    let name = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "notification_key_name")
        .map(|(_, v)| v.into_owned())
        .ok_or_else(|| FcmError::InvalidArgument("notification_key_name is required".into()))?;
    let key = gw
        .registry
        .group_key(&project, &name)
        .ok_or_else(|| FcmError::Unregistered(name.clone()))?;
    Ok(json(
        StatusCode::OK,
        serde_json::json!({ "notification_key": key }),
    ))
}

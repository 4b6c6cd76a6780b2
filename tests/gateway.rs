//! The FCM-style gateway over real sockets: the send API with each target, every error shape,
//! authentication, the device WebSocket (kinds, acks, resends), offline store-and-forward with
//! TTL and collapse keys, device groups, conditions, upstream, and shutdown.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Reply, TestServer, STEP};
use futures_util::{SinkExt, StreamExt};
use pushbench_servers::gateway::GatewayConfig;
use pushbench_servers::ServerConfig;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const AUTH: &str = "s3cret";

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn gateway() -> TestServer {
    gateway_with(GatewayConfig {
        auth_token: Some(AUTH.into()),
        ..GatewayConfig::default()
    })
    .await
}

async fn gateway_with(config: GatewayConfig) -> TestServer {
    TestServer::start_gateway(config, ServerConfig::default()).await
}

/// One request with an optional bearer token and JSON body.
async fn call(addr: SocketAddr, method: &str, path: &str, auth: Option<&str>, body: &str) -> Reply {
    call_in(addr, None, method, path, auth, body).await
}

/// [`call`] with a device-group request's `project_id` header, when `project` is given.
async fn call_in(
    addr: SocketAddr,
    project: Option<&str>,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> Reply {
    let auth = auth.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let project = project.map_or(String::new(), |p| format!("project_id: {p}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{auth}{project}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    common::raw(addr, req.as_bytes()).await
}

async fn send(addr: SocketAddr, message: Value) -> Reply {
    let body = json!({ "message": message }).to_string();
    call(
        addr,
        "POST",
        "/v1/projects/demo/messages:send",
        Some(AUTH),
        &body,
    )
    .await
}

/// Sends and returns the message id from `projects/demo/messages/ID`.
async fn send_ok(addr: SocketAddr, message: Value) -> u64 {
    let r = send(addr, message).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let name = r.json()["name"].as_str().unwrap().to_owned();
    let id = name.strip_prefix("projects/demo/messages/").expect(&name);
    id.parse().unwrap()
}

/// Sends `count` messages to `token`, numbered in their data; returns their ids.
async fn send_numbered(addr: SocketAddr, token: &str, count: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for n in 0..count {
        ids.push(send_ok(addr, json!({"token": token, "data": {"n": n.to_string()}})).await);
    }
    ids
}

/// Registers a device of project `demo`, the one [`send`] sends in.
async fn register(addr: SocketAddr) -> String {
    let r = call(
        addr,
        "POST",
        "/v1/devices:register",
        None,
        r#"{"project":"demo"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_owned()
}

async fn subscribe(addr: SocketAddr, topic: &str, tokens: &[&str]) -> Value {
    let body = json!({ "to": format!("/topics/{topic}"), "registration_tokens": tokens });
    let r = call(
        addr,
        "POST",
        "/iid/v1:batchAdd",
        Some(AUTH),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

async fn connect(addr: SocketAddr, token: &str) -> Ws {
    let url = format!("ws://{addr}/v1/devices/{token}/connect");
    let (ws, _) = tokio::time::timeout(STEP, tokio_tungstenite::connect_async(url))
        .await
        .expect("connected in time")
        .unwrap();
    ws
}

/// The next text frame as JSON (pings skipped).
async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(STEP, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

/// Receives a message frame and acknowledges it.
async fn receive(ws: &mut Ws) -> Value {
    let m = next_json(ws).await;
    let id = m["message_id"].as_u64().unwrap_or_else(|| panic!("{m}"));
    ws.send(Message::text(json!({ "ack": id }).to_string()))
        .await
        .unwrap();
    m
}

/// Reads until the gateway closes `ws`, and checks the close code.
async fn expect_close(ws: &mut Ws, code: CloseCode) {
    loop {
        match tokio::time::timeout(STEP, ws.next()).await.unwrap() {
            Some(Ok(Message::Close(Some(f)))) => {
                assert_eq!(f.code, code);
                return;
            }
            Some(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}

/// Nothing arrives on `ws` for a while.
async fn quiet(ws: &mut Ws) {
    match tokio::time::timeout(Duration::from_millis(300), ws.next()).await {
        Err(_) => {}
        Ok(other) => panic!("expected nothing, got {other:?}"),
    }
}

async fn gateway_stats(addr: SocketAddr) -> Value {
    let r = common::get(addr, "/stats").await;
    assert_eq!(r.status, 200);
    r.json()["gateway"].clone()
}

/// Polls `/stats` until `pred` holds (acks travel asynchronously).
async fn stats_until(addr: SocketAddr, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let s = gateway_stats(addr).await;
        if pred(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stats never matched: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn curl_shaped_send_reaches_a_connected_device_and_is_acked() {
    let gw = gateway().await;
    let token = register(gw.addr).await;
    let mut ws = connect(gw.addr, &token).await;
    let id = send_ok(
        gw.addr,
        json!({"token": token, "data": {"score": "3-1"}, "android": {"priority": "high"}}),
    )
    .await;
    let m = receive(&mut ws).await;
    assert_eq!(m["message_id"], id);
    assert_eq!(m["kind"], "data");
    assert_eq!(m["data"]["score"], "3-1");
    assert_eq!(m["priority"], "high");
    assert_eq!(m["from"], "demo");
    let s = stats_until(gw.addr, |s| s["acked"] == 1).await;
    assert_eq!(
        (s["delivered"].as_u64(), s["queued"].as_u64()),
        (Some(1), Some(0))
    );
    // Notification messages arrive as their own kind (high priority by default).
    send_ok(
        gw.addr,
        json!({"token": token, "notification": {"title": "T", "body": "B"}}),
    )
    .await;
    let m = receive(&mut ws).await;
    assert_eq!(
        (m["kind"].as_str(), m["priority"].as_str()),
        (Some("notification"), Some("high"))
    );
    assert_eq!(m["notification"]["title"], "T");
    // TTL zero is "now or never": a connected device gets it now.
    let id = send_ok(
        gw.addr,
        json!({"token": token, "data": {"a": "now"}, "android": {"ttl": "0s"}}),
    )
    .await;
    assert_eq!(receive(&mut ws).await["message_id"], id);
    // /metrics carries the gateway's counters.
    let metrics = common::get(gw.addr, "/metrics").await.text();
    assert!(
        metrics.contains("pushbench_gateway_acked_total{transport=\"gateway\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn topics_conditions_and_groups_target_the_right_devices() {
    let gw = gateway().await;
    let mut devices = Vec::new();
    for _ in 0..4 {
        let t = register(gw.addr).await;
        let ws = connect(gw.addr, &t).await;
        devices.push((t, ws));
    }
    let tok: Vec<String> = devices.iter().map(|(t, _)| t.clone()).collect();
    // a: devices 0, 1; b: devices 1, 2; c: device 3.
    let nobody = format!("pb:{}", "A".repeat(32));
    let r = subscribe(gw.addr, "a", &[&tok[0], &tok[1], &nobody, "no-such-token"]).await;
    assert_eq!(
        r,
        json!({"results": [{}, {}, {"error": "NOT_FOUND"}, {"error": "INVALID_ARGUMENT"}]})
    );
    subscribe(gw.addr, "b", &[&tok[1], &tok[2]]).await;
    subscribe(gw.addr, "c", &[&tok[3]]).await;

    // Which devices got message `id`, reading each one's next frame or its silence.
    async fn who_got(devices: &mut [(String, Ws)], id: u64) -> Vec<usize> {
        let mut got = Vec::new();
        for (i, (_, ws)) in devices.iter_mut().enumerate() {
            if let Ok(Some(Ok(Message::Text(t)))) =
                tokio::time::timeout(Duration::from_millis(300), ws.next()).await
            {
                let m: Value = serde_json::from_str(&t).unwrap();
                assert_eq!(m["message_id"], id, "{m}");
                ws.send(Message::text(json!({ "ack": id }).to_string()))
                    .await
                    .unwrap();
                got.push(i);
            }
        }
        got
    }
    let id = send_ok(gw.addr, json!({"topic": "a", "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [0, 1]);
    let id = send_ok(gw.addr, json!({"topic": "/topics/b", "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [1, 2]);
    let cond = "'a' in topics && 'b' in topics";
    let id = send_ok(gw.addr, json!({"condition": cond, "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [1]);
    let cond = "('a' in topics || 'c' in topics) && !('b' in topics)";
    let id = send_ok(gw.addr, json!({"condition": cond, "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [0, 3]);
    // A topic nobody listens to is not an error; it reaches nobody.
    let id = send_ok(gw.addr, json!({"topic": "empty", "data": {"k": "v"}})).await;
    assert!(who_got(&mut devices, id).await.is_empty());
    // Unsubscribe device 0 from a.
    let body = json!({"to": "/topics/a", "registration_tokens": [&tok[0]]});
    let r = call(
        gw.addr,
        "POST",
        "/iid/v1:batchRemove",
        Some(AUTH),
        &body.to_string(),
    )
    .await;
    assert_eq!(r.json(), json!({"results": [{}]}));
    let id = send_ok(gw.addr, json!({"topic": "a", "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [1]);

    // Device groups: create, send by notification key, add, remove.
    let op = |body: Value| {
        let addr = gw.addr;
        async move {
            call_in(
                addr,
                Some("demo"),
                "POST",
                "/fcm/notification",
                Some(AUTH),
                &body.to_string(),
            )
            .await
        }
    };
    let r = op(
        json!({"operation": "create", "notification_key_name": "user-1",
                      "registration_ids": [&tok[0], &tok[2]]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let key = r.json()["notification_key"].as_str().unwrap().to_owned();
    let id = send_ok(gw.addr, json!({"token": key, "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [0, 2]);
    let r = op(
        json!({"operation": "add", "notification_key_name": "user-1",
                      "notification_key": key, "registration_ids": [&tok[3]]}),
    )
    .await;
    assert_eq!(r.json()["notification_key"], key.as_str());
    let r = op(json!({"operation": "remove", "notification_key": key,
                      "registration_ids": [&tok[0]]}))
    .await;
    assert_eq!(r.status, 200);
    let id = send_ok(gw.addr, json!({"token": key, "data": {"k": "v"}})).await;
    assert_eq!(who_got(&mut devices, id).await, [2, 3]);
    let r = call_in(
        gw.addr,
        Some("demo"),
        "GET",
        "/fcm/notification?notification_key_name=user-1",
        Some(AUTH),
        "",
    )
    .await;
    assert_eq!(r.json()["notification_key"], key.as_str());
    // Removing the last members deletes the group, as FCM does.
    op(json!({"operation": "remove", "notification_key": key, "registration_ids": [&tok[2], &tok[3]]})).await;
    let r = send(gw.addr, json!({"token": key, "data": {"k": "v"}})).await;
    assert_eq!(r.status, 404, "{}", r.text());
    let r = op(json!({"operation": "create", "notification_key_name": "x",
                      "registration_ids": [nobody]}))
    .await;
    assert_eq!(r.status, 404);
    let r = op(json!({"operation": "create", "notification_key_name": "x",
                      "registration_ids": ["no-such-token"]}))
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let r = op(json!({"operation": "explode", "registration_ids": [&tok[0]]})).await;
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    // At most 20 devices per group; a refused add changes nothing.
    let mut many = Vec::new();
    for _ in 0..21 {
        many.push(register(gw.addr).await);
    }
    let r = op(
        json!({"operation": "create", "notification_key_name": "big",
                      "registration_ids": &many}),
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    let r = op(
        json!({"operation": "create", "notification_key_name": "big",
                      "registration_ids": &many[..20]}),
    )
    .await;
    let key = r.json()["notification_key"].as_str().unwrap().to_owned();
    let r = op(json!({"operation": "add", "notification_key": key,
                      "registration_ids": [&many[20], &tok[0]]}))
    .await;
    assert_eq!(r.status, 400, "{}", r.text());
    // Had the refused add taken even one device, the group would outlive its 20 members.
    op(json!({"operation": "remove", "notification_key": key, "registration_ids": &many[..20]}))
        .await;
    let r = send(gw.addr, json!({"token": key, "data": {"k": "v"}})).await;
    assert_eq!(r.status, 404, "{}", r.text());
}

#[tokio::test]
async fn bad_requests_get_fcm_shaped_errors() {
    let gw = gateway().await;
    let token = register(gw.addr).await;
    let check = |r: &Reply, code: u16, status: &str| {
        assert_eq!(r.status, code, "{}", r.text());
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let e = &r.json()["error"];
        assert_eq!(e["code"], code, "{}", r.text());
        assert_eq!(e["status"], status, "{}", r.text());
        assert!(!e["message"].as_str().unwrap().is_empty());
    };
    let path = "/v1/projects/demo/messages:send";
    for body in [
        "not json",
        "{}",
        r#"{"message":{"data":{"a":"1"}}}"#,
        r#"{"message":{"token":"x","topic":"y","data":{"a":"1"}}}"#,
        r#"{"message":{"topic":"bad topic!","data":{"a":"1"}}}"#,
        r#"{"message":{"topic":"a","data":{"n":1}}}"#,
        r#"{"message":{"topic":"a","data":{"from":"x"}}}"#,
        r#"{"message":{"topic":"a","data":{"a":"1"},"android":{"ttl":"forever"}}}"#,
        r#"{"message":{"topic":"a","data":{"a":"1"},"android":{"priority":"urgent"}}}"#,
        r#"{"message":{"condition":"'a' in topics &&","data":{"a":"1"}}}"#,
        r#"{"message":{"topic":"a","data":{"a":"1"},"unknown_field":true}}"#,
    ] {
        let r = call(gw.addr, "POST", path, Some(AUTH), body).await;
        check(&r, 400, "INVALID_ARGUMENT");
        assert_eq!(
            r.json()["error"]["details"][0]["errorCode"],
            "INVALID_ARGUMENT"
        );
    }
    let big = json!({"message": {"topic": "a", "data": {"a": "x".repeat(5000)}}}).to_string();
    check(
        &call(gw.addr, "POST", path, Some(AUTH), &big).await,
        400,
        "INVALID_ARGUMENT",
    );
    // Past the 64 KiB body limit: 413, still in FCM's shape.
    let huge = json!({"message": {"topic": "a", "data": {"a": "x".repeat(70_000)}}}).to_string();
    check(
        &call(gw.addr, "POST", path, Some(AUTH), &huge).await,
        413,
        "INVALID_ARGUMENT",
    );
    check(
        &call(
            gw.addr,
            "POST",
            "/v1/projects/bad%20project/messages:send",
            Some(AUTH),
            "{}",
        )
        .await,
        400,
        "INVALID_ARGUMENT",
    );
    // Authentication: none, wrong, and not a bearer token.
    let body = json!({"message": {"token": token, "data": {"a": "1"}}}).to_string();
    for auth in [None, Some("wrong")] {
        let r = call(gw.addr, "POST", path, auth, &body).await;
        check(&r, 401, "UNAUTHENTICATED");
        assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    }
    let basic = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic {AUTH}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    check(
        &common::raw(gw.addr, basic.as_bytes()).await,
        401,
        "UNAUTHENTICATED",
    );
    for (m, p) in [
        ("POST", "/iid/v1:batchAdd"),
        ("POST", "/fcm/notification"),
        ("GET", "/v1/projects/demo/upstream"),
    ] {
        check(
            &call(gw.addr, m, p, None, "{}").await,
            401,
            "UNAUTHENTICATED",
        );
    }
    // A string that cannot be a token: 400 INVALID_ARGUMENT, wherever a token goes, as FCM
    // answers. A well-formed token nobody holds: 404 UNREGISTERED.
    for bad in ["pb:nobody", "", &format!("{token}x"), &token[1..]] {
        let r = send(gw.addr, json!({"token": bad, "data": {"a": "1"}})).await;
        check(&r, 400, "INVALID_ARGUMENT");
        assert!(r.text().contains("not a valid FCM registration token"));
        for (m, p) in [
            ("GET", format!("/v1/devices/{bad}")),
            ("DELETE", format!("/v1/devices/{bad}")),
        ] {
            if !bad.is_empty() {
                check(
                    &call(gw.addr, m, &p, None, "").await,
                    400,
                    "INVALID_ARGUMENT",
                );
            }
        }
    }
    let r = common::get(gw.addr, "/v1/devices/pb:nobody/connect").await;
    check(&r, 400, "INVALID_ARGUMENT");
    let nobody = format!("pb:{}", "A".repeat(32));
    let r = send(gw.addr, json!({"token": nobody, "data": {"a": "1"}})).await;
    check(&r, 404, "NOT_FOUND");
    assert_eq!(r.json()["error"]["details"][0]["errorCode"], "UNREGISTERED");
    let r = call(gw.addr, "DELETE", &format!("/v1/devices/{token}"), None, "").await;
    assert_eq!(r.status, 200);
    check(
        &send(gw.addr, json!({"token": token, "data": {"a": "1"}})).await,
        404,
        "NOT_FOUND",
    );
    check(
        &call(gw.addr, "DELETE", &format!("/v1/devices/{token}"), None, "").await,
        404,
        "NOT_FOUND",
    );
    let r = common::get(gw.addr, &format!("/v1/devices/{token}/connect")).await;
    check(&r, 404, "NOT_FOUND");
    // Unknown paths and methods.
    check(&common::get(gw.addr, "/v1/nothing").await, 404, "NOT_FOUND");
    check(&common::get(gw.addr, "/publish").await, 404, "NOT_FOUND");
    check(&common::get(gw.addr, path).await, 405, "INVALID_ARGUMENT");
    // A device connect that is not a WebSocket upgrade.
    let live = register(gw.addr).await;
    check(
        &common::get(gw.addr, &format!("/v1/devices/{live}/connect")).await,
        400,
        "INVALID_ARGUMENT",
    );
    // Malformed Instance ID and group bodies.
    for (p, b) in [
        (
            "/iid/v1:batchAdd",
            r#"{"to":"news","registration_tokens":["x"]}"#,
        ),
        (
            "/iid/v1:batchAdd",
            r#"{"to":"/topics/news","registration_tokens":[]}"#,
        ),
        (
            "/fcm/notification",
            r#"{"operation":"create","registration_ids":["x"]}"#,
        ),
    ] {
        let r = call(gw.addr, "POST", p, Some(AUTH), b).await;
        assert!(r.status == 400 || r.status == 404, "{p} {b}: {}", r.text());
        assert!(r.json()["error"]["status"].is_string(), "{}", r.text());
    }
}

#[tokio::test]
async fn quota_exceeded_is_429_with_retry_after() {
    let gw = gateway_with(GatewayConfig {
        auth_token: Some(AUTH.into()),
        quota_per_minute: 2,
        ..GatewayConfig::default()
    })
    .await;
    let msg = json!({"topic": "t", "data": {"a": "1"}});
    // Sends refused before they are accepted (bad content, a malformed or unregistered
    // token) use no quota.
    let unknown = format!("pb:{}", "A".repeat(32));
    for refused in [
        json!({"topic": "bad topic!", "data": {"a": "1"}}),
        json!({"token": "pb:nobody", "data": {"a": "1"}}),
        json!({"token": unknown, "data": {"a": "1"}}),
    ] {
        for _ in 0..3 {
            let status = send(gw.addr, refused.clone()).await.status;
            assert!(status == 400 || status == 404, "{refused}: {status}");
        }
    }
    send_ok(gw.addr, msg.clone()).await;
    send_ok(gw.addr, msg.clone()).await;
    let r = send(gw.addr, msg.clone()).await;
    assert_eq!(r.status, 429, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(e["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(e["details"][0]["errorCode"], "QUOTA_EXCEEDED");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    // The quota is per project.
    let body = json!({"message": msg}).to_string();
    let r = call(
        gw.addr,
        "POST",
        "/v1/projects/other/messages:send",
        Some(AUTH),
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(gateway_stats(gw.addr).await["quota_refusals"], 1);
}

#[tokio::test]
async fn offline_devices_get_held_messages_in_order_minus_ttl_and_collapse() {
    let gw = gateway().await;
    let token = register(gw.addr).await;
    subscribe(gw.addr, "news", &[&token]).await;
    // Offline (registered, not connected): everything is held.
    let short = send_ok(
        gw.addr,
        json!({"topic": "news", "data": {"n": "short"}, "android": {"ttl": "0.2s"}}),
    )
    .await;
    let first = send_ok(gw.addr, json!({"topic": "news", "data": {"n": "1"}})).await;
    let old = send_ok(
        gw.addr,
        json!({"topic": "news", "data": {"n": "old"}, "android": {"collapse_key": "score"}}),
    )
    .await;
    let second = send_ok(gw.addr, json!({"topic": "news", "data": {"n": "2"}})).await;
    let new = send_ok(
        gw.addr,
        json!({"topic": "news", "data": {"n": "new"}, "android": {"collapse_key": "score"}}),
    )
    .await;
    // TTL zero: now or never, and the device is not there now.
    send_ok(
        gw.addr,
        json!({"topic": "news", "data": {"n": "now"}, "android": {"ttl": "0s"}}),
    )
    .await;
    let s = gateway_stats(gw.addr).await;
    assert_eq!(
        (s["collapsed"].as_u64(), s["expired"].as_u64()),
        (Some(1), Some(1))
    );
    let info = common::get(gw.addr, &format!("/v1/devices/{token}"))
        .await
        .json();
    assert_eq!(
        (info["online"].as_bool(), info["queued"].as_u64()),
        (Some(false), Some(4))
    );
    assert_eq!(info["topics"], json!(["news"]));
    // The 0.2 s TTL passes while the device is away; the sweeper expires it.
    stats_until(gw.addr, |s| s["expired"] == 2).await;
    let mut ws = connect(gw.addr, &token).await;
    let got: Vec<u64> = [
        receive(&mut ws).await,
        receive(&mut ws).await,
        receive(&mut ws).await,
    ]
    .iter()
    .map(|m| m["message_id"].as_u64().unwrap())
    .collect();
    // In send order; the replaced message never comes, the newer one takes its turn.
    assert_eq!(got, [first, second, new]);
    assert!(!got.contains(&old) && !got.contains(&short));
    quiet(&mut ws).await;
    let s = stats_until(gw.addr, |s| s["acked"] == 3).await;
    assert_eq!(s["queued"], 0, "{s}");
}

#[tokio::test]
async fn one_stream_ack_acknowledges_every_message_written_up_to_its_id() {
    let gw = gateway().await;
    let token = register(gw.addr).await;
    let mut ws = connect(gw.addr, &token).await;
    let ids = send_numbered(gw.addr, &token, 3).await;
    for &id in &ids {
        assert_eq!(next_json(&mut ws).await["message_id"], id);
    }
    let ack_through = |id: u64| Message::text(json!({ "ack_through": id }).to_string());
    // Through the second: the third stays queued.
    ws.send(ack_through(ids[1])).await.unwrap();
    let s = stats_until(gw.addr, |s| s["acked"] == 2).await;
    assert_eq!(
        (s["queued"].as_u64(), s["unknown_acks"].as_u64()),
        (Some(1), Some(0))
    );
    // The same ack again removes nothing: an unknown ack.
    ws.send(ack_through(ids[1])).await.unwrap();
    stats_until(gw.addr, |s| s["unknown_acks"] == 1).await;
    ws.send(ack_through(ids[2])).await.unwrap();
    let s = stats_until(gw.addr, |s| s["acked"] == 3).await;
    assert_eq!(s["queued"], 0, "{s}");
    // An ack and a stream ack in one frame are refused, and the connection stays.
    ws.send(Message::text(r#"{"ack":1,"ack_through":1}"#))
        .await
        .unwrap();
    let refused = next_json(&mut ws).await;
    assert!(
        refused["error"].as_str().unwrap().contains("exactly one"),
        "{refused}"
    );
    let id = send_ok(gw.addr, json!({"token": token, "data": {"n": "last"}})).await;
    assert_eq!(receive(&mut ws).await["message_id"], id);
}

#[tokio::test]
async fn unacknowledged_messages_are_sent_again_and_a_new_connection_replaces_the_old() {
    let gw = gateway().await;
    let token = register(gw.addr).await;
    let mut ws = connect(gw.addr, &token).await;
    let id = send_ok(gw.addr, json!({"token": token, "data": {"a": "1"}})).await;
    let m = next_json(&mut ws).await; // received, not acknowledged
    assert_eq!(m["message_id"], id);
    drop(ws);
    stats_until(gw.addr, |s| s["devices_online"] == 0).await;
    let mut ws = connect(gw.addr, &token).await;
    assert_eq!(receive(&mut ws).await["message_id"], id);
    let s = stats_until(gw.addr, |s| s["acked"] == 1).await;
    assert_eq!(s["resent"], 1);
    // A second connection for the same device closes the first with 4001.
    let mut newer = connect(gw.addr, &token).await;
    expect_close(&mut ws, CloseCode::from(4001)).await;
    let id = send_ok(gw.addr, json!({"token": token, "data": {"a": "2"}})).await;
    assert_eq!(receive(&mut newer).await["message_id"], id);
    // Unregistering closes the connection with 4004.
    call(gw.addr, "DELETE", &format!("/v1/devices/{token}"), None, "").await;
    expect_close(&mut newer, CloseCode::from(4004)).await;
    let s = stats_until(gw.addr, |s| s["devices"] == 0).await;
    assert_eq!(s["unregistrations"], 1);
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_and_tells_the_device() {
    let gw = gateway_with(GatewayConfig {
        auth_token: Some(AUTH.into()),
        queue_capacity: 3,
        ..GatewayConfig::default()
    })
    .await;
    let token = register(gw.addr).await;
    let ids = send_numbered(gw.addr, &token, 5).await;
    assert_eq!(gateway_stats(gw.addr).await["overflowed"], 2);
    let mut ws = connect(gw.addr, &token).await;
    assert_eq!(
        next_json(&mut ws).await,
        json!({"kind": "deleted_messages", "count": 2})
    );
    for &id in &ids[2..] {
        assert_eq!(receive(&mut ws).await["message_id"], id);
    }
}

#[tokio::test]
async fn upstream_messages_reach_the_app_server_over_sse() {
    let gw = gateway().await;
    let r = call(
        gw.addr,
        "POST",
        "/v1/devices:register",
        None,
        r#"{"project":"demo"}"#,
    )
    .await;
    let token = r.json()["token"].as_str().unwrap().to_owned();
    let (mut sse, head) = common::open_stream(
        gw.addr,
        "/v1/projects/demo/upstream",
        &format!("Authorization: Bearer {AUTH}\r\n"),
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/event-stream"), "{head}");
    let mut ws = connect(gw.addr, &token).await;
    let up = json!({"upstream": {"message_id": "u-1", "data": {"temp": "21"}}});
    ws.send(Message::text(up.to_string())).await.unwrap();
    assert_eq!(
        next_json(&mut ws).await,
        json!({"kind": "upstream_ack", "message_id": "u-1"})
    );
    // The app server reads it off its stream.
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    while !text.contains("u-1") {
        let n = tokio::time::timeout(STEP, sse.read(&mut buf))
            .await
            .expect("upstream event in time")
            .unwrap();
        assert!(n > 0, "stream ended: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .filter(|d| d.contains("u-1"))
        .map(|d| serde_json::from_str::<Value>(d).unwrap())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(data["from"], token.as_str());
    assert_eq!(data["data"]["temp"], "21");
    // A malformed upstream frame is answered with an error frame; the connection lives on.
    ws.send(Message::text(r#"{"upstream":{"data":{}}}"#))
        .await
        .unwrap();
    assert!(next_json(&mut ws).await["error"].is_string());
    ws.send(Message::text("nonsense")).await.unwrap();
    assert!(next_json(&mut ws).await["error"].is_string());
    let s = gateway_stats(gw.addr).await;
    assert_eq!(s["upstream"], 1);
}

#[tokio::test]
async fn without_a_token_any_app_server_may_send_and_shutdown_closes_devices() {
    let mut gw = gateway_with(GatewayConfig::default()).await;
    let token = register(gw.addr).await;
    let mut ws = connect(gw.addr, &token).await;
    let body = json!({"message": {"token": token, "data": {"a": "1"}}}).to_string();
    let r = call(
        gw.addr,
        "POST",
        "/v1/projects/demo/messages:send",
        None,
        &body,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    receive(&mut ws).await;
    // validate_only checks and answers without sending.
    let body = json!({"validate_only": true, "message": {"token": token, "data": {"a": "2"}}});
    let r = call(
        gw.addr,
        "POST",
        "/v1/projects/demo/messages:send",
        None,
        &body.to_string(),
    )
    .await;
    assert_eq!(r.status, 200);
    quiet(&mut ws).await;
    let report = gw.shutdown().await;
    assert_eq!(report.forced, 0);
    expect_close(&mut ws, CloseCode::Away).await;
}

/// A device that stops reading fills its socket: the send path, which writes a caught-up
/// device's messages itself, hands the rest of a frame to the device's session, which finishes
/// it and goes on. Once the device reads again, it gets every message, whole and in order.
#[tokio::test]
async fn a_device_that_stops_reading_gets_every_message_whole_and_in_order() {
    let gw = gateway_with(GatewayConfig {
        auth_token: Some(AUTH.into()),
        queue_capacity: 5_000,
        ..GatewayConfig::default()
    })
    .await;
    let token = register(gw.addr).await;
    let mut ws = connect(gw.addr, &token).await;
    // One message first, so the session is caught up and has handed its socket over.
    let first = send_ok(gw.addr, json!({"token": token, "data": {"n": "0"}})).await;
    assert_eq!(receive(&mut ws).await["message_id"], first);
    // Then the device stops reading while ~3.9 KiB messages keep coming, until its socket has
    // no room (a frame is handed back) and a few more wait in the queue behind it.
    let filler = "x".repeat(3_900);
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut after_full = 0;
    while after_full < 20 {
        assert!(
            tokio::time::Instant::now() < deadline && ids.len() < 4_000,
            "the socket never filled: {}",
            gateway_stats(gw.addr).await
        );
        let n = ids.len().to_string();
        ids.push(
            send_ok(
                gw.addr,
                json!({"token": token, "data": {"n": n, "f": filler}}),
            )
            .await,
        );
        if gateway_stats(gw.addr).await["handbacks"].as_u64() > Some(0) {
            after_full += 1;
        }
    }
    // Reading again: every message once, in the order sent, each frame whole (it parses).
    for (n, id) in ids.iter().enumerate() {
        let m = receive(&mut ws).await;
        assert_eq!(m["message_id"], *id, "message {n}");
        assert_eq!(m["data"]["n"], n.to_string());
        assert_eq!(m["data"]["f"].as_str().map(str::len), Some(filler.len()));
    }
    let s = stats_until(gw.addr, |s| s["acked"] == ids.len() as u64 + 1).await;
    assert_eq!(s["handbacks"], 1, "{s}");
    assert_eq!(
        (s["queued"].as_u64(), s["resent"].as_u64()),
        (Some(0), Some(0))
    );
    // Caught up again, the device is written to directly once more.
    let last = send_ok(gw.addr, json!({"token": token, "data": {"n": "last"}})).await;
    assert_eq!(receive(&mut ws).await["message_id"], last);
}

#[tokio::test]
async fn registration_needs_the_registration_token_when_one_is_set() {
    let gw = gateway_with(GatewayConfig {
        auth_token: Some(AUTH.into()),
        registration_token: Some("device-secret".into()),
        ..GatewayConfig::default()
    })
    .await;
    let path = "/v1/devices:register";
    // None, a wrong one, the app server's own token, and not a bearer token: 401, and no
    // device was made.
    for auth in [None, Some("wrong"), Some(AUTH)] {
        let r = call(gw.addr, "POST", path, auth, "").await;
        assert_eq!(r.status, 401, "{auth:?}: {}", r.text());
        assert_eq!(r.json()["error"]["status"], "UNAUTHENTICATED");
    }
    let basic = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Basic ZGV2aWNlLXNlY3JldA==\r\nContent-Length: 0\r\n\r\n"
    );
    assert_eq!(common::raw(gw.addr, basic.as_bytes()).await.status, 401);
    assert_eq!(gateway_stats(gw.addr).await["devices"], 0);
    let r = call(gw.addr, "POST", path, Some("device-secret"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(gateway_stats(gw.addr).await["devices"], 1);
}

#[tokio::test]
async fn projects_share_no_devices_topics_or_groups() {
    let gw = gateway().await;
    let a = gw.addr;
    let send_in = |project: &'static str, message: Value| async move {
        let body = json!({ "message": message }).to_string();
        let path = format!("/v1/projects/{project}/messages:send");
        call(a, "POST", &path, Some(AUTH), &body).await
    };
    let register_in = |project: &'static str| async move {
        let body = json!({ "project": project }).to_string();
        let r = call(a, "POST", "/v1/devices:register", None, &body).await;
        r.json()["token"].as_str().unwrap().to_owned()
    };
    // One device in each of two projects, both subscribed to a topic of the same name.
    let (ta, tb) = (register_in("alpha").await, register_in("beta").await);
    let (mut wa, mut wb) = (connect(a, &ta).await, connect(a, &tb).await);
    subscribe(a, "news", &[&ta, &tb]).await;
    let mismatch = |r: &Reply| {
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED");
        assert_eq!(
            r.json()["error"]["details"][0]["errorCode"],
            "SENDER_ID_MISMATCH"
        );
    };

    // A topic, and conditions (one a device outside every topic matches), reach the sending
    // project's devices only.
    for message in [
        json!({"topic": "news", "data": {"k": "v"}}),
        json!({"condition": "'news' in topics", "data": {"k": "v"}}),
        json!({"condition": "!('sport' in topics)", "data": {"k": "v"}}),
    ] {
        assert_eq!(send_in("alpha", message.clone()).await.status, 200);
        receive(&mut wa).await;
        quiet(&mut wb).await;
        assert_eq!(send_in("beta", message).await.status, 200);
        receive(&mut wb).await;
        quiet(&mut wa).await;
    }
    // Another project's token: 403 SENDER_ID_MISMATCH, and nothing is delivered.
    mismatch(&send_in("alpha", json!({"token": tb, "data": {"k": "v"}})).await);
    quiet(&mut wb).await;

    // Groups: per project names, members of the project only, keys used in their project only.
    let group = |project: &'static str, body: Value| async move {
        let path = "/fcm/notification";
        call_in(
            a,
            Some(project),
            "POST",
            path,
            Some(AUTH),
            &body.to_string(),
        )
        .await
    };
    let create = |token: &str| json!({"operation": "create", "notification_key_name": "g", "registration_ids": [token]});
    mismatch(&group("alpha", create(&tb)).await);
    let ka = group("alpha", create(&ta)).await.json()["notification_key"].clone();
    let kb = group("beta", create(&tb)).await.json()["notification_key"].clone();
    assert!(ka.is_string() && kb.is_string() && ka != kb, "{ka} {kb}");
    let key_of = |project: &'static str| async move {
        let path = "/fcm/notification?notification_key_name=g";
        call_in(a, Some(project), "GET", path, Some(AUTH), "")
            .await
            .json()["notification_key"]
            .clone()
    };
    assert_eq!(
        (key_of("alpha").await, key_of("beta").await),
        (ka.clone(), kb.clone())
    );
    mismatch(&send_in("beta", json!({"token": ka, "data": {"k": "v"}})).await);
    let add = json!({"operation": "add", "notification_key": ka, "registration_ids": [&ta]});
    mismatch(&group("beta", add).await);
    assert_eq!(
        send_in("alpha", json!({"token": ka, "data": {"k": "v"}}))
            .await
            .status,
        200
    );
    receive(&mut wa).await;
    quiet(&mut wb).await;
}

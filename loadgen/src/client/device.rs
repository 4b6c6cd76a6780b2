//! A device of the FCM-style gateway (docs/GATEWAY.md): it registers (unless the run gave it a
//! token), subscribes to the topic when the run sends to topics, and holds one WebSocket,
//! `GET /v1/devices/{token}/connect`, acknowledging its messages as they arrive: one ack per
//! `--ack-every` messages, as FCM's own clients do, or one per message.
//!
//! A device can go offline on purpose ([`GatewayClient::go_offline`]) and come back
//! ([`GatewayClient::go_online`]): the gateway keeps its messages meanwhile, so what the load
//! generator then measures is store-and-forward.

use std::sync::Arc;

use pushbench_protocol::Transport;

use super::ws::{connection_ended, CLOSE_REPLY_TIMEOUT};
use super::wsconn::{WsConn, WsMessage};
use super::{ClientConfig, Delivery, Item, Retry, Setup};
use crate::counters::Counters;
use crate::envelope::{parse_gateway_frame, GatewayFrame};
use crate::error::ClientError;
use crate::gateway::{register_on, subscribe_on, unregister_devices, GatewayOptions, SendTo};
use crate::http::HttpConn;
use crate::target::Target;

/// One simulated device.
#[derive(Debug)]
pub struct GatewayClient {
    setup: Setup,
    retry: Retry,
    token: String,
    ws: Option<WsConn>,
    /// Highest message id received: the order check's cursor.
    cursor: u64,
    /// Messages handed out but not yet acknowledged, and the newest of them. The ack goes out
    /// at the start of a call once `ack_every` are waiting, so a caller that drops `next`
    /// mid-way (to go offline, to stop) never loses a message it had received: the worst case
    /// is an ack not sent, and the gateway sending the message again, which the load generator
    /// counts as a duplicate.
    unacked: u32,
    newest: u64,
    ack_every: u32,
}

impl GatewayClient {
    pub(crate) async fn connect(
        target: Target,
        config: ClientConfig,
        counters: Arc<Counters>,
    ) -> Result<Self, ClientError> {
        if config.transport != Transport::Ws {
            return Err(ClientError::Unsupported(config.transport));
        }
        let options = target.gateway().cloned().unwrap_or_default();
        let setup = Setup::new(target, config, counters);
        let token = match setup.config.device_token.clone() {
            Some(token) => token,
            None => enroll(&setup, &options).await?,
        };
        let ws = match open(&setup, &token).await {
            Ok(ws) => ws,
            Err(e) => {
                // A device this client registered must not outlive it on the gateway.
                if setup.config.device_token.is_none() {
                    let _ = unregister_devices(&setup.target, std::slice::from_ref(&token)).await;
                }
                return Err(e);
            }
        };
        Ok(GatewayClient {
            setup,
            retry: Retry::default(),
            token,
            ws: Some(ws),
            cursor: 0,
            unacked: 0,
            newest: 0,
            ack_every: options.ack_every.max(1),
        })
    }

    /// Acknowledges what waits, if anything: one message with `{"ack":N}`, several with
    /// `{"ack_through":N}`. On failure the connection is dropped (the gateway sends the
    /// messages again on the next one).
    async fn ack(&mut self) -> Result<(), ClientError> {
        let (id, Some(ws)) = (self.newest, self.ws.as_mut()) else {
            return Ok(());
        };
        let frame = match self.unacked {
            0 => return Ok(()),
            1 => format!("{{\"ack\":{id}}}"),
            _ => format!("{{\"ack_through\":{id}}}"),
        };
        let sent = ws.send_text(frame.as_bytes()).await;
        self.unacked = 0;
        if let Err(e) = sent {
            self.ws = None;
            self.retry.ended(&self.setup, Some(e))?;
        }
        Ok(())
    }

    /// The device's registration token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// See [`Client::next`](super::Client::next). Messages are acknowledged at the start of
    /// the call after the `ack_every`-th (or when going offline). Must not be called while
    /// offline (it would reconnect).
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        if self.unacked >= self.ack_every {
            self.ack().await?;
        }
        loop {
            let ws = self.ensure_connected().await?;
            match ws.next().await {
                Ok(Some((WsMessage::Text(text), received))) => match parse_gateway_frame(&text)? {
                    GatewayFrame::Message { id, payload } => {
                        self.unacked += 1;
                        self.newest = id;
                        self.cursor = self.cursor.max(id);
                        return Ok(Item::Event(Delivery {
                            id,
                            payload,
                            received,
                            asked_late: None,
                        }));
                    }
                    GatewayFrame::Deleted(count) if count > 0 => {
                        return Ok(Item::Gap { from: 1, to: count });
                    }
                    GatewayFrame::Deleted(_) | GatewayFrame::UpstreamAck => {}
                    GatewayFrame::Error(message) => return Err(ClientError::Server(message)),
                },
                Ok(Some((WsMessage::Binary(_), _))) => {
                    return Err(ClientError::Protocol("unexpected binary frame".into()));
                }
                ending => connection_ended(&mut self.ws, &mut self.retry, &self.setup, ending)?,
            }
        }
    }

    /// Closes the connection cleanly, as a device going offline does; the gateway queues its
    /// messages until [`go_online`](Self::go_online).
    pub async fn go_offline(&mut self) {
        // What was received is acknowledged before leaving, as an app does.
        let _ = self.ack().await;
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(CLOSE_REPLY_TIMEOUT, ws.close()).await;
        }
    }

    /// Connects again after [`go_offline`](Self::go_offline): at once, as a device coming
    /// back does (the reconnect delay is for failures), then retrying as configured.
    pub async fn go_online(&mut self) -> Result<(), ClientError> {
        if self.ws.is_none() {
            match open(&self.setup, &self.token).await {
                Ok(ws) => self.ws = Some(ws),
                Err(e) => self.retry.failed(&self.setup, e)?,
            }
        }
        self.ensure_connected().await.map(|_| ())
    }

    /// See [`Client::cursor`](super::Client::cursor): the highest message id received.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    async fn ensure_connected(&mut self) -> Result<&mut WsConn, ClientError> {
        if self.ws.is_none() {
            let (setup, token) = (&self.setup, &self.token);
            let delay = setup.config.reconnect_delay;
            // Boxed, as for every client: reconnects are rare and their futures large.
            let fresh = Box::pin(self.retry.reconnect(setup, delay, || open(setup, token))).await?;
            self.ws = Some(fresh);
        }
        match self.ws.as_mut() {
            Some(ws) => Ok(ws),
            None => Err(ClientError::Closed),
        }
    }
}

/// Registers a new device and, when the run sends to a topic, subscribes it.
async fn enroll(setup: &Setup, options: &GatewayOptions) -> Result<String, ClientError> {
    let mut conn = HttpConn::open(&setup.target, &setup.counters).await?;
    let token = register_on(&mut conn, options).await?;
    if options.send_to == SendTo::Topic {
        let auth = options.auth_token.as_deref();
        subscribe_on(
            &mut conn,
            auth,
            &setup.config.topic,
            std::slice::from_ref(&token),
        )
        .await?;
    }
    Ok(token)
}

/// Connects the device's WebSocket, returning once the gateway answered 101.
async fn open(setup: &Setup, token: &str) -> Result<WsConn, ClientError> {
    let path = format!("/v1/devices/{token}/connect");
    WsConn::open(&setup.target, &setup.counters, &path).await
}

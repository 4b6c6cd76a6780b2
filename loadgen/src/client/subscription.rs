//! [`Subscription`]: what the load generator asks of one subscriber, implemented by every
//! transport's own client type.
//!
//! [`Client`](super::Client) is one enum over all transports, so its `next` future is as large
//! as the largest transport's (a poll's request and body, a gateway device's acknowledgement).
//! The load generator instead runs each subscriber as a task generic over its concrete type,
//! so a WebSocket subscriber's task holds a WebSocket's state and no more: at 10,000
//! subscribers every kilobyte of task is 10 MB of the instrument's memory.

use std::future::Future;

use pushbench_protocol::Transport;

use super::{
    GatewayClient, HotClient, Item, LongPollClient, PollClient, SseClient, StreamClient, WsClient,
};
use crate::error::ClientError;

/// One subscriber as the load generator drives it.
pub trait Subscription {
    /// The next event or gap, as [`Client::next`](super::Client::next).
    fn next(&mut self) -> impl Future<Output = Result<Item, ClientError>>;

    /// Hands the subscription to a readiness loop, with its socket taken off the async
    /// runtime (see [`HotClient`]); `Err(self)` for transports that stay tasks, or with no
    /// connection open.
    fn into_hot(self) -> Result<(HotClient, std::net::TcpStream), Self>
    where
        Self: Sized,
    {
        Err(self)
    }

    /// Against the gateway: drop the connection as a device going offline does. Others:
    /// [`ClientError::Unsupported`].
    fn go_offline(&mut self) -> impl Future<Output = Result<(), ClientError>> {
        std::future::ready(Err(ClientError::Unsupported(Transport::Ws)))
    }

    /// Against the gateway: connect again after [`go_offline`](Self::go_offline).
    fn go_online(&mut self) -> impl Future<Output = Result<(), ClientError>> {
        std::future::ready(Err(ClientError::Unsupported(Transport::Ws)))
    }
}

macro_rules! hot_subscription {
    ($($ty:ty),*) => {$(
        impl Subscription for $ty {
            fn next(&mut self) -> impl Future<Output = Result<Item, ClientError>> {
                <$ty>::next(self)
            }

            fn into_hot(self) -> Result<(HotClient, std::net::TcpStream), Self> {
                self.into_hot_client()
            }
        }
    )*};
}

hot_subscription!(
    StreamClient,
    SseClient,
    WsClient,
    PollClient,
    LongPollClient
);

impl Subscription for GatewayClient {
    fn next(&mut self) -> impl Future<Output = Result<Item, ClientError>> {
        GatewayClient::next(self)
    }

    async fn go_offline(&mut self) -> Result<(), ClientError> {
        GatewayClient::go_offline(self).await;
        Ok(())
    }

    fn go_online(&mut self) -> impl Future<Output = Result<(), ClientError>> {
        GatewayClient::go_online(self)
    }
}

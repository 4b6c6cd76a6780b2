//! One module per push technique: the handler of its subscribe endpoint and its encoders.
//! Publish, stats, metrics, limits and shutdown are shared (`crate::router`, `crate::serve`);
//! each technique's complete server (`run`) is in `crate::entry`.

pub mod longpoll;
pub mod poll;
pub mod sse;
pub mod stream;
pub mod ws;

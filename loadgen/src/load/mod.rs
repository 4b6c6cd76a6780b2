//! The load generator: subscribers by the thousand, an open-loop publisher, and the collector
//! that turns what they recorded into a [`LoadReport`].
//!
//! A run goes: connect every subscriber at the ramp rate → note the server's memory → publish on
//! the schedule (warm-up, then the measurement window) → drain deliveries still on the way →
//! stop, merge, report. Subscribers run on worker threads ([`worker`]), the publisher on its own
//! thread ([`publish`]), and this module samples `/proc` and keeps the time series.

pub mod config;
pub mod env;
pub mod payload;
pub mod process;
pub mod publish;
pub mod recorder;
pub mod report;
pub mod sampler;
pub mod schedule;
pub mod worker;

mod account;
mod assemble;
mod collector;
mod error;
mod handles;
mod hot;
mod messages;
mod run;
mod saturation;
mod timers;

pub use config::{LoadConfig, ReconnectPolicy};
pub use error::LoadError;
pub use report::{LoadReport, SCHEMA};
pub use run::{run, run_timed, Timing};

//! pushbench: measure and teach the web's server-push techniques.
//!
//! This package is the `pushbench` command. The servers live in `pushbench-servers`
//! (`servers/`) and the clients in `pushbench-loadgen` (`loadgen/`); this crate only turns
//! command lines into calls to them.
//!
//! # Layout
//! - [`cli`]: the clap command line and the dispatch to each subcommand.
//! - `cmd/serve.rs`: `pushbench serve`, one transport's server until SIGINT or SIGTERM.
//! - `cmd/demo.rs`: `pushbench demo`, the live browser demo until SIGINT or SIGTERM.
//! - `cmd/load.rs`: `pushbench load`, one transport under load; summary, JSON and HdrHistogram log.
//! - [`duration`]: parsing `30s`, `2m`, `250ms` on the command line.
//! - [`sys`]: process limits (open files).

pub mod cli;
pub mod duration;
pub mod sys;

mod cmd;

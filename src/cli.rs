//! The command line: one binary, clap subcommands.

use clap::{Parser, Subcommand};

use crate::cmd;

/// Measure and teach the web's server-push techniques: short polling, long polling, HTTP
/// streaming, Server-Sent Events and WebSocket, and an FCM-style push gateway beside them.
#[derive(Debug, Parser)]
#[command(name = "pushbench", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one transport's server (or `all` of them on one port), or the FCM-style push gateway,
    /// until SIGINT or SIGTERM. SIGUSR1 cuts every open connection (a mass drop).
    // Boxed, as `Load`: its options outweigh the small commands'.
    Serve(Box<cmd::serve::ServeArgs>),
    /// Measure one transport under load: N subscribers, an open-loop publisher, HDR latency,
    /// loss, bytes, requests, and the CPU and memory of the server and of the load generator.
    // Boxed: its options outweigh every other command's.
    Load(Box<cmd::load::LoadArgs>),
    /// Run the published experiments for every transport and write the data, charts and
    /// REPORT.md (the main job).
    Suite(cmd::suite::SuiteArgs),
    /// Redraw the charts and REPORT.md of a suite run from its JSON.
    Report(cmd::suite::ReportArgs),
    /// Compare a new suite run with a published one: ratios between transports are checked,
    /// absolute figures shown; exits non-zero when a technique moved past the tolerance.
    Compare(cmd::suite::CompareArgs),
    /// The live browser demo: a page with one real browser client per technique, every
    /// transport and a built-in publisher on one port, until SIGINT or SIGTERM.
    Demo(cmd::demo::DemoArgs),
    /// A worker process of `load --workers K` (internal).
    #[command(hide = true)]
    LoadWorker(cmd::load::WorkerArgs),
    /// The reader half of the suite's fan-out physical limit, in a process of its own so each
    /// half has its own open-files limit (internal).
    #[command(hide = true)]
    FanoutFloorReader {
        /// What to read, as JSON.
        #[arg(long)]
        spec: String,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    init_tracing();
    match cli.command {
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Load(args) => cmd::load::run(*args),
        Command::LoadWorker(args) => cmd::load::run_worker(args),
        Command::FanoutFloorReader { spec } => {
            Ok(pushbench_suite::fanout_reader::run_child(&spec)?)
        }
        Command::Suite(args) => cmd::suite::run(args),
        Command::Report(args) => cmd::suite::report(args),
        Command::Compare(args) => cmd::suite::compare(args),
        Command::Demo(args) => cmd::demo::run(args),
    }
}

/// Logs go to stderr, so stdout stays machine-readable (`listening on ...` first).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PUSHBENCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

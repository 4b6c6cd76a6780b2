//! The pushbench suite: every transport through the standard experiments, side by side in one
//! run, written out as data (one load report per run and `summary.json`), charts (SVG and
//! PNG) and `REPORT.md`; and `compare`, which checks a new run against a published one.
//!
//! # Layout
//! - [`plan`]: the experiments, their "what it shows" text, and every size and duration at
//!   each scale (`full`, `quick`, `tiny`).
//! - [`runner`]: runs a plan: a fresh server child process per load run, pinned away from the
//!   load generator; progress; partial results on Ctrl-C.
//! - [`server`]: the server child processes (pushbench's, or a peer's for `--peers`).
//! - [`peer`]: the production servers measured beside ours (Nchan, Pushpin), as one list.
//! - [`pin`]: core pinning with `taskset`.
//! - [`floor`]: `[floor]`, the raw TCP round trip, back to back and paced like `[latency]`.
//! - [`fanout_floor`]: `[fanout]`'s physical limit, a raw `write(2)` loop to N sockets; its
//!   reader half, [`fanout_reader`], runs in a child process (`pushbench fanout-floor-reader`);
//!   [`fanout_floor_report`] draws and reads it.
//! - [`footprint_report`]: `[idle]`'s account of what one idle connection holds, part by part.
//! - [`crosscheck`]: `[latency]`'s independent client, built on [`rawhttp`], a blocking
//!   hand-written HTTP/1.1 client that shares no code with the load generator's;
//!   [`crosscheck_report`] sets it beside `load`'s median in the report.
//! - [`upstream`]: `[upstream]`, client → server → client round trips.
//! - [`gateway_report`]: `[gateway]`'s charts and reading (the relay hop, store and forward).
//! - `[faults]`: [`strike`] arms a run's fault and strikes it on the run's schedule (a
//!   drop-all signal, a kill and restart); [`stall`] holds the stalled readers; [`faults`]
//!   reads what the run measured about the fault; [`faults_report`] draws and reads it.
//! - [`summary`]: `summary.json` (schema `pushbench-suite/1`), distilled from the load reports.
//! - [`headline`]: the headline metrics of the summary table and of `compare`.
//! - [`charts`]: what each chart shows; [`plot`]: how charts are drawn (plotters);
//!   [`chart_parts`]: colours and figure helpers every chart module shares.
//! - [`numfmt`]: how numbers read (significant figures, ms, intervals), for every page.
//! - [`report`]: writes `REPORT.md`.
//! - [`instrument`]: REPORT.md's section on the load generator's own cost.
//! - [`compare`]: ratios between runs.

pub mod chart_parts;
pub mod charts;
pub mod compare;
pub mod crosscheck;
pub mod crosscheck_report;
pub mod fanout_floor;
pub mod fanout_floor_report;
pub mod fanout_reader;
pub mod faults;
pub mod faults_report;
pub mod floor;
pub mod footprint_report;
pub mod gateway_report;
pub mod headline;
pub mod instrument;
pub mod numfmt;
pub mod peer;
pub mod pin;
pub mod plan;
pub mod plot;
pub mod rawhttp;
pub mod report;
pub mod runner;
pub mod server;
pub mod stall;
pub mod strike;
pub mod summary;
pub mod upstream;

use std::path::Path;

pub use plan::{Experiment, Params, Scale};
pub use runner::{run, Progress, SuiteConfig};
pub use summary::Summary;

/// What can stop the suite, `report` or `compare`.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    /// A server child process would not start.
    #[error("server: {0}")]
    Server(String),
    /// The floor measurement failed.
    #[error("floor: {0}")]
    Floor(String),
    /// `[fanout]`'s physical limit could not be measured.
    #[error("fan-out floor: {0}")]
    FanoutFloor(String),
    /// The independent cross-check client of `[latency]` failed.
    #[error("cross-check: {0}")]
    Crosscheck(String),
    /// An upstream measurement failed.
    #[error("upstream: {0}")]
    Upstream(String),
    /// Reading or writing files.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: String,
        /// What happened.
        error: String,
    },
    /// A file that is not a suite summary.
    #[error("{path}: {error}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        error: String,
    },
    /// Drawing a chart.
    #[error("chart: {0}")]
    Chart(String),
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> SuiteError + '_ {
    move |e| SuiteError::Io {
        path: path.display().to_string(),
        error: e.to_string(),
    }
}

/// Reads `DIR/summary.json`.
pub fn load_summary(dir: &Path) -> Result<Summary, SuiteError> {
    let path = dir.join("summary.json");
    let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
    let format = |error: String| SuiteError::Format {
        path: path.display().to_string(),
        error,
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format(format!("not JSON: {e}")))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(summary::SCHEMA) => {}
        Some(other) => {
            return Err(format(format!(
                "schema {other:?} is not {:?}; this pushbench cannot read it",
                summary::SCHEMA
            )))
        }
        None => {
            return Err(format(
                "no \"schema\": not a pushbench suite summary".into(),
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| format(format!("does not match the schema: {e}")))
}

/// Writes `summary.json`, the charts and `REPORT.md` of `summary` into `dir`.
pub fn write_all(dir: &Path, summary: &Summary) -> Result<(), SuiteError> {
    let path = dir.join("summary.json");
    let text = serde_json::to_string_pretty(summary).map_err(|e| SuiteError::Format {
        path: path.display().to_string(),
        error: e.to_string(),
    })?;
    std::fs::write(&path, text + "\n").map_err(io_err(&path))?;
    render(dir, summary)
}

/// Draws the charts and writes `REPORT.md` from `summary` alone.
pub fn render(dir: &Path, summary: &Summary) -> Result<(), SuiteError> {
    let figures = charts::figures(summary);
    for f in &figures {
        f.render(dir).map_err(SuiteError::Chart)?;
    }
    let path = dir.join("REPORT.md");
    std::fs::write(&path, report::render(summary, &figures)).map_err(io_err(&path))
}

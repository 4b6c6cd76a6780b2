//! The instrument's own cost, in REPORT.md: how much cheaper the load generator was than what
//! it measured, per `[fanout]` run, so a reader can see that a server's number is the
//! server's and not the load generator's.

use std::fmt::Write as _;

use crate::plan::Experiment;
use crate::summary::Summary;

/// The generator's CPU per delivery over the server's, past which a run's cost is called
/// the instrument's too.
const EXPENSIVE: f64 = 0.7;

/// Server CPU (s) a run needs before its per-delivery costs mean anything: `/proc` counts CPU in
/// 10 ms ticks, so below this a ratio is mostly rounding.
const MEASURABLE_S: f64 = 0.2;

/// The server's CPU over the whole run, in seconds.
fn server_cpu_s(r: &crate::summary::Run) -> Option<f64> {
    r.server_cpu_ms_per_1k
        .map(|ms| ms * r.delivered as f64 / 1000.0 / 1000.0)
}

/// The "Instrument" section: one row per `[fanout]` run.
pub fn section(o: &mut String, s: &Summary) {
    let measurable = |r: &&crate::summary::Run| {
        r.experiment == Experiment::Fanout && server_cpu_s(r).is_some_and(|c| c >= MEASURABLE_S)
    };
    let rows: Vec<String> = s
        .runs
        .iter()
        .filter(measurable)
        .map(|r| {
            let opt = |v: Option<f64>, digits: usize| {
                v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
            };
            let server_us = r.server_cpu_ms_per_1k;
            format!(
                "| {}{} | {} | {} | {} | {} | {} | {} |",
                r.server.label(r.transport),
                if r.loadgen_saturated { " ‡" } else { "" },
                r.clients,
                opt(r.loadgen_cpu_us_per_delivery, 1),
                opt(server_us, 1),
                opt(r.loadgen_cpu_vs_server, 2),
                opt(r.loadgen_rss_per_client_bytes.map(|b| b / 1024.0), 1),
                r.publish_lateness_us
                    .as_ref()
                    .map_or("–".to_owned(), |p| p.p99.to_string()),
            )
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let expensive = s
        .runs
        .iter()
        .filter(measurable)
        .filter(|r| r.loadgen_cpu_vs_server.is_some_and(|x| x > EXPENSIVE))
        .count();
    let left_out = s
        .runs
        .iter()
        .filter(|r| r.experiment == Experiment::Fanout)
        .count()
        - rows.len();
    let _ = writeln!(o, "## Instrument\n");
    let _ = writeln!(
        o,
        "What the load generator itself spent in each `[fanout]` run, beside the server: CPU \
         per delivery (its publisher included), the ratio of the two, its memory per \
         subscriber, and how late its publisher sent (p99). Below 1 the instrument was the \
         cheaper side; {expensive} run(s) are above {EXPENSIVE}×. {left_out} run(s) in which \
         the server spent under {MEASURABLE_S} s of CPU are left out: `/proc` counts CPU in \
         10 ms ticks, so their ratios would be mostly rounding. ‡: the load generator was \
         flagged in that run.\n"
    );
    let _ = writeln!(
        o,
        "| run | subscribers | load generator µs/delivery | server µs/delivery | ratio | load generator KiB/subscriber | publish lateness p99 µs |\n|---|---:|---:|---:|---:|---:|---:|"
    );
    for row in rows {
        let _ = writeln!(o, "{row}");
    }
    let _ = writeln!(o);
}

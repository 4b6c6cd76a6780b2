//! `[fanout]`'s physical limit ([`crate::fanout_floor`]) in the charts and `REPORT.md`: a line
//! beside the servers' in the p99 and CPU charts, and every server's figures as multiples of it.

use std::fmt::Write as _;

use plotters::style::RGBColor;

use crate::fanout_floor::FanoutFloor;
use crate::numfmt::fmt_interval;
use crate::numfmt::fmt_value;
use crate::plan::Experiment;
use crate::plot::{Series, Stroke};
use crate::summary::{Run, Summary};

/// Dark grey, dashed: the limit is no technique, and must not look like one.
const LIMIT: RGBColor = RGBColor(60, 60, 60);

/// The limit's line for a fan-out chart, `read` at each size; `None` when it was not measured.
pub fn series(s: &Summary, read: fn(&FanoutFloor) -> f64) -> Option<Series> {
    (!s.fanout_floor.is_empty()).then(|| Series {
        name: "physical limit (raw write(2))".into(),
        color: LIMIT,
        stroke: Stroke::Dashed,
        points: s
            .fanout_floor
            .iter()
            .map(|f| (f.sockets as f64, read(f)))
            .collect(),
    })
}

/// `value ÷ limit` as `12×`, or `–` when either is missing or zero.
fn times(value: Option<f64>, limit: f64) -> String {
    match value {
        Some(v) if v > 0.0 && limit > 0.0 => format!("{}×", fmt_value(v / limit)),
        _ => "–".into(),
    }
}

/// The `[fanout]` paragraph on the limit: what it is, and a table of every server's p99 and
/// CPU per delivery as multiples of it at each size.
pub fn reading(s: &Summary) -> String {
    let Some(first) = s.fanout_floor.first() else {
        return String::new();
    };
    let columns: Vec<_> = s
        .servers()
        .into_iter()
        .flat_map(|server| {
            s.transports(Experiment::Fanout, server)
                .into_iter()
                .map(move |t| (server, t))
        })
        .collect();
    let mut o = format!(
        "**Physical limit.** A plain blocking loop of `write(2)` on the server core, one \
         {}-byte frame to each of N loopback sockets (Nagle off), read on the load generator's \
         core; {} events {} apart, so the cores go idle between them as between `[fanout]`'s. \
         Latency runs from the start of each event's write loop to the read of each frame; CPU \
         is the writer thread's own. No server writes to N sockets for less CPU. The latency \
         includes the reading: one core reading N sockets, as the load generator's core must, \
         so a server near 1× is as fast as its subscribers can read, and below 1× is noise or \
         a reader that batches better. Each cell is a server's p99 ÷ the limit's p99, then its \
         CPU per 1,000 deliveries ÷ the limit's CPU per 1,000 writes:\n\n",
        first.frame_bytes,
        first.events,
        fmt_interval(first.gap_ms / 1000.0)
    );
    let _ = write!(o, "| subscribers | limit p99 | limit CPU ms/1k |");
    for (server, t) in &columns {
        let _ = write!(o, " {} |", server.label(*t));
    }
    let _ = writeln!(o, "\n|---:|---:|---:|{}", "---:|".repeat(columns.len()));
    for f in &s.fanout_floor {
        let p99_ms = f.latency_ns.p99 as f64 / 1e6;
        let _ = write!(
            o,
            "| {} | {} ms | {} |",
            f.sockets,
            fmt_value(p99_ms),
            fmt_value(f.cpu_ms_per_1k)
        );
        for &(server, t) in &columns {
            let run: Option<&Run> = s
                .runs_of(Experiment::Fanout, server, t)
                .find(|r| r.clients == f.sockets);
            let p99 = run.map(|r| r.latency_us.p99 as f64 / 1000.0);
            let cpu = run.and_then(|r| r.server_cpu_ms_per_1k);
            let flagged = if run.is_some_and(|r| r.loadgen_saturated) {
                " ‡"
            } else {
                ""
            };
            let _ = write!(
                o,
                " {} / {}{flagged} |",
                times(p99, p99_ms),
                times(cpu, f.cpu_ms_per_1k)
            );
        }
        let _ = writeln!(o);
    }
    let _ = write!(
        o,
        "\n–: not measured, or server CPU below the sampler's resolution. ‡: the load \
         generator was flagged in that run. Short polling's p99 is set by its poll interval, \
         not by writing."
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiples_need_both_figures() {
        assert_eq!(times(Some(30.0), 2.0), "15.0×");
        assert_eq!(times(None, 2.0), "–");
        assert_eq!(times(Some(0.0), 2.0), "–");
        assert_eq!(times(Some(3.0), 0.0), "–");
    }
}

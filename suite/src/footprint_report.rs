//! `[idle]`'s account in `REPORT.md` of what one idle connection holds, part by part: each lean
//! subscription's own state in the build that ran ([`pushbench_servers::footprint`], kept in
//! `summary.json`) beside the memory the run measured. What is left after the parts the build can name is the runtime's and the
//! allocator's: the socket's registration, the timer's entry, the task's header and rounding,
//! and malloc's overhead.

use std::fmt::Write as _;

use pushbench_servers::Footprint;

use crate::numfmt::fmt_value;
use crate::summary::Summary;

/// `REPORT.md`'s table of what one idle connection holds, for each technique with both a
/// footprint and an `[idle]` run; empty if there is none.
pub fn table(s: &Summary) -> String {
    let rows: Vec<(&Footprint, f64)> = s
        .footprint
        .iter()
        .filter_map(|f| Some((f, s.idle_run(f.transport)?.rss_per_conn_bytes?)))
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut text = String::from(
        "\n\nWhat one idle connection holds, in bytes: its task's state and its fan-out entry are \
         this build's sizes (`pushbench_servers::footprint`); the total is the server's RSS \
         growth per connection measured here; the rest is the difference.\n\n| part |",
    );
    for (f, _) in &rows {
        let _ = write!(text, " {} |", f.transport.name());
    }
    text.push_str("\n|---|");
    text.push_str(&"---:|".repeat(rows.len()));
    let mut row = |name: &str, cell: &dyn Fn(&Footprint, f64) -> String| {
        let _ = write!(text, "\n| {name} |");
        for (f, total) in &rows {
            let _ = write!(text, " {} |", cell(f, *total));
        }
    };
    row(
        "its task's state: socket, cursor or waiter, wake-ups \
         (a WebSocket's framing state only while it reads a frame)",
        &|f, _| f.task_state_bytes.to_string(),
    );
    row(
        "its entry with the topic's fan-out: socket, framing, lock, wake-up",
        &|f, _| match f.fanout_entry_bytes {
            0 => "–".into(),
            n => n.to_string(),
        },
    );
    row(
        "the rest: task header and rounding, socket registration, allocator overhead; for a \
         long poll, its timeout's timer entry and the connection task that waits for its next \
         request",
        &|f, total| {
            let named = (f.task_state_bytes + f.fanout_entry_bytes) as f64;
            fmt_value(total - named)
        },
    );
    row("**total, measured**", &|_, total| {
        format!("**{}**", fmt_value(total))
    });
    text
}

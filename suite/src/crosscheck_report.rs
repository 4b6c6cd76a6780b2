//! The cross-check in the report: how far the raw client's median is from `load`'s, its
//! paragraph, and its flag on a `[latency]` run.

use crate::crosscheck::{Crosscheck, TOLERANCE};
use crate::numfmt::fmt_value;
use crate::summary::{Run, Server, Summary};

/// The `load` run this cross-checks: `[latency]`'s, on pushbench.
pub fn load_run<'a>(s: &'a Summary, c: &Crosscheck) -> Option<&'a Run> {
    s.latency_run(Server::Pushbench, c.transport)
}

/// How far a cross-check's median is from `load`'s, as a fraction of `load`'s.
pub fn disagreement(c: &Crosscheck, load: &Run) -> f64 {
    let theirs = load.latency_us.p50.max(1) as f64;
    (c.latency_us.p50 as f64 - theirs).abs() / theirs
}

/// `[latency]`'s sentence on the cross-check: each technique's median beside `load`'s.
pub fn reading(s: &Summary) -> String {
    let parts: Vec<_> = s
        .crosscheck
        .iter()
        .map(|c| {
            let ms = |us: u64| fmt_value(us as f64 / 1000.0);
            let mut x = format!(
                "{} p50 {} ms (p99 {} ms)",
                c.transport.name(),
                ms(c.latency_us.p50),
                ms(c.latency_us.p99)
            );
            if let Some(r) = load_run(s, c) {
                x += &format!(
                    " against `load`'s {} ms, {:.0}% apart",
                    ms(r.latency_us.p50),
                    100.0 * disagreement(c, r)
                );
            }
            if let Some(read) = &c.read_us {
                x += &format!(" (its reads returned at p50 {} ms)", ms(read.p50));
            }
            x
        })
        .collect();
    if parts.is_empty() {
        return String::new();
    }
    format!(
        "An independent client (blocking sockets, hand-written HTTP/1.1, no async runtime, \
         sharing no code with `load`'s clients, its publisher waiting for each answer on a \
         thread of its own as `load`'s does) timed each event from its publish write to the \
         kernel's arrival stamp on the bytes that completed it, as `load` times a delivery, \
         against the same server process as `load`'s run, half its events just before that run \
         and half just after: {}. When its blocked reads returned is given beside it: one \
         wake-up of a sleeping reader later, a cost of the client's, not the server's. Runs \
         more than {:.0}% apart are flagged under Health.",
        parts.join("; "),
        TOLERANCE * 100.0
    )
}

/// Why `r` is flagged, when a cross-check of it disagrees by more than [`TOLERANCE`].
pub fn flag(s: &Summary, r: &Run) -> Option<String> {
    let c = s.crosscheck.iter().find(|c| {
        load_run(s, c).is_some_and(|l| std::ptr::eq(l, r)) && disagreement(c, r) > TOLERANCE
    })?;
    Some(format!(
        "the independent client's p50 ({} ms) is {:.0}% from this run's ({} ms)",
        fmt_value(c.latency_us.p50 as f64 / 1000.0),
        100.0 * disagreement(c, r),
        fmt_value(r.latency_us.p50 as f64 / 1000.0)
    ))
}

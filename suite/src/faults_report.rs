//! `[faults]`'s charts and reading: how fast each technique's subscribers come back after a
//! mass drop (a fixed delay against jittered backoff) and a restart, what they lost, and what
//! readers that stop reading cost the server and everyone else.

use std::fmt::Write as _;

use pushbench_servers::Transport;

use crate::chart_parts::{bars, color, one};
use crate::faults::{FaultRun, BACK};
use crate::numfmt::{fmt_ms, fmt_value};
use crate::plan::{Experiment, Fault};
use crate::plot::{Axis, Figure, Lines, Panel, Series, Stroke};
use crate::summary::{Run, Server, Summary};

/// Stalled readers may move the others' p99 by less than this ratio (issue 14).
pub const STALL_P99_BOUND: f64 = 1.2;
/// Stalled readers may grow the server's RSS by less than this ratio.
pub const STALL_RSS_BOUND: f64 = 1.5;

/// Seconds after a drop the herd chart shows.
const HERD_SPAN_S: f64 = 6.0;

/// `t`'s run of `fault` and what it measured.
fn run_of(s: &Summary, t: Transport, fault: Fault) -> Option<(&Run, &FaultRun)> {
    s.runs_of(Experiment::Faults, Server::Pushbench, t)
        .find_map(|r| Some((r, r.fault.as_ref().filter(|f| f.fault == Some(fault))?)))
}

/// One value per technique, for a bar set.
fn per_technique(
    s: &Summary,
    fault: Fault,
    read: impl Fn(&FaultRun) -> Option<f64>,
) -> Vec<Option<f64>> {
    Transport::ALL
        .iter()
        .map(|&t| run_of(s, t, fault).and_then(|(_, f)| read(f)))
        .collect()
}

/// `[faults]`'s charts, when it ran.
pub fn figures(s: &Summary) -> Vec<Figure> {
    let mut out = Vec::new();
    let cuts = [Fault::DropFixed, Fault::DropJitter, Fault::Restart];
    if cuts
        .iter()
        .any(|&f| Transport::ALL.iter().any(|&t| run_of(s, t, f).is_some()))
    {
        let pair = |read: fn(&FaultRun) -> Option<f64>| {
            [Fault::DropFixed, Fault::DropJitter]
                .iter()
                .enumerate()
                .map(|(i, &f)| (f.describe().to_owned(), per_technique(s, f, read), i > 0))
                .collect::<Vec<_>>()
        };
        let restart = vec![(
            String::new(),
            per_technique(s, Fault::Restart, |r| r.back_99_s),
            false,
        )];
        out.push(Figure {
            name: "faults-recovery".into(),
            title: format!(
                "[faults] Recovery of {} subscribers at {} events/s",
                s.params.faults_clients, s.params.faults_rate
            ),
            columns: 3,
            panels: vec![
                Panel::Bars(bars(
                    "mass drop: until 99% reconnected",
                    "seconds after the drop (250 ms samples)",
                    pair(|r| r.back_99_s),
                )),
                Panel::Bars(bars(
                    "mass drop: peak reconnects per second",
                    "reconnects/s (one 250 ms sample)",
                    pair(|r| Some(r.peak_reconnects_per_s)),
                )),
                Panel::Bars(bars(
                    "restart (SIGKILL): until 99% reconnected",
                    "seconds after the kill (250 ms samples)",
                    restart,
                )),
            ],
        });
        out.push(herd(s));
    }
    if Transport::ALL
        .iter()
        .any(|&t| run_of(s, t, Fault::Stall).is_some())
    {
        out.push(Figure {
            name: "faults-stall".into(),
            title: format!(
                "[faults] {} of {} subscribers stop reading ({} B events)",
                s.params.faults_stalled, s.params.faults_clients, s.params.faults_stall_payload
            ),
            columns: 2,
            panels: vec![
                before_after(
                    s,
                    "the readers' p99, before and after the stall",
                    "p99 due → received (ms)",
                    ("before", |f| ms(f.p99_before_us)),
                    ("after", |f| ms(f.p99_after_us)),
                ),
                before_after(
                    s,
                    "server RSS, before the stall and its peak after",
                    "MiB",
                    ("before", |f| mib(f.server_rss_before)),
                    ("peak after", |f| mib(f.server_rss_peak)),
                ),
            ],
        });
    }
    out
}

/// A stall panel: one bar before and one (lighter) after, per technique.
fn before_after(
    s: &Summary,
    title: &str,
    y: &str,
    before: (&str, fn(&FaultRun) -> Option<f64>),
    after: (&str, fn(&FaultRun) -> Option<f64>),
) -> Panel {
    let set = |(name, read): (&str, fn(&FaultRun) -> Option<f64>), light| {
        (name.to_owned(), per_technique(s, Fault::Stall, read), light)
    };
    Panel::Bars(bars(title, y, vec![set(before, false), set(after, true)]))
}

fn ms(us: Option<u64>) -> Option<f64> {
    us.map(|u| u as f64 / 1000.0)
}

fn mib(b: Option<u64>) -> Option<f64> {
    b.map(|b| b as f64 / 1_048_576.0)
}

/// Reconnects per second around a mass drop: the fixed delay's herd against jitter's spread.
fn herd(s: &Summary) -> Figure {
    let mut series = Vec::new();
    for t in Transport::ALL {
        for (fault, dashed) in [(Fault::DropFixed, false), (Fault::DropJitter, true)] {
            if let Some((_, f)) = run_of(s, t, fault) {
                series.push(Series {
                    name: format!("{} {}", t.name(), f.backoff),
                    color: color(t),
                    stroke: Stroke::dashed_if(dashed),
                    // The herd is over within seconds; the rest of the run is a flat line.
                    points: f
                        .reconnect_series
                        .iter()
                        .filter(|p| p[0] <= HERD_SPAN_S)
                        .map(|p| (p[0], p[1]))
                        .collect(),
                });
            }
        }
    }
    one(
        "faults-herd",
        "[faults] Reconnects/s after a mass drop: fixed delay (solid), jitter (dashed)",
        Panel::Lines(Lines {
            title: "every connection cut at 0 s".into(),
            x_label: "seconds after the drop".into(),
            y_label: "reconnects per second".into(),
            x_axis: Axis::Linear,
            y_axis: Axis::Linear,
            series,
        }),
    )
}

/// ‡ on a run whose load generator was flagged (the report's note below the section says
/// what it means).
fn flag(r: &Run) -> &'static str {
    if r.loadgen_saturated {
        " ‡"
    } else {
        ""
    }
}

fn opt_ms(us: Option<u64>) -> String {
    us.map_or("–".into(), |u| fmt_ms(u as f64))
}

fn opt_mib(b: Option<u64>) -> String {
    b.map_or("–".into(), |b| {
        format!("{:.1} MiB", b as f64 / 1_048_576.0)
    })
}

/// `[faults]`'s reading: its tables and what they say.
pub fn reading(s: &Summary) -> String {
    let mut o = String::new();
    recovery_table(&mut o, s);
    stall_table(&mut o, s);
    o.trim_end().to_owned()
}

fn recovery_table(o: &mut String, s: &Summary) {
    let mut rows = Vec::new();
    for t in Transport::ALL {
        for fault in [Fault::DropFixed, Fault::DropJitter, Fault::Restart] {
            if let Some((r, f)) = run_of(s, t, fault) {
                rows.push((t, fault, r, f));
            }
        }
    }
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "| technique | fault | back ({:.0}%) | peak reconnects/s | lost | duplicated | resets | \
         p99 before → during recovery | server CPU peak | server RSS before → peak |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        BACK * 100.0
    );
    for (t, fault, r, f) in &rows {
        let back = f.back_99_s.map_or("not within the run".into(), |b| {
            format!("{} s", fmt_value(b))
        });
        let restart = f
            .restart_s
            .map_or(String::new(), |g| format!(" (gone {} s)", fmt_value(g)));
        let _ = writeln!(
            o,
            "| {}{} | {}{restart} | {back} | {} | {} | {} | {} | {} → {} | {} | {} → {} |",
            t.name(),
            flag(r),
            fault.describe(),
            fmt_value(f.peak_reconnects_per_s),
            r.lost,
            r.duplicates,
            f.resets,
            opt_ms(f.p99_before_us),
            opt_ms(f.p99_after_us),
            f.server_cpu_peak_cores
                .map_or("–".into(), |c| format!("{:.0}%", c * 100.0)),
            opt_mib(f.server_rss_before),
            opt_mib(f.server_rss_peak),
        );
    }
    let _ = writeln!(o);
    if rows.iter().any(|(_, _, r, _)| r.loadgen_saturated) {
        let _ = writeln!(
            o,
            "In a row marked ‡ the load generator fell behind during the reconnect burst: its \
             time until 99% back and its p99 during the recovery are upper bounds, its peak \
             reconnect rate what the generator could send; its loss, duplicates and resets are \
             exact.\n"
        );
    }
    let drops: Vec<_> = rows
        .iter()
        .filter(|(_, f, _, _)| *f != Fault::Restart)
        .collect();
    let lost: u64 = drops.iter().map(|(_, _, r, _)| r.lost).sum();
    let dup: u64 = drops.iter().map(|(_, _, r, _)| r.duplicates).sum();
    let _ = writeln!(
        o,
        "Over the {} mass-drop runs, {lost} events were lost and {dup} duplicated: every \
         subscriber resumed from its cursor. ",
        drops.len()
    );
    let mut herd = Vec::new();
    for t in Transport::ALL {
        if let (Some((_, a)), Some((_, b))) = (
            run_of(s, t, Fault::DropFixed),
            run_of(s, t, Fault::DropJitter),
        ) {
            herd.push(format!(
                "{} {} → {} reconnects/s",
                t.name(),
                fmt_value(a.peak_reconnects_per_s),
                fmt_value(b.peak_reconnects_per_s)
            ));
        }
    }
    if !herd.is_empty() {
        let _ = writeln!(
            o,
            "Peak reconnect rate, fixed delay → jittered backoff: {}. Polling clients retry a \
             request at once on a fresh connection when a reused one fails (as browsers do for \
             a GET), so a drop reaches them as a burst at their next request whatever the \
             backoff. A restart's loss is what the old life had accepted and not yet \
             delivered, plus nothing published while it was down (those publishes failed and \
             are not expected); resets count the subscribers told of the new life.\n",
            herd.join(", ")
        );
    }
}

fn stall_table(o: &mut String, s: &Summary) {
    let rows: Vec<_> = Transport::ALL
        .iter()
        .filter_map(|&t| Some((t, run_of(s, t, Fault::Stall)?)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let p = &s.params;
    let _ = writeln!(
        o,
        "Stalled readers: the server ran with `--write-timeout {}ms --send-buffer {}`; each \
         stalled reader asked for a 4 KiB receive buffer.\n\n\
         | technique | readers + stalled | cut by the server (readers saw / write timeouts) | \
         readers' p99 before → after | × | server RSS before → peak | × | lost by the readers |\n\
         |---|---|---|---|---|---|---|---|",
        p.faults_write_timeout.as_millis(),
        p.faults_send_buffer
    );
    let mut held = Vec::new();
    let mut unmeasured = Vec::new();
    for (t, (r, f)) in &rows {
        let st = f.stall.clone().unwrap_or_default();
        let ratio = |v: Option<f64>, bound: f64| {
            v.map_or("–".into(), |v| {
                format!("{}{}", fmt_value(v), if v < bound { "" } else { " ✗" })
            })
        };
        let _ = writeln!(
            o,
            "| {}{} | {} + {} | {} / {} | {} → {} | {} | {} → {} | {} | {} |",
            t.name(),
            flag(r),
            r.clients,
            st.stalled,
            st.cut_by_server,
            st.write_timeouts,
            opt_ms(f.p99_before_us),
            opt_ms(f.p99_after_us),
            ratio(f.p99_ratio(), STALL_P99_BOUND),
            opt_mib(f.server_rss_before),
            opt_mib(f.server_rss_peak),
            ratio(f.rss_ratio(), STALL_RSS_BOUND),
            r.lost
        );
        let past = |v: Option<f64>, bound: f64| v.is_some_and(|v| v >= bound);
        if past(f.p99_ratio(), STALL_P99_BOUND) || past(f.rss_ratio(), STALL_RSS_BOUND) {
            held.push(t.name());
        }
        if f.p99_ratio().is_none() || f.rss_ratio().is_none() {
            unmeasured.push(t.name());
        }
    }
    let _ = writeln!(
        o,
        "\n✗ marks a ratio past the bound (p99 {}×, RSS {}×). {}A stalled short or long \
         poller simply stops asking: the server holds nothing for it, and closes its idle \
         connection once it has sent no request for the header-read timeout (10 s), which the \
         readers count as cut though no write timed out. A stalled stream, SSE or WebSocket \
         subscriber fills its socket, and the write timeout cuts it. The stalled readers run \
         in the suite's process beside the load generator, so until the stall their reading \
         shares its core.\n",
        fmt_value(STALL_P99_BOUND),
        fmt_value(STALL_RSS_BOUND),
        match (held.is_empty(), unmeasured.is_empty()) {
            (true, true) => "Every technique stayed within both bounds. ".to_owned(),
            (true, false) => format!(
                "No ratio passed its bound; not measured for {} (–: no second of the window \
                 ended before the stall, or the server was not sampled). ",
                unmeasured.join(", ")
            ),
            (false, _) => format!("Past a bound: {}. ", held.join(", ")),
        }
    );
}

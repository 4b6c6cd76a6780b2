//! `REPORT.md`: the environment, the method, the headline table, every chart with a reading of
//! it written from the numbers, the health of every run, and the caveats.

use std::fmt::Write as _;

use pushbench_servers::Transport;

use crate::floor::Floor;
use crate::headline::METRICS;
use crate::numfmt::fmt_interval;
use crate::numfmt::fmt_value;
use crate::plan::Experiment;
use crate::plot::Figure;
use crate::summary::{Run, Server, Summary};

/// Renders the report. `figures` are the charts drawn for `s` (file stems link the images).
pub fn render(s: &Summary, figures: &[Figure]) -> String {
    let mut o = String::new();
    let env = &s.environment;
    let _ = writeln!(o, "# pushbench suite report\n");
    let _ = writeln!(
        o,
        "Scale **{}**, started {} UTC, {} min. Made with `{}`.{}\n",
        s.scale.name(),
        utc(s.started_at_unix_ms),
        (s.finished_at_unix_ms.saturating_sub(s.started_at_unix_ms)) / 60_000,
        s.command,
        if s.interrupted {
            " **Interrupted: only what ran is here.**"
        } else {
            ""
        }
    );
    let _ = writeln!(o, "## Environment\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let rows = [
        (
            "CPU",
            format!("{} ({} cores online)", env.cpu_model, env.cores_online),
        ),
        (
            "memory",
            format!("{:.1} GiB", env.mem_total_bytes as f64 / 1073741824.0),
        ),
        ("kernel", env.kernel.clone()),
        ("host", env.hostname.clone()),
        (
            "pushbench",
            format!("{} at {}", env.pushbench_version, env.git_rev),
        ),
        (
            "build",
            format!(
                "{}, {}",
                env.rustc,
                if env.release_build {
                    "release"
                } else {
                    "**debug: not comparable**"
                }
            ),
        ),
        ("pinning", s.pinning.describe()),
        (
            "peers",
            match s.peer_list() {
                peers if peers.is_empty() => "none".into(),
                peers => peers
                    .iter()
                    .map(|p| p.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            },
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    let _ = writeln!(o, "\n## Method\n");
    let _ = writeln!(
        o,
        "Every technique runs against its own fresh `pushbench serve` child process, one runtime \
         thread on the server core; the load generator runs on the other core(s). Publishes \
         follow an **open-loop** schedule: event *k* is due at start + *k*/rate whatever happened \
         before, and latency runs from that **due time** to the instant the event's bytes \
         reached the subscriber's socket, as the kernel stamped them (so the load generator's own \
         wake-ups are in no latency), so a slow server cannot hide its queueing (no coordinated \
         omission). Both ends read one clock on one machine. Every subscriber keeps one bit per event, so \
         loss, duplicates and reordering are counted exactly. Each run is flagged when the load \
         generator itself may have set a figure (its subscribers' threads over 80% of its CPU; for \
         long polling, more than 1% of deliveries waiting for a request it sent over 5 ms late; for short polling, its timers \
         over 5 ms late at p99). The **floor** is a raw TCP ping-pong between the two cores, back to back and \
         paced like [latency]'s events: no technique can beat it. Every figure here comes from the JSON files beside this report; \
         `pushbench report DIR` redraws it from them, and `results/README.md` says how to \
         reproduce and compare a run.\n"
    );
    if let Some(f) = &s.floor {
        let _ = writeln!(o, "**Floor:** {}\n", f.describe());
    }
    summary_table(&mut o, s);
    let _ = writeln!(o, "## Experiments\n");
    for e in &s.experiments {
        let _ = writeln!(o, "### [{}]\n\n{}\n", e.name(), e.what_it_shows());
        for f in figures.iter().filter(|f| belongs(&f.name, *e)) {
            let _ = writeln!(o, "![{}]({}.svg)\n", f.title, f.name);
        }
        let reading = reading(s, *e);
        if !reading.is_empty() {
            let _ = writeln!(o, "{reading}\n");
        }
        if let Some(note) = flagged_note(s, *e) {
            let _ = writeln!(o, "{note}\n");
        }
    }
    health(&mut o, s);
    crate::instrument::section(&mut o, s);
    let _ = writeln!(o, "## Caveats\n");
    let _ = writeln!(
        o,
        "- **One machine, loopback.** Client and server share a machine and a kernel; there is \
         no network delay, loss or bandwidth limit. Real networks add their RTT to every \
         technique, and more to those that need a request per event (polling, long polling).\n\
         - **Small machine.** The server has one core; the ratios between techniques carry over \
         to other machines better than the absolute figures (`pushbench compare` checks ratios).\n\
         - **Reference servers.** These are minimal hyper servers, not production push services; \
         `--peers` runs Nchan and Pushpin beside them for a production point of view.\n\
         - **Short runs** (scale {}) catch the steady state, not hours-long effects such as \
         memory fragmentation.\n",
        s.scale.name()
    );
    o
}

/// Which of `e`'s runs had the load generator flagged: their points in the charts and cells in
/// the tables are its reading, not the server's, and the reader must know which they are.
fn flagged_note(s: &Summary, e: Experiment) -> Option<String> {
    let flagged: Vec<String> = s
        .runs
        .iter()
        .filter(|r| r.experiment == e && r.loadgen_saturated)
        .map(|r| format!("{} {}", name(r), r.label))
        .collect();
    (!flagged.is_empty()).then(|| {
        format!(
            "‡ The load generator was flagged in {} of this experiment's runs (listed under \
             Health): {}. Their points in the charts above and their cells marked ‡ are its \
             reading, not the server's: a latency or cost is at most that, a limit at least that.",
            flagged.len(),
            flagged.join(", ")
        )
    })
}

fn belongs(figure: &str, e: Experiment) -> bool {
    let prefix = match e {
        Experiment::Latency => "latency",
        Experiment::Fanout => "fanout",
        Experiment::Capacity => "capacity",
        Experiment::Polling => "polling",
        Experiment::Coherence => "coherence",
        Experiment::Upstream => "upstream",
        Experiment::Idle => "rss",
        Experiment::Gateway => "gateway",
        Experiment::Faults => "faults",
        Experiment::Throughput | Experiment::Floor => return false,
    };
    figure.starts_with(prefix) || (e == Experiment::Fanout && figure == "cost-per-event")
}

fn summary_table(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "## Summary\n");
    let _ = write!(o, "| transport |");
    for m in &METRICS {
        let unit = if m.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.unit)
        };
        let _ = write!(o, " {}{unit} |", m.title);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "|---|{}", "---:|".repeat(METRICS.len()));
    for t in Transport::ALL {
        let _ = write!(o, "| {} |", t.name());
        for m in &METRICS {
            let v = (m.read)(s, t).map_or("–".into(), fmt_value);
            let mark = match m.key {
                "capacity_subs" => limit_mark(s, Experiment::Capacity, t),
                "throughput_per_s" => limit_mark(s, Experiment::Throughput, t),
                _ => "",
            };
            let floor = if crate::headline::generator_limited(m.key, s, t) {
                " ‡"
            } else {
                ""
            };
            let _ = write!(o, " {mark}{v}{floor} |");
        }
        let _ = writeln!(o);
    }
    let top = s.params.fanout_clients.iter().max().copied().unwrap_or(0);
    let _ = writeln!(
        o,
        "\n*1 sub*: `[latency]` (short polling at its shortest interval, {}). *most subs*, CPU, \
         bytes and requests: `[fanout]` at {top} subscribers. RSS and idle traffic: `[idle]`, \
         {} subscribers. ≥: every step passed, so the limit was not reached. ‡: the load \
         generator was saturated in the run behind this figure, so it is the load generator's \
         reading, not the server's: a limit is at least this (a floor), a latency or cost at \
         most this.\n",
        s.params
            .latency_poll_intervals
            .first()
            .map_or("-".into(), |d| fmt_interval(d.as_secs_f64())),
        s.params.idle_clients
    );
}

fn limit_mark(s: &Summary, e: Experiment, t: Transport) -> &'static str {
    match s.limit(e, t) {
        Some(l) if l.open_ended => "≥",
        _ => "",
    }
}

fn ms(us: f64) -> String {
    crate::numfmt::fmt_ms(us)
}

/// Extremes of `f` over the techniques that have it.
fn extremes(
    s: &Summary,
    f: impl Fn(Transport) -> Option<f64>,
) -> Option<((Transport, f64), (Transport, f64))> {
    let vals: Vec<_> = Transport::ALL
        .iter()
        .filter_map(|&t| Some((t, f(t)?)))
        .collect();
    let lo = vals.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1))?;
    let hi = vals.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1))?;
    let _ = s;
    Some((lo, hi))
}

fn reading(s: &Summary, e: Experiment) -> String {
    let p = Server::Pushbench;
    match e {
        Experiment::Floor => s.floor.as_ref().map(|f| f.reading()).unwrap_or_default(),
        Experiment::Gateway => crate::gateway_report::reading(s),
        Experiment::Faults => crate::faults_report::reading(s),
        Experiment::Latency => latency_reading(s),
        Experiment::Fanout => fanout_reading(s),
        Experiment::Capacity | Experiment::Throughput => {
            let what = if e == Experiment::Capacity {
                "subscribers"
            } else {
                "deliveries/s"
            };
            let mut parts = Vec::new();
            for t in Transport::ALL {
                if let Some(l) = s.limit(e, t) {
                    let mut x = format!(
                        "{} {}{} {what}",
                        t.name(),
                        if l.open_ended { "≥ " } else { "" },
                        fmt_value(l.value)
                    );
                    if let Some(r) = &l.reason {
                        let _ = write!(x, " (next step: {r})");
                    }
                    let _ = write!(x, " [{}]", l.side.describe());
                    parts.push(x);
                }
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("Limits found: {}.", parts.join("; "))
            }
        }
        Experiment::Polling => {
            let runs: Vec<&Run> = s.runs_of(Experiment::Polling, p, Transport::Poll).collect();
            let (Some(a), Some(z)) = (runs.first(), runs.last()) else {
                return String::new();
            };
            // The model's RTT is the paced floor, as in the chart: each client polls once per
            // interval, so its requests meet idle cores like paced pings do.
            let rtt = s
                .floor
                .as_ref()
                .map_or(0.0, |f| f.paced_or_back_to_back_p50_us())
                / 1000.0;
            let worst = runs
                .iter()
                .map(|r| {
                    let model = r.poll_interval_s * 1000.0 / 2.0 + rtt;
                    ((r.latency_us.mean / 1000.0) / model - 1.0).abs()
                })
                .fold(0.0, f64::max);
            let line = |r: &Run| {
                format!(
                    "every {}: {} requests/s, {:.0}% empty, mean latency {}",
                    fmt_interval(r.poll_interval_s),
                    fmt_value(r.requests as f64 / r.window_s.max(1e-9)),
                    100.0 * r.empty_responses as f64 / r.requests.max(1) as f64,
                    ms(r.latency_us.mean)
                )
            };
            format!(
                "Polling {}; {}. Mean latency stays within {:.0}% of the model interval/2 + RTT \
                 at every interval.",
                line(a),
                line(z),
                worst * 100.0
            )
        }
        Experiment::Coherence => {
            let mut parts = Vec::new();
            for r in s.runs_of(Experiment::Coherence, p, Transport::Poll) {
                parts.push(format!(
                    "publishing every {} and pulling every {} saw {:.0}%",
                    fmt_interval(1.0 / r.rate),
                    fmt_interval(r.poll_interval_s),
                    100.0 * r.delivered as f64 / r.expected.max(1) as f64
                ));
            }
            let push: Vec<_> = s
                .runs_of(Experiment::Coherence, p, Transport::Sse)
                .map(|r| 100.0 * r.delivered as f64 / r.expected.max(1) as f64)
                .collect();
            if parts.is_empty() {
                return String::new();
            }
            format!(
                "A pull client {}. Push saw {} of events. Pulling the state is coherent only \
                 when it polls faster than changes happen, and then most polls return nothing \
                 new; push is coherent at any rate and spends bytes only on changes.",
                parts.join("; "),
                if push.is_empty() {
                    "–".to_owned()
                } else {
                    push.iter()
                        .map(|v| format!("{v:.0}%"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        }
        Experiment::Upstream => {
            let parts: Vec<_> = s
                .upstream
                .iter()
                .map(|u| {
                    format!(
                        "{} {} p50 {} (p99 {}{})",
                        u.transport.name(),
                        u.via,
                        ms(u.rtt_us.p50 as f64),
                        ms(u.rtt_us.p99 as f64),
                        if u.lost > 0 {
                            format!(", {} lost", u.lost)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            if parts.is_empty() {
                String::new()
            } else {
                format!("Round trips: {}.", parts.join("; "))
            }
        }
        Experiment::Idle => {
            let mut text = String::new();
            if let Some((lo, hi)) = extremes(s, |t| s.idle_run(t)?.rss_per_conn_bytes) {
                let _ = write!(
                    text,
                    "Each idle connection costs the server from {} KiB ({}) to {} KiB ({}).",
                    fmt_value(lo.1 / 1024.0),
                    lo.0.name(),
                    fmt_value(hi.1 / 1024.0),
                    hi.0.name()
                );
            }
            let m = METRICS.iter().find(|m| m.key == "idle_bytes_per_conn_min");
            if let Some((lo, hi)) = m.and_then(|m| extremes(s, |t| (m.read)(s, t))) {
                let _ = write!(
                    text,
                    " Keeping a quiet connection alive takes {} B/min ({}) up to {} B/min ({}).",
                    fmt_value(lo.1),
                    lo.0.name(),
                    fmt_value(hi.1),
                    hi.0.name()
                );
            }
            text.push_str(&crate::footprint_report::table(s));
            text
        }
    }
}

/// `[latency]`'s reading: the push techniques' medians against the floors, short polling's
/// intervals, and the cross-check.
fn latency_reading(s: &Summary) -> String {
    let p = Server::Pushbench;
    let push: Vec<_> = [
        Transport::LongPoll,
        Transport::Stream,
        Transport::Sse,
        Transport::Ws,
    ]
    .iter()
    .filter_map(|&t| Some((t, s.latency_run(p, t)?)))
    .map(|(t, r)| format!("{} {}", t.name(), ms(r.latency_us.p50 as f64)))
    .collect();
    let mut text = String::new();
    if !push.is_empty() {
        let _ = write!(
            text,
            "Median latency with one subscriber: {}.",
            push.join(", ")
        );
        if let (Some(f), Some(best)) = (
            &s.floor,
            extremes(s, |t| {
                (t != Transport::Poll)
                    .then(|| s.latency_run(p, t).map(|r| r.latency_us.p50 as f64))
                    .flatten()
            }),
        ) {
            text.push_str(&floor_multiple(f, best.0 .0, best.0 .1));
        }
    }
    for r in s.runs_of(Experiment::Latency, p, Transport::Poll) {
        let _ = write!(
            text,
            " Short polling every {} has median {} and p99 {}: its interval sets them, \
             not the server.",
            fmt_interval(r.poll_interval_s),
            ms(r.latency_us.p50 as f64),
            ms(r.latency_us.p99 as f64)
        );
    }
    let crosscheck = crate::crosscheck_report::reading(s);
    if !crosscheck.is_empty() {
        let _ = write!(text, "\n\n{crosscheck}");
    }
    text.trim().to_owned()
}

/// `[fanout]`'s reading: p99, CPU and bytes at the largest size, then the physical limit.
fn fanout_reading(s: &Summary) -> String {
    let p = Server::Pushbench;
    let n = s.params.fanout_clients.iter().max().copied().unwrap_or(0);
    let mut text = String::new();
    if let Some((lo, hi)) = extremes(s, |t| Some(s.fanout_top(p, t)?.latency_us.p99 as f64)) {
        let _ = write!(
            text,
            "At {n} subscribers p99 ranges from {} ({}) to {} ({}).",
            ms(lo.1),
            lo.0.name(),
            ms(hi.1),
            hi.0.name()
        );
    }
    if let Some((lo, hi)) = extremes(s, |t| {
        s.fanout_top(p, t)?
            .server_cpu_ms_per_1k
            .filter(|&v| v > 0.0)
    }) {
        let _ = write!(
            text,
            " Server CPU per 1,000 deliveries is lowest for {} ({} ms) and highest for {} \
             ({} ms).",
            lo.0.name(),
            fmt_value(lo.1),
            hi.0.name(),
            fmt_value(hi.1)
        );
    }
    if let Some((lo, hi)) = extremes(s, |t| Some(s.fanout_top(p, t)?.bytes_down_per_event)) {
        let _ = write!(
            text,
            " A delivery costs {} bytes on the wire with {} and {} with {}: a request's \
             headers weigh more than a small event.",
            fmt_value(lo.1),
            lo.0.name(),
            fmt_value(hi.1),
            hi.0.name()
        );
    }
    let limit = crate::fanout_floor_report::reading(s);
    if !limit.is_empty() {
        text = format!("{text}\n\n{limit}");
    }
    text.trim().to_owned()
}

/// The fastest one-subscriber median (`best_us` of `t`) as multiples of the floors: the paced
/// one first, which meets idle cores as an event every 10 ms does.
fn floor_multiple(f: &Floor, t: Transport, best_us: f64) -> String {
    let b2b = f.back_to_back_p50_us();
    let times = |floor: f64| fmt_value(best_us / floor.max(1e-9));
    match (f.paced_p50_us(), f.pace()) {
        (Some(paced), Some(every)) => format!(
            " The fastest, {}, is {}× the paced TCP floor ({} µs: a raw round trip every \
             {every}, the events' own pace, so it too wakes both idle cores) and {}× the \
             back-to-back floor ({} µs). What lies above the paced floor is the push path \
             and its measurement: the publish request's HTTP, the hub, the event's framing, two \
             async runtimes scheduling them, and how late the load generator's publisher started \
             after each due time (`publish.lateness_us` in each load report).",
            t.name(),
            times(paced),
            fmt_value(paced),
            times(b2b),
            fmt_value(b2b)
        ),
        _ => format!(
            " The fastest, {}, is {}× the back-to-back TCP floor ({} µs). This run did not \
             measure the floor at the events' pace; on a virtual machine, waking idle cores \
             can account for much of the gap.",
            t.name(),
            times(b2b),
            fmt_value(b2b)
        ),
    }
}

fn health(o: &mut String, s: &Summary) {
    let _ = writeln!(o, "## Health of every run\n");
    let mut rows = Vec::new();
    for r in &s.runs {
        // Latest-state pulls skip events by design; so does a gateway whose every missed
        // delivery it counted (TTL, collapse key, full queue).
        let by_design = r.poll_latest || crate::gateway_report::unexplained_loss(r) == Some(0);
        let stepped_fail = r.passed == Some(false);
        let bad = r.lost + r.duplicates + r.out_of_order > 0 && !by_design && !stepped_fail;
        let disagrees = crate::crosscheck_report::flag(s, r);
        if bad
            || r.loadgen_saturated
            || r.clients_connected < r.clients as u64
            || disagrees.is_some()
        {
            let warnings: Vec<&str> = r
                .warnings
                .iter()
                .map(String::as_str)
                .chain(disagrees.as_deref())
                .collect();
            rows.push(format!(
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.experiment.name(),
                name(r),
                r.label,
                r.lost,
                r.duplicates,
                r.out_of_order,
                if r.loadgen_saturated { "yes" } else { "no" },
                warnings.join("; ")
            ));
        }
    }
    let total = s.runs.len();
    if rows.is_empty() {
        let _ = writeln!(
            o,
            "All {total} load runs: no event lost, duplicated or reordered (outside the steps \
             that ended a stepped experiment, and the latest-state pulls of [coherence], which \
             skip events by design), every subscriber connected, and the load generator was \
             never saturated.\n"
        );
    } else {
        let _ = writeln!(
            o,
            "{} of {total} load runs need a caveat (steps that ended a stepped experiment and \
             latest-state pulls are not listed):\n",
            rows.len()
        );
        let _ = writeln!(
            o,
            "| experiment | server/transport | step | lost | dup | reordered | loadgen saturated | warnings |\n|---|---|---|---:|---:|---:|---|---|"
        );
        for row in rows {
            let _ = writeln!(o, "{row}");
        }
        let _ = writeln!(o);
    }
    for f in &s.failures {
        let _ = writeln!(
            o,
            "- **Failed:** [{}] {} {} {}: {}",
            f.experiment.name(),
            f.server.name(),
            f.transport.name(),
            f.label,
            f.error
        );
    }
    let missing: Vec<_> = s.fanout_floor.iter().filter(|f| f.missing > 0).collect();
    for f in &missing {
        let _ = writeln!(
            o,
            "- **Physical limit at {} sockets:** {} of {} frames were not read in time.",
            f.sockets,
            f.missing,
            f.deliveries + f.missing
        );
    }
    for w in &s.warnings {
        let _ = writeln!(o, "- {w}");
    }
    if !s.failures.is_empty() || !s.warnings.is_empty() || !missing.is_empty() {
        let _ = writeln!(o);
    }
}

fn name(r: &Run) -> String {
    r.server.label(r.transport)
}

/// `YYYY-MM-DD HH:MM` from Unix ms (UTC), without a date crate.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
pub fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flagged_run_of_a_published_report_is_named_beside_its_charts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../results/full");
        let s = crate::load_summary(&dir).unwrap();
        let text = render(&s, &[]);
        let flagged: Vec<_> = s.runs.iter().filter(|r| r.loadgen_saturated).collect();
        for r in &flagged {
            let named = format!("{} {}", name(r), r.label);
            assert!(
                text.lines().any(
                    |l| l.starts_with("‡ The load generator was flagged") && l.contains(&named)
                ),
                "{named} is not named beside its charts"
            );
        }
        // A run without flags gets no note.
        let mut clean = s.clone();
        clean
            .runs
            .iter_mut()
            .for_each(|r| r.loadgen_saturated = false);
        assert!(!render(&clean, &[]).contains("‡ The load generator was flagged"));
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_795_650_000_000), "2026-11-25 23:40");
    }
}

//! `[gateway]`'s charts and reading: the relay hop against direct WebSocket (unicast and topic
//! fan-out), and what store-and-forward did for devices that went offline.

use std::fmt::Write as _;

use plotters::style::RGBColor;
use pushbench_servers::Transport;

use crate::chart_parts::color;
use crate::numfmt::fmt_interval;
use crate::numfmt::{fmt_ms, fmt_value};
use crate::plan::Experiment;
use crate::plot::{Axis, BarSet, Bars, Figure, Lines, Panel, Series, Stroke};
use crate::summary::{Run, Server, Summary};

/// The gateway's colour (Tableau brown), beside WebSocket's purple for direct push.
const GATEWAY: RGBColor = RGBColor(140, 86, 75);

/// The relay and direct runs at each size: `(devices, direct, through the gateway)`, from one
/// device (unicast) up. Offline runs are not part of it.
fn pairs(s: &Summary) -> Vec<(usize, Option<&Run>, Option<&Run>)> {
    let direct: Vec<&Run> = s
        .runs_of(Experiment::Gateway, Server::Pushbench, Transport::Ws)
        .collect();
    let relayed: Vec<&Run> = s
        .runs_of(Experiment::Gateway, Server::Gateway, Transport::Ws)
        .filter(|r| !is_offline(r))
        .collect();
    let mut sizes: Vec<usize> = direct.iter().chain(&relayed).map(|r| r.clients).collect();
    sizes.sort_unstable();
    sizes.dedup();
    sizes
        .into_iter()
        .map(|n| {
            let d = direct.iter().copied().find(|r| r.clients == n);
            let g = relayed.iter().copied().find(|r| r.clients == n);
            (n, d, g)
        })
        .collect()
}

/// A run that sent some devices offline.
fn is_offline(r: &Run) -> bool {
    r.gateway
        .as_ref()
        .is_some_and(|g| g.summary.offline_for_s > 0.0)
}

fn offline_runs(s: &Summary) -> Vec<&Run> {
    s.runs_of(Experiment::Gateway, Server::Gateway, Transport::Ws)
        .filter(|r| is_offline(r))
        .collect()
}

fn devices(n: usize) -> String {
    if n == 1 {
        "1 device".into()
    } else {
        format!("{} devices", fmt_count(n))
    }
}

fn fmt_count(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What an offline run did differently.
fn offline_kind(r: &Run) -> String {
    let Some(g) = &r.gateway else {
        return r.label.clone();
    };
    match (&g.collapse_key, g.ttl_s) {
        (Some(_), _) => "collapse key".into(),
        (None, Some(ttl)) => format!("TTL {}", fmt_interval(ttl)),
        (None, None) => "held".into(),
    }
}

/// `[gateway]`'s figures, if it ran.
pub fn figures(s: &Summary, out: &mut Vec<Figure>) {
    let pairs = pairs(s);
    if !pairs.is_empty() {
        let line =
            |name: &str, c: RGBColor, dashed: bool, read: &dyn Fn(&Run) -> u64, via: bool| Series {
                name: name.into(),
                color: c,
                stroke: Stroke::dashed_if(dashed),
                points: pairs
                    .iter()
                    .filter_map(|(n, d, g)| {
                        let r = if via { g } else { d };
                        Some((*n as f64, read((*r)?) as f64 / 1000.0))
                    })
                    .collect(),
            };
        let ws = color(Transport::Ws);
        let series = vec![
            line("gateway p99", GATEWAY, false, &|r| r.latency_us.p99, true),
            line("gateway p50", GATEWAY, true, &|r| r.latency_us.p50, true),
            line("direct ws p99", ws, false, &|r| r.latency_us.p99, false),
            line("direct ws p50", ws, true, &|r| r.latency_us.p50, false),
        ];
        // CPU per delivery at fan-out sizes only: at one device it is the process's fixed cost
        // spread over few deliveries, and its bar would flatten the others.
        let fan: Vec<_> = pairs.iter().filter(|(n, _, _)| *n > 1).collect();
        let categories: Vec<String> = fan.iter().map(|(n, _, _)| devices(*n)).collect();
        let set = |name: &str, c: RGBColor, via: bool, read: fn(&Run) -> Option<f64>| BarSet {
            name: name.into(),
            values: fan
                .iter()
                .map(|(_, d, g)| read(if via { (*g)? } else { (*d)? }))
                .collect(),
            colors: vec![c; fan.len()],
            light: false,
        };
        let mut panels = vec![Panel::Lines(Lines {
            title: format!(
                "due → received (1 device at 100 events/s; topics at {} event/s)",
                fmt_value(s.params.gateway_fanout_rate)
            ),
            x_label: "devices (log)".into(),
            y_label: "latency (ms, log)".into(),
            x_axis: Axis::Log,
            y_axis: Axis::Log,
            series,
        })];
        if !fan.is_empty() {
            panels.push(Panel::Bars(Bars {
                title: "server CPU per 1,000 deliveries, topic fan-out".into(),
                y_label: "CPU ms".into(),
                categories,
                sets: vec![
                    set("direct ws", ws, false, |r| r.server_cpu_ms_per_1k),
                    set("gateway", GATEWAY, true, |r| r.server_cpu_ms_per_1k),
                ],
                notes: Vec::new(),
            }));
        }
        out.push(Figure {
            name: "gateway-relay".into(),
            title: "[gateway] The relay hop: FCM-style gateway against direct WebSocket".into(),
            columns: 2,
            panels,
        });
    }
    let offline = offline_runs(s);
    if !offline.is_empty() {
        let categories: Vec<String> = offline.iter().map(|r| offline_kind(r)).collect();
        let set =
            |name: &str, c: RGBColor, light: bool, read: &dyn Fn(&Run) -> Option<f64>| BarSet {
                name: name.into(),
                values: offline.iter().map(|r| read(r)).collect(),
                colors: vec![c; offline.len()],
                light,
            };
        let g = |r: &Run| r.gateway.clone();
        let counts = vec![
            set("held for offline devices", GATEWAY, true, &|r| {
                Some(g(r)?.summary.held_expected as f64)
            }),
            set("delivered on return", GATEWAY, false, &|r| {
                Some(g(r)?.summary.held_delivered as f64)
            }),
            set("expired (TTL)", RGBColor(127, 127, 127), false, &|r| {
                Some(g(r)?.count("expired") as f64)
            }),
            set("collapsed", RGBColor(23, 190, 207), false, &|r| {
                Some(g(r)?.count("collapsed") as f64)
            }),
            set("overflowed", RGBColor(214, 39, 40), false, &|r| {
                Some(g(r)?.count("overflowed") as f64)
            }),
        ];
        let ms = |us: u64| Some(us as f64 / 1000.0);
        let latency = vec![
            set("held p50", GATEWAY, true, &|r| {
                ms(g(r)?.summary.held_latency_us.p50)
            }),
            set("held p99", GATEWAY, false, &|r| {
                ms(g(r)?.summary.held_latency_us.p99)
            }),
            set("all deliveries p50", color(Transport::Ws), true, &|r| {
                ms(r.latency_us.p50)
            }),
            set("all deliveries p99", color(Transport::Ws), false, &|r| {
                ms(r.latency_us.p99)
            }),
        ];
        let first = offline[0].gateway.as_ref().map(|g| &g.summary);
        let away = first.map_or(String::new(), |f| {
            format!(
                "{} of {} devices offline for {}",
                f.offline_clients,
                offline[0].clients,
                fmt_interval(f.offline_for_s)
            )
        });
        out.push(Figure {
            name: "gateway-offline".into(),
            title: format!("[gateway] Store and forward: {away}"),
            columns: 2,
            panels: vec![
                Panel::Bars(Bars {
                    title: "messages for the offline devices".into(),
                    y_label: "deliveries".into(),
                    categories: categories.clone(),
                    sets: counts,
                    notes: Vec::new(),
                }),
                Panel::Bars(Bars {
                    title: "due → received".into(),
                    y_label: "latency (ms)".into(),
                    categories,
                    sets: latency,
                    notes: Vec::new(),
                }),
            ],
        });
    }
}

fn ms(us: u64) -> String {
    fmt_ms(us as f64)
}

/// `[gateway]`'s reading: the numbers behind its charts, as a table and a few sentences.
pub fn reading(s: &Summary) -> String {
    let mut o = String::new();
    let pairs = pairs(s);
    if !pairs.is_empty() {
        let _ = writeln!(
            o,
            "| devices | path | p50 | p99 | lost | dup | reordered | server CPU ms/1k | bytes down/delivery |\n|---:|---|---:|---:|---:|---:|---:|---:|---:|"
        );
        for (n, d, g) in &pairs {
            for (path, r) in [("direct ws", d), ("gateway", g)] {
                let Some(r) = r else { continue };
                // A run the load generator could not outrun: its figures are bounds, not the
                // gateway's (the same ‡ as the headline table's).
                let mark = if r.loadgen_saturated { " ‡" } else { "" };
                let _ = writeln!(
                    o,
                    "| {} | {path}{mark} | {} | {} | {} | {} | {} | {} | {} |",
                    fmt_count(*n),
                    ms(r.latency_us.p50),
                    ms(r.latency_us.p99),
                    r.lost,
                    r.duplicates,
                    r.out_of_order,
                    r.server_cpu_ms_per_1k.map_or("–".into(), fmt_value),
                    fmt_value(r.bytes_down_per_event)
                );
            }
        }
        if pairs
            .iter()
            .flat_map(|(_, d, g)| [d, g])
            .any(|r| r.is_some_and(|r| r.loadgen_saturated))
        {
            let _ = writeln!(
                o,
                "\n‡: the load generator was saturated in this run (listed under Health): its \
                 latencies and costs are upper bounds, not the gateway's own."
            );
        }
        let _ = writeln!(o);
        let mut text = Vec::new();
        if let Some((_, Some(d), Some(g))) = pairs.iter().find(|(n, _, _)| *n == 1) {
            let diff = g.latency_us.p50 as f64 - d.latency_us.p50 as f64;
            let ratio = g.latency_us.p50 as f64 / d.latency_us.p50.max(1) as f64;
            let verdict = if (ratio - 1.0).abs() < 0.25 {
                "within a quarter of direct: at one device the hop (an HTTP send, a queue, an \
                 acknowledgement, all on one loopback) costs little beside run-to-run noise"
            } else if ratio > 1.0 {
                "the difference is the hop: an HTTP send, a queue and an acknowledgement"
            } else {
                "faster than direct here, which is run-to-run noise, not a property of a relay"
            };
            text.push(format!(
                "One device: the gateway delivers at p50 {} against {} direct ({}×, {}{} ms), \
                 {verdict}.",
                ms(g.latency_us.p50),
                ms(d.latency_us.p50),
                fmt_value(ratio),
                if diff >= 0.0 { "+" } else { "−" },
                fmt_value(diff.abs() / 1000.0)
            ));
        }
        if let Some((n, Some(d), Some(g))) = pairs.iter().rev().find(|(n, _, _)| *n > 1) {
            text.push(format!(
                "At {} devices, p99 is {} through the gateway against {} direct, and the server \
                 spends {} CPU ms per 1,000 deliveries against {}: per-device queues and \
                 acknowledgements cost more than one shared replay buffer.",
                fmt_count(*n),
                ms(g.latency_us.p99),
                ms(d.latency_us.p99),
                g.server_cpu_ms_per_1k.map_or("–".into(), fmt_value),
                d.server_cpu_ms_per_1k.map_or("–".into(), fmt_value)
            ));
        }
        let flagged = pairs
            .iter()
            .flat_map(|(_, d, g)| [d, g])
            .flatten()
            .filter(|r| r.loadgen_saturated)
            .count();
        if flagged > 0 {
            text.push(format!(
                "Each device acknowledges its messages (one stream ack per 10, as FCM's own \
                 clients do), writes that direct WebSocket does not pay, and the load generator \
                 has one core: {flagged} of these \
                 runs are flagged under Health, so part of the gateway's extra latency there may \
                 be the load generator's own."
            ));
        }
        let fanout: Vec<&Run> = pairs
            .iter()
            .filter_map(|(n, _, g)| (*n > 1).then_some(*g)?)
            .collect();
        let lossless = fanout
            .iter()
            .all(|r| r.lost + r.duplicates + r.out_of_order == 0 && r.delivered > 0);
        if !fanout.is_empty() {
            text.push(if lossless {
                format!(
                    "Topic fan-out lost, duplicated and reordered nothing up to {} devices.",
                    fmt_count(fanout.iter().map(|r| r.clients).max().unwrap_or(0))
                )
            } else {
                "Topic fan-out did not deliver everything exactly once: see Health.".into()
            });
        }
        let _ = writeln!(o, "{}\n", text.join(" "));
    }
    let offline = offline_runs(s);
    if !offline.is_empty() {
        let _ = writeln!(
            o,
            "| offline run | devices away | held | delivered on return | held p50 | held p99 | expired | collapsed | overflowed | lost | lost, not counted by the gateway |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &offline {
            let Some(g) = &r.gateway else { continue };
            let f = &g.summary;
            let unexplained = r.lost as i64 - g.dropped_by_design() as i64;
            let _ = writeln!(
                o,
                "| {} | {} for {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                offline_kind(r),
                f.offline_clients,
                fmt_interval(f.offline_for_s),
                f.held_expected,
                f.held_delivered,
                ms(f.held_latency_us.p50),
                ms(f.held_latency_us.p99),
                g.count("expired"),
                g.count("collapsed"),
                g.count("overflowed"),
                r.lost,
                unexplained
            );
        }
        let _ = writeln!(
            o,
            "\nA device that returns gets what the gateway held, late by up to its time away; a \
             TTL shorter than that expires the oldest messages, and a collapse key leaves only \
             the newest. Every delivery the load generator missed should be one the gateway \
             counted as expired, collapsed or overflowed: the last column is what it did not \
             account for (negative: it counted more than was missed)."
        );
    }
    o
}

/// A metric of `[gateway]`: the gateway's figure divided by direct WebSocket's in one run.
pub type Ratio = (&'static str, fn(&Summary) -> Option<f64>);

/// What `compare` checks of `[gateway]`: ratios within a run carry over between machines.
pub const RATIOS: [Ratio; 3] = [
    ("gateway_unicast_p50", |s| {
        ratio(s, |n| n == 1, |r| r.latency_us.p50 as f64)
    }),
    ("gateway_fanout_p99", |s| {
        ratio(s, |n| n > 1, |r| r.latency_us.p99 as f64)
    }),
    ("gateway_fanout_cpu", |s| {
        ratio(s, |n| n > 1, |r| r.server_cpu_ms_per_1k.unwrap_or(0.0))
    }),
];

/// Gateway ÷ direct of `read`, at the largest size that `size` accepts and both paths ran.
fn ratio(s: &Summary, size: fn(usize) -> bool, read: fn(&Run) -> f64) -> Option<f64> {
    let (_, d, g) = pairs(s)
        .into_iter()
        .rev()
        .find(|(n, d, g)| size(*n) && d.is_some() && g.is_some())?;
    let (d, g) = (read(d?), read(g?));
    (d > 0.0 && g > 0.0).then(|| g / d)
}

/// A gateway run's loss minus what the gateway's own counters explain (for Health): 0 when
/// every missed delivery was counted; negative when the gateway counted more than was missed.
pub fn unexplained_loss(r: &Run) -> Option<i64> {
    let g = r.gateway.as_ref()?;
    Some(r.lost as i64 - g.dropped_by_design() as i64)
}

//! What each chart shows, read from a [`Summary`]; `plot` draws them. One colour per
//! technique, the same in every chart; each peer's runs are
//! drawn in its own stroke (Nchan dashed, Pushpin dotted) in their technique's colour.

use plotters::style::RGBColor;
use pushbench_servers::Transport;

use crate::chart_parts::{bars, color, lighter, one};
use crate::fanout_floor_report;
use crate::numfmt::fmt_interval;
use crate::plan::Experiment;
use crate::plot::{Axis, BarSet, Bars, Figure, Lines, Panel, Series, Stroke};
use crate::summary::{Run, Server, Summary};
use crate::upstream::MODES;

/// Extra colours for series that are not techniques (coherence's publish intervals).
const GREYS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

fn name(server: Server, t: Transport) -> String {
    server.label(t)
}

/// Every chart the summary has data for, with the file stem the report links.
pub fn figures(s: &Summary) -> Vec<Figure> {
    let mut out = Vec::new();
    let servers = s.servers();
    // Latency spectrum.
    let mut series = Vec::new();
    for &server in &servers {
        for t in s.transports(Experiment::Latency, server) {
            for r in s.runs_of(Experiment::Latency, server, t) {
                let mut n = name(server, t);
                if t == Transport::Poll {
                    n = format!("{n} every {}", fmt_interval(r.poll_interval_s));
                }
                // A second polling interval gets a lighter shade of polling's colour.
                let first_poll = s
                    .latency_run(server, t)
                    .is_some_and(|f| f.poll_interval_s == r.poll_interval_s);
                series.push(Series {
                    name: n,
                    color: if first_poll {
                        color(t)
                    } else {
                        lighter(color(t))
                    },
                    stroke: server.stroke(),
                    points: r.spectrum.iter().map(|p| (p[0], p[1] / 1000.0)).collect(),
                });
            }
        }
    }
    if !series.is_empty() {
        out.push(one(
            "latency-spectrum",
            "[latency] Delivery latency percentiles, 1 subscriber, 100 events/s",
            Panel::Lines(Lines {
                title: "due → received".into(),
                x_label: "percentile".into(),
                y_label: "latency (ms, log)".into(),
                x_axis: Axis::Nines,
                y_axis: Axis::Log,
                series,
            }),
        ));
    }
    // Fan-out: p99, CPU per 1k, against subscribers.
    let fan = |read: fn(&Run) -> Option<f64>| {
        let mut series = Vec::new();
        for &server in &servers {
            for t in s.transports(Experiment::Fanout, server) {
                let points = s
                    .runs_of(Experiment::Fanout, server, t)
                    .filter_map(|r| Some((r.clients as f64, read(r)?)))
                    .collect();
                series.push(Series {
                    name: name(server, t),
                    color: color(t),
                    stroke: server.stroke(),
                    points,
                });
            }
        }
        series
    };
    let mut p99 = fan(|r| Some(r.latency_us.p99 as f64 / 1000.0));
    if !p99.is_empty() {
        let mut cpu = fan(|r| r.server_cpu_ms_per_1k);
        p99.extend(fanout_floor_report::series(s, |f| {
            f.latency_ns.p99 as f64 / 1e6
        }));
        cpu.extend(fanout_floor_report::series(s, |f| f.cpu_ms_per_1k));
        out.push(one(
            "fanout-p99",
            &format!(
                "[fanout] p99 latency against subscribers, {} event/s broadcast",
                s.params.fanout_rate
            ),
            Panel::Lines(Lines {
                title: "p99 due → received".into(),
                x_label: "subscribers (log)".into(),
                y_label: "p99 latency (ms, log)".into(),
                x_axis: Axis::Log,
                y_axis: Axis::Log,
                series: p99,
            }),
        ));
        out.push(one(
            "fanout-cpu",
            "[fanout] Server CPU per 1,000 deliveries against subscribers",
            Panel::Lines(Lines {
                title: "server CPU (user + system) during the window".into(),
                x_label: "subscribers (log)".into(),
                y_label: "CPU ms per 1,000 deliveries".into(),
                x_axis: Axis::Log,
                y_axis: Axis::Linear,
                series: cpu,
            }),
        ));
    }
    // Memory per connection (idle, and at the largest fan-out).
    let idle: Vec<_> = Transport::ALL
        .iter()
        .map(|&t| {
            s.idle_run(t)
                .and_then(|r| r.rss_per_conn_bytes)
                .map(|b| b / 1024.0)
        })
        .collect();
    let fan_rss: Vec<_> = Transport::ALL
        .iter()
        .map(|&t| {
            s.fanout_top(Server::Pushbench, t)
                .and_then(|r| r.rss_per_conn_bytes)
                .map(|b| b / 1024.0)
        })
        .collect();
    if idle.iter().chain(&fan_rss).any(Option::is_some) {
        let idle_n = s.params.idle_clients;
        let fan_n = s.params.fanout_clients.iter().max().copied().unwrap_or(0);
        out.push(one(
            "rss-per-connection",
            "Server memory per connection",
            Panel::Bars(bars(
                "RSS growth ÷ connections",
                "KiB per connection",
                vec![
                    (format!("{idle_n} idle subscribers"), idle, false),
                    (format!("{fan_n} subscribers, fan-out"), fan_rss, true),
                ],
            )),
        ));
    }
    // Bytes and requests per event.
    let top: Vec<_> = Transport::ALL
        .iter()
        .map(|&t| s.fanout_top(Server::Pushbench, t))
        .collect();
    if top.iter().any(Option::is_some) {
        let n = s.params.fanout_clients.iter().max().copied().unwrap_or(0);
        out.push(Figure {
            name: "cost-per-event".into(),
            title: format!("[fanout] What one delivery costs the network, {n} subscribers"),
            columns: 2,
            panels: vec![
                Panel::Bars(bars(
                    "bytes received per delivery",
                    "bytes (headers, framing, keep-alives)",
                    vec![(
                        String::new(),
                        top.iter()
                            .map(|r| r.map(|r| r.bytes_down_per_event))
                            .collect(),
                        false,
                    )],
                )),
                Panel::Bars(bars(
                    "HTTP requests per delivery",
                    "requests",
                    vec![(
                        String::new(),
                        top.iter()
                            .map(|r| r.map(|r| r.requests_per_event))
                            .collect(),
                        false,
                    )],
                )),
            ],
        });
    }
    if let Some(f) = polling(s) {
        out.push(f);
    }
    // Capacity and throughput.
    let limits = |e: Experiment| -> (Vec<Option<f64>>, Vec<String>) {
        Transport::ALL
            .iter()
            .map(|&t| match s.limit(e, t) {
                Some(l) => (
                    Some(l.value),
                    match (l.open_ended, l.loadgen_limited) {
                        (true, true) => "≥ (loadgen)".into(),
                        (true, false) => "≥".into(),
                        (false, true) => "loadgen?".into(),
                        _ => String::new(),
                    },
                ),
                None => (None, String::new()),
            })
            .unzip()
    };
    let (cap, cap_notes) = limits(Experiment::Capacity);
    let (thr, thr_notes) = limits(Experiment::Throughput);
    if cap.iter().chain(&thr).any(Option::is_some) {
        let mut c = bars(
            "most subscribers, p99 ≤ 250 ms, no loss",
            "subscribers",
            vec![(String::new(), cap, false)],
        );
        c.notes = cap_notes;
        let mut t = bars(
            &format!(
                "most deliveries/s, {} subscribers, p99 ≤ 100 ms",
                s.params.throughput_clients
            ),
            "deliveries per second",
            vec![(String::new(), thr, false)],
        );
        t.notes = thr_notes;
        out.push(Figure {
            name: "capacity".into(),
            title:
                "[capacity] [throughput] What one server core holds (≥: the largest step passed)"
                    .into(),
            columns: 2,
            panels: vec![Panel::Bars(c), Panel::Bars(t)],
        });
    }
    if let Some(f) = coherence(s) {
        out.push(f);
    }
    // Upstream.
    if !s.upstream.is_empty() {
        let cats: Vec<_> = MODES
            .iter()
            .filter(|&&t| s.upstream_of(t).is_some())
            .copied()
            .collect();
        let read = |f: fn(&crate::upstream::Upstream) -> u64| -> Vec<Option<f64>> {
            cats.iter()
                .map(|&t| s.upstream_of(t).map(|u| f(u) as f64 / 1000.0))
                .collect()
        };
        let colors = cats.iter().map(|&t| color(t)).collect::<Vec<_>>();
        out.push(one(
            "upstream-rtt",
            "[upstream] Round trip client → server → client",
            Panel::Bars(Bars {
                title: "WebSocket in band; the others POST beside their subscription".into(),
                y_label: "round trip (ms)".into(),
                categories: cats
                    .iter()
                    .map(|&t| match t {
                        Transport::Ws => "ws (in-band)".to_owned(),
                        t => format!("POST + {}", t.name()),
                    })
                    .collect(),
                sets: vec![
                    BarSet {
                        name: "p50".into(),
                        values: read(|u| u.rtt_us.p50),
                        colors: colors.clone(),
                        light: false,
                    },
                    BarSet {
                        name: "p99".into(),
                        values: read(|u| u.rtt_us.p99),
                        colors,
                        light: true,
                    },
                ],
                notes: Vec::new(),
            }),
        ));
    }
    crate::gateway_report::figures(s, &mut out);
    out.extend(crate::faults_report::figures(s));
    out
}

fn polling(s: &Summary) -> Option<Figure> {
    let runs: Vec<_> = s
        .runs_of(Experiment::Polling, Server::Pushbench, Transport::Poll)
        .collect();
    if runs.is_empty() {
        return None;
    }
    // The paced floor, not the back-to-back one: each client polls once per interval, so
    // its requests reach idle cores like the paced pings, not the back-to-back ones. (At these
    // intervals the RTT is a sliver of the model; the choice matters for honesty, not shape.)
    let rtt_ms = s
        .floor
        .as_ref()
        .map_or(0.0, |f| f.paced_or_back_to_back_p50_us() / 1000.0);
    let clients = runs[0].clients as f64;
    let xs: Vec<f64> = runs.iter().map(|r| r.poll_interval_s * 1000.0).collect();
    let measured = |f: &dyn Fn(&Run) -> f64| -> Vec<(f64, f64)> {
        runs.iter().zip(&xs).map(|(r, &x)| (x, f(r))).collect()
    };
    let model =
        |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> { xs.iter().map(|&x| (x, f(x))).collect() };
    let pc = color(Transport::Poll);
    let grey = RGBColor(90, 90, 90);
    let panel = |title: &str,
                 y: &str,
                 y_axis,
                 m: Vec<(f64, f64)>,
                 model_pts: Option<(String, Vec<(f64, f64)>)>| {
        let mut series = vec![Series {
            name: "measured".into(),
            color: pc,
            stroke: Stroke::Solid,
            points: m,
        }];
        if let Some((n, pts)) = model_pts {
            series.push(Series {
                name: n,
                color: grey,
                stroke: Stroke::Dashed,
                points: pts,
            });
        }
        Panel::Lines(Lines {
            title: title.into(),
            x_label: "poll interval (ms, log)".into(),
            y_label: y.into(),
            x_axis: Axis::Log,
            y_axis,
            series,
        })
    };
    let per_s = |n: u64, r: &Run| n as f64 / r.window_s.max(1e-9);
    Some(Figure {
        name: "polling-tradeoff".into(),
        title: format!(
            "[polling] Short polling: latency bought with requests ({} clients, 10 events/s)",
            clients
        ),
        columns: 2,
        panels: vec![
            panel(
                "mean latency",
                "mean due → received (ms, log)",
                Axis::Log,
                measured(&|r| r.latency_us.mean / 1000.0),
                Some((
                    "model: interval/2 + RTT".into(),
                    model(&|x| x / 2.0 + rtt_ms),
                )),
            ),
            panel(
                "requests per second (all clients)",
                "requests/s (log)",
                Axis::Log,
                measured(&|r| per_s(r.requests, r)),
                Some((
                    "model: clients/interval".into(),
                    model(&|x| clients * 1000.0 / x),
                )),
            ),
            panel(
                "bytes per second received (all clients)",
                "bytes/s (log)",
                Axis::Log,
                measured(&|r| per_s(r.bytes_down, r)),
                None,
            ),
            panel(
                "empty responses",
                "% of polls with no event",
                Axis::Linear,
                measured(&|r| 100.0 * r.empty_responses as f64 / r.requests.max(1) as f64),
                None,
            ),
        ],
    })
}

fn coherence(s: &Summary) -> Option<Figure> {
    let pulls: Vec<_> = s
        .runs_of(Experiment::Coherence, Server::Pushbench, Transport::Poll)
        .collect();
    if pulls.is_empty() {
        return None;
    }
    let mut publish: Vec<f64> = pulls.iter().map(|r| 1.0 / r.rate).collect();
    publish.sort_by(f64::total_cmp);
    publish.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
    let pushes: Vec<_> = s
        .runs_of(Experiment::Coherence, Server::Pushbench, Transport::Sse)
        .collect();
    let x_max = pulls
        .iter()
        .map(|r| r.poll_interval_s * 1000.0)
        .fold(0.0, f64::max);
    let x_min = pulls
        .iter()
        .map(|r| r.poll_interval_s * 1000.0)
        .fold(f64::INFINITY, f64::min);
    let panel = |title: &str, y: &str, y_axis: Axis, f: fn(&Run) -> f64| {
        let mut series = Vec::new();
        for (k, &p) in publish.iter().enumerate() {
            let same = |r: &&&Run| ((1.0 / r.rate) - p).abs() < 1e-9;
            let c = GREYS[k % GREYS.len()];
            series.push(Series {
                name: format!("pull, publish every {}", fmt_interval(p)),
                color: c,
                stroke: Stroke::Solid,
                points: pulls
                    .iter()
                    .filter(same)
                    .map(|r| (r.poll_interval_s * 1000.0, f(r)))
                    .collect(),
            });
            if let Some(push) = pushes.iter().find(same) {
                let v = f(push);
                series.push(Series {
                    name: format!("push (sse), publish every {}", fmt_interval(p)),
                    color: c,
                    stroke: Stroke::Dashed,
                    points: vec![(x_min, v), (x_max, v)],
                });
            }
        }
        Panel::Lines(Lines {
            title: title.into(),
            x_label: "pull interval (ms, log)".into(),
            y_label: y.into(),
            x_axis: Axis::Log,
            y_axis,
            series,
        })
    };
    Some(Figure {
        name: "coherence".into(),
        title: "[coherence] Pulling the latest state against push (after Bozdag et al. 2007)"
            .into(),
        columns: 3,
        panels: vec![
            panel(
                "coherence",
                "% of published events seen",
                Axis::Linear,
                |r| 100.0 * r.delivered as f64 / r.expected.max(1) as f64,
            ),
            panel(
                "staleness",
                "mean publish → receipt of what was seen (ms, log)",
                Axis::Log,
                |r| r.latency_us.mean / 1000.0,
            ),
            panel("traffic", "bytes/s per client (log)", Axis::Log, |r| {
                r.bytes_down as f64 / r.window_s.max(1e-9) / r.clients_connected.max(1) as f64
            }),
        ],
    })
}

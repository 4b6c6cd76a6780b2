//! `pushbench compare PUBLISHED NEW`: how a new run stands against a published one.
//!
//! Absolute figures depend on the machine, so they are never judged as they are. What carries
//! over from machine to machine is how the techniques stand against each other. So for each
//! metric, each technique's change from the published run to the new one is divided by the
//! median change of all the techniques: the median is how the machine moved, and what is left is
//! how that technique moved against the others. One that moved by more than the tolerance fails
//! the comparison.
//!
//! Why the median change and not a ratio to one reference technique: a tail figure of one
//! technique can swing threefold between two runs on a shared machine (WebSocket's fan-out p99
//! went 11.8 → 39 ms between two back-to-back quick runs), and as the reference it moved every
//! other technique's ratio with it. The median of the changes is not moved by one technique
//! alone, so only the technique that moved is reported as moved.
//!
//! Short polling's latencies are the exception: its poll interval sets them, not the machine, so
//! they are judged against the published figure as they are, and kept out of the median.

use std::fmt::{self, Write as _};

use pushbench_servers::Transport;

use crate::headline::METRICS;
use crate::numfmt::fmt_value;
use crate::summary::Summary;

/// One compared figure.
#[derive(Debug, Clone)]
pub struct Row {
    /// Metric key.
    pub metric: &'static str,
    /// Technique (`gateway` for the gateway's ratios to direct WebSocket).
    pub who: &'static str,
    /// Published value.
    pub published: f64,
    /// New value.
    pub new: f64,
    /// What is judged: for a technique, `new / published` divided by `machine`; for the
    /// gateway's ratios and the absolute figures, `new / published`.
    pub change: f64,
    /// For a technique's judged row, the median of every technique's `new / published` for
    /// the metric: how the machine moved.
    pub machine: Option<f64>,
    /// Whether this row is judged, and moved past the tolerance.
    pub moved: bool,
}

impl Row {
    /// A judged row: `new / published` (`values`), divided by how the machine moved when that
    /// is given, and moved when its log is past `limit` (the log of 1 + tolerance).
    fn judged(
        metric: &'static str,
        who: &'static str,
        (published, new): (f64, f64),
        machine: Option<f64>,
        limit: f64,
    ) -> Row {
        let change = new / published / machine.unwrap_or(1.0);
        Row {
            metric,
            who,
            published,
            new,
            change,
            machine,
            moved: change.ln().abs() > limit,
        }
    }
}

/// The whole comparison.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Allowed relative move of a ratio (0.3: from 1/1.3× to 1.3×).
    pub tolerance: f64,
    /// Within-run ratios to the reference technique (judged).
    pub ratios: Vec<Row>,
    /// Absolute figures (not judged).
    pub absolute: Vec<Row>,
    /// Things that make the comparison weaker (different scales, builds).
    pub notes: Vec<String>,
}

impl Comparison {
    /// Ratio rows that moved past the tolerance.
    pub fn moved(&self) -> usize {
        self.ratios.iter().filter(|r| r.moved).count()
    }
}

/// Compares `new` against `published`.
pub fn compare(published: &Summary, new: &Summary, tolerance: f64) -> Comparison {
    let mut notes = Vec::new();
    if published.scale != new.scale {
        notes.push(format!(
            "the runs differ in scale ({} vs {}): sizes differ, so ratios may too",
            published.scale.name(),
            new.scale.name()
        ));
    }
    if !new.environment.release_build {
        notes.push("the new run is a debug build: its figures are not comparable".into());
    }
    if !new.pinning.pinned {
        notes.push(format!("the new run was {}", new.pinning.describe()));
    }
    let limit = (1.0 + tolerance).ln();
    let mut ratios = Vec::new();
    let mut absolute = Vec::new();
    for m in &METRICS {
        let mut pairs = Vec::new();
        for t in Transport::ALL {
            if let (Some(a), Some(b)) = ((m.read)(published, t), (m.read)(new, t)) {
                absolute.push(Row {
                    metric: m.key,
                    who: t.name(),
                    published: a,
                    new: b,
                    change: if a > 0.0 { b / a } else { f64::NAN },
                    machine: None,
                    moved: false,
                });
                if a > 0.0 && b > 0.0 {
                    if m.checked && m.poll_interval_bound && t == Transport::Poll {
                        // Set by the poll interval, not the machine: judged as it is.
                        ratios.push(Row::judged(m.key, t.name(), (a, b), None, limit));
                    } else {
                        pairs.push((t, a, b));
                    }
                }
            }
        }
        if !m.checked || pairs.len() < 2 {
            continue;
        }
        let changes: Vec<f64> = pairs.iter().map(|&(_, a, b)| b / a).collect();
        let Some(machine) = median(&changes) else {
            continue;
        };
        for (t, a, b) in pairs {
            ratios.push(Row::judged(m.key, t.name(), (a, b), Some(machine), limit));
        }
    }
    // `[gateway]`: the gateway's figures divided by direct WebSocket's in the same run.
    for (metric, read) in crate::gateway_report::RATIOS {
        if let (Some(a), Some(b)) = (read(published), read(new)) {
            ratios.push(Row::judged(metric, "gateway", (a, b), None, limit));
        }
    }
    Comparison {
        tolerance,
        ratios,
        absolute,
        notes,
    }
}

/// The median of `values`; with an even count, the geometric mean of the middle two (the
/// values are ratios).
fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[mid]),
        _ => Some((v[mid - 1] * v[mid]).sqrt()),
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Each technique's change from published to new, divided by the median change of the \
             techniques (how the machine moved); short polling's latencies, which its poll \
             interval sets, and the gateway's ratios to direct ws within each run, as they are. \
             Checked, tolerance ±{:.0}%:",
            self.tolerance * 100.0
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<9} {:>10} {:>10} {:>8} {:>8} {:>9}  verdict",
            "metric", "transport", "published", "new", "new/pub", "median", "relative"
        );
        for r in &self.ratios {
            let (raw, machine) = match r.machine {
                Some(m) => (format!("{:.2}×", r.change * m), format!("{m:.2}×")),
                None => ("".to_owned(), "".to_owned()),
            };
            let _ = writeln!(
                out,
                "  {:<24} {:<9} {:>10} {:>10} {:>8} {:>8} {:>8.2}×  {}",
                r.metric,
                r.who,
                fmt_value(r.published),
                fmt_value(r.new),
                raw,
                machine,
                r.change,
                if r.moved { "MOVED" } else { "ok" }
            );
        }
        let _ = writeln!(
            out,
            "\nAbsolute figures (depend on the machine; shown, not checked):"
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<9} {:>10} {:>10} {:>9}",
            "metric", "transport", "published", "new", "new/pub"
        );
        for r in &self.absolute {
            let _ = writeln!(
                out,
                "  {:<24} {:<9} {:>10} {:>10} {:>9}",
                r.metric,
                r.who,
                fmt_value(r.published),
                fmt_value(r.new),
                if r.change.is_finite() {
                    format!("{:.2}×", r.change)
                } else {
                    "–".to_owned()
                }
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "\nnote: {n}");
        }
        let moved = self.moved();
        let _ = writeln!(
            out,
            "\n{} of {} checked figures within ±{:.0}%{}",
            self.ratios.len() - moved,
            self.ratios.len(),
            self.tolerance * 100.0,
            if moved > 0 {
                format!("; {moved} moved")
            } else {
                String::new()
            }
        );
        f.write_str(&out)
    }
}

//! `pushbench compare PUBLISHED NEW`: how a new run stands against a published one.
//!
//! Absolute figures depend on the machine, so they are shown but never judged. What carries
//! over from machine to machine is how the techniques stand against each other within one run:
//! each technique's value divided by WebSocket's. Those ratios are compared, and one that moved
//! by more than the tolerance fails the comparison.

use std::fmt::{self, Write as _};

use pushbench_servers::Transport;

use crate::headline::{fmt_value, ratio_to_reference, METRICS, REFERENCE};
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
    /// `new / published`.
    pub change: f64,
    /// Whether this row is judged, and moved past the tolerance.
    pub moved: bool,
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
        for t in Transport::ALL {
            if let (Some(a), Some(b)) = ((m.read)(published, t), (m.read)(new, t)) {
                absolute.push(Row {
                    metric: m.key,
                    who: t.name(),
                    published: a,
                    new: b,
                    change: if a > 0.0 { b / a } else { f64::NAN },
                    moved: false,
                });
            }
            if t == REFERENCE || !m.checked {
                continue;
            }
            if let (Some(a), Some(b)) = (
                ratio_to_reference(m, published, t),
                ratio_to_reference(m, new, t),
            ) {
                let change = b / a;
                ratios.push(Row {
                    metric: m.key,
                    who: t.name(),
                    published: a,
                    new: b,
                    change,
                    moved: change.ln().abs() > limit,
                });
            }
        }
    }
    // `[gateway]`: the gateway's figures divided by direct WebSocket's in the same run.
    for (metric, read) in crate::gateway::RATIOS {
        if let (Some(a), Some(b)) = (read(published), read(new)) {
            let change = b / a;
            ratios.push(Row {
                metric,
                who: "gateway",
                published: a,
                new: b,
                change,
                moved: change.ln().abs() > limit,
            });
        }
    }
    Comparison {
        tolerance,
        ratios,
        absolute,
        notes,
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Ratios between techniques within each run (value ÷ {}'s; the gateway's ÷ direct ws's); checked, tolerance ±{:.0}%:",
            REFERENCE.name(),
            self.tolerance * 100.0
        );
        let _ = writeln!(
            out,
            "  {:<24} {:<9} {:>10} {:>10} {:>9}  verdict",
            "metric", "transport", "published", "new", "new/pub"
        );
        for r in &self.ratios {
            let _ = writeln!(
                out,
                "  {:<24} {:<9} {:>10} {:>10} {:>8.2}×  {}",
                r.metric,
                r.who,
                format!("{}×", fmt_value(r.published)),
                format!("{}×", fmt_value(r.new)),
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
            "\n{} of {} ratios within ±{:.0}%{}",
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

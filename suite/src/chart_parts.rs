//! The pieces every chart module shares (the general charts, `[fanout]`'s physical limit,
//! `[gateway]`, `[faults]`): one colour per technique, one-panel figures, a bar per technique,
//! interval labels. A leaf, so the chart modules depend on it and never on each other's.

use plotters::style::RGBColor;
use pushbench_servers::Transport;

use crate::plot::{BarSet, Bars, Figure, Panel};

/// The colour of a technique in every chart (Tableau 10, readable in print and by most
/// colour-blind readers).
pub fn color(t: Transport) -> RGBColor {
    match t {
        Transport::Poll => RGBColor(31, 119, 180),
        Transport::LongPoll => RGBColor(255, 127, 14),
        Transport::Stream => RGBColor(44, 160, 44),
        Transport::Sse => RGBColor(214, 39, 40),
        Transport::Ws => RGBColor(148, 103, 189),
    }
}

/// `c` halfway to white.
pub fn lighter(c: RGBColor) -> RGBColor {
    let half = |v: u8| v + (255 - v) / 2;
    RGBColor(half(c.0), half(c.1), half(c.2))
}

/// A figure of one panel.
pub fn one(name: &str, title: &str, panel: Panel) -> Figure {
    Figure {
        name: name.into(),
        title: title.into(),
        panels: vec![panel],
        columns: 1,
    }
}

/// A bar chart with one bar per technique in each set `(legend, values, light)`.
pub fn bars(title: &str, y: &str, sets: Vec<(String, Vec<Option<f64>>, bool)>) -> Bars {
    Bars {
        title: title.into(),
        y_label: y.into(),
        categories: Transport::ALL.iter().map(|t| t.name().to_owned()).collect(),
        sets: sets
            .into_iter()
            .map(|(name, values, light)| BarSet {
                name,
                values,
                colors: Transport::ALL.iter().map(|&t| color(t)).collect(),
                light,
            })
            .collect(),
        notes: Vec::new(),
    }
}

//! How charts are drawn: a small description ([`Figure`] of line and bar panels) rendered with
//! plotters to SVG and PNG alike. What each chart shows lives in `charts`.
//!
//! Every axis is drawn on linear coordinates with explicit tick positions; log and percentile
//! ("nines") axes transform their values first. That keeps one coordinate type for every
//! chart and puts ticks exactly where a reader expects them (1, 10, 100; 90%, 99%, 99.9%).

use std::path::Path;
use std::sync::Once;

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

/// The embedded font (DejaVu Sans; licence in `suite/assets/DejaVuSans.LICENSE`), so charts
/// render the same on every machine without system fonts.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid font, checked by the tests; a failure would only leave text out.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// How an axis maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Axis {
    /// Linear, from zero.
    Linear,
    /// Base-10 logarithmic.
    Log,
    /// Percentiles on a "nines" scale: 90, 99, 99.9 equally spaced.
    Nines,
}

impl Axis {
    fn to(self, v: f64) -> f64 {
        match self {
            Axis::Linear => v,
            Axis::Log => v.max(1e-12).log10(),
            Axis::Nines => -(1.0 - (v / 100.0).min(0.99999)).log10(),
        }
    }

    fn from(self, x: f64) -> f64 {
        match self {
            Axis::Linear => x,
            Axis::Log => 10f64.powf(x),
            Axis::Nines => 100.0 * (1.0 - 10f64.powf(-x)),
        }
    }

    /// The drawn range (transformed) and its tick positions, for data spanning `lo..=hi`.
    fn layout(self, lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
        match self {
            Axis::Linear => {
                let hi = if hi > lo { hi } else { lo + 1.0 };
                let lo = lo.min(0.0);
                let step = nice_step((hi - lo) / 5.0);
                let top = (hi / step).ceil() * step;
                let ticks = (0..=((top - lo) / step).round() as usize)
                    .map(|i| lo + i as f64 * step)
                    .collect();
                (lo, top, ticks)
            }
            Axis::Log => {
                let lo = lo.max(1e-9);
                let hi = hi.max(lo * 1.0001);
                let (a, b) = (lo.log10().floor(), hi.log10().ceil());
                let mut ticks = Vec::new();
                let dense = b - a <= 2.0;
                for d in a as i32..=b as i32 {
                    for m in [1.0, 2.0, 5.0] {
                        if m == 1.0 || dense {
                            let v = m * 10f64.powi(d);
                            if v >= 10f64.powf(a) && v <= 10f64.powf(b) {
                                ticks.push(v.log10());
                            }
                        }
                    }
                }
                (a, b, ticks)
            }
            Axis::Nines => {
                let top = self.to(hi.max(99.0));
                let ticks = [0.0, 50.0, 90.0, 99.0, 99.9, 99.99]
                    .iter()
                    .map(|&p| self.to(p))
                    .filter(|&x| x <= top + 1e-9)
                    .collect();
                (0.0, top, ticks)
            }
        }
    }

    fn label(self, x: f64) -> String {
        let v = self.from(x);
        match self {
            Axis::Nines => {
                if v >= 99.99995 {
                    "max".into()
                } else {
                    format!("{}%", trim(v, 2))
                }
            }
            _ => axis_value(v),
        }
    }
}

/// A tick label: `0.5`, `20`, `1500`, `20k`, `1.5M`.
fn axis_value(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6, 1))
    } else if a >= 1e4 {
        format!("{}k", trim(v / 1e3, 1))
    } else if a >= 1.0 {
        trim(v, 1)
    } else {
        trim(v, 3)
    }
}

fn trim(v: f64, decimals: usize) -> String {
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    }
}

/// 1, 2 or 5 × a power of ten, near `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let m = raw / p;
    let n = if m <= 1.0 {
        1.0
    } else if m <= 2.0 {
        2.0
    } else if m <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * p
}

/// One line of a line chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Colour.
    pub color: RGBColor,
    /// How the line is drawn (models and peers are not solid).
    pub stroke: Stroke,
    /// `(x, y)` in data units.
    pub points: Vec<(f64, f64)>,
}

/// How a series' line is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stroke {
    /// A line with a dot at each point.
    Solid,
    /// Long dashes (models; Nchan).
    Dashed,
    /// Short dots (Pushpin).
    Dotted,
}

impl Stroke {
    /// Dashed when `dashed`, else solid.
    pub fn dashed_if(dashed: bool) -> Stroke {
        if dashed {
            Stroke::Dashed
        } else {
            Stroke::Solid
        }
    }
}

/// A line chart panel.
#[derive(Debug, Clone)]
pub struct Lines {
    /// Panel title.
    pub title: String,
    /// X axis caption (with unit).
    pub x_label: String,
    /// Y axis caption (with unit).
    pub y_label: String,
    /// X mapping.
    pub x_axis: Axis,
    /// Y mapping.
    pub y_axis: Axis,
    /// The lines.
    pub series: Vec<Series>,
}

/// One set of bars, one bar per category.
#[derive(Debug, Clone)]
pub struct BarSet {
    /// Legend text (empty: no legend).
    pub name: String,
    /// Values per category (`None`: not measured).
    pub values: Vec<Option<f64>>,
    /// Colour per category.
    pub colors: Vec<RGBColor>,
    /// Drawn lighter (a second set beside the first, e.g. p99 beside p50).
    pub light: bool,
}

/// A bar chart panel.
#[derive(Debug, Clone)]
pub struct Bars {
    /// Panel title.
    pub title: String,
    /// Y axis caption (with unit).
    pub y_label: String,
    /// Category names (x axis).
    pub categories: Vec<String>,
    /// Side-by-side sets.
    pub sets: Vec<BarSet>,
    /// A note above each category's bars (e.g. "≥" for a limit not reached).
    pub notes: Vec<String>,
}

/// A panel.
#[derive(Debug, Clone)]
pub enum Panel {
    /// Lines.
    Lines(Lines),
    /// Bars.
    Bars(Bars),
}

/// A chart file: panels on a grid.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem (`latency-spectrum` → `.svg` and `.png`).
    pub name: String,
    /// Title over the whole figure.
    pub title: String,
    /// Panels, left to right, top to bottom.
    pub panels: Vec<Panel>,
    /// Panels per row.
    pub columns: usize,
}

impl Figure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        ((cols as u32 * 640).max(900), 60 + rows as u32 * 460)
    }

    /// Writes `DIR/NAME.svg` and `DIR/NAME.png`.
    pub fn render(&self, dir: &Path) -> Result<(), String> {
        register_font();
        let size = self.size();
        let svg = dir.join(format!("{}.svg", self.name));
        {
            let root = SVGBackend::new(&svg, size).into_drawing_area();
            self.draw(&root)
                .map_err(|e| format!("{}: {e}", svg.display()))?;
            root.present()
                .map_err(|e| format!("{}: {e}", svg.display()))?;
        }
        let png = dir.join(format!("{}.png", self.name));
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        self.draw(&root)
            .map_err(|e| format!("{}: {e}", png.display()))?;
        root.present()
            .map_err(|e| format!("{}: {e}", png.display()))?;
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String> {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let root = root
            .titled(&self.title, (FAMILY, 26).into_font())
            .map_err(err)?;
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        let areas = root.split_evenly((rows, cols));
        for (panel, area) in self.panels.iter().zip(areas.iter()) {
            match panel {
                Panel::Lines(l) => draw_lines(area, l)?,
                Panel::Bars(b) => draw_bars(area, b)?,
            }
        }
        Ok(())
    }
}

/// A linear axis with exactly the given ticks.
#[derive(Debug, Clone)]
struct Coord {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
}

impl Coord {
    fn new(lo: f64, hi: f64, ticks: Vec<f64>) -> Coord {
        let hi = if hi > lo { hi } else { lo + 1.0 };
        Coord { lo, hi, ticks }
    }
}

impl Ranged for Coord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let t = (value - self.lo) / (self.hi - self.lo);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

fn draw_lines<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, l: &Lines) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let pts = l.series.iter().flat_map(|s| s.points.iter());
    let finite: Vec<_> = pts
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (l.y_axis != Axis::Log || *y > 0.0))
        .collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = finite.iter().map(|(x, y)| (*x, *y)).unzip();
    let (x_lo, x_hi) = bounds(&xs);
    let (y_lo, y_hi) = bounds(&ys);
    // Room above the data for the legend in the upper left.
    let legend_rows = l.series.len() as f64;
    let y_hi = match l.y_axis {
        Axis::Log => y_hi * 10f64.powf(0.12 * legend_rows.min(8.0) + 0.2),
        _ => y_hi + (y_hi - y_lo.min(0.0)) * (0.07 * legend_rows.min(8.0) + 0.1),
    };
    let (xa, xb, xt) = l.x_axis.layout(x_lo, x_hi);
    let (ya, yb, yt) = l.y_axis.layout(y_lo, y_hi);
    let (x, y) = (Coord::new(xa, xb, xt), Coord::new(ya, yb, yt));
    let mut chart = ChartBuilder::on(area)
        .caption(&l.title, (FAMILY, 20).into_font())
        .margin(14)
        .x_label_area_size(46)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let (xa_, ya_) = (l.x_axis, l.y_axis);
    chart
        .configure_mesh()
        .x_desc(&l.x_label)
        .y_desc(&l.y_label)
        .x_label_formatter(&|v| xa_.label(*v))
        .y_label_formatter(&|v| ya_.label(*v))
        .label_style((FAMILY, 14).into_font())
        .axis_desc_style((FAMILY, 15).into_font())
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    for s in &l.series {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (l.y_axis != Axis::Log || *y > 0.0))
            .map(|&(x, y)| (l.x_axis.to(x), l.y_axis.to(y)))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let style = ShapeStyle::from(&s.color).stroke_width(2);
        let color = s.color;
        let anno = match s.stroke {
            Stroke::Solid => chart
                .draw_series(LineSeries::new(pts.clone(), style))
                .map_err(err)?,
            Stroke::Dashed => chart
                .draw_series(DashedLineSeries::new(pts.clone(), 8, 5, style))
                .map_err(err)?,
            Stroke::Dotted => chart
                .draw_series(DashedLineSeries::new(pts.clone(), 2, 4, style))
                .map_err(err)?,
        };
        let stroke = s.stroke;
        anno.label(&s.name).legend(move |(x, y)| {
            let style = color.stroke_width(2);
            // The key is drawn as the line is: one stroke, two dashes, or four dots.
            let m: [(i32, i32); 4] = match stroke {
                Stroke::Solid => [(0, 5), (5, 10), (10, 15), (15, 20)],
                Stroke::Dashed => [(0, 4), (4, 8), (12, 16), (16, 20)],
                Stroke::Dotted => [(0, 2), (6, 8), (12, 14), (18, 20)],
            };
            EmptyElement::at((x, y))
                + PathElement::new(vec![(m[0].0, 0), (m[0].1, 0)], style)
                + PathElement::new(vec![(m[1].0, 0), (m[1].1, 0)], style)
                + PathElement::new(vec![(m[2].0, 0), (m[2].1, 0)], style)
                + PathElement::new(vec![(m[3].0, 0), (m[3].1, 0)], style)
        });
        if s.stroke == Stroke::Solid {
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(err)?;
        }
    }
    legend(&mut chart, SeriesLabelPosition::UpperLeft)
}

/// Draws the legend of the series labelled so far, the same way in every chart.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<Coord, Coord>>,
    at: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(at)
        .label_font((FAMILY, 13).into_font())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| e.to_string())
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, b: &Bars) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let n = b.categories.len().max(1);
    let top = b
        .sets
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0f64, |a, &v| a.max(v));
    // A legend of more than two rows (upper right) gets room of its own above the bars.
    let legend_rows = b.sets.iter().filter(|s| !s.name.is_empty()).count();
    let headroom = if legend_rows > 2 {
        1.12 + 0.09 * legend_rows as f64
    } else {
        1.12
    };
    let (ya, yb, yt) = Axis::Linear.layout(0.0, top * headroom);
    let x = Coord::new(-0.5, n as f64 - 0.5, (0..n).map(|i| i as f64).collect());
    let y = Coord::new(ya, yb, yt);
    let mut chart = ChartBuilder::on(area)
        .caption(&b.title, (FAMILY, 20).into_font())
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let cats = b.categories.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(&b.y_label)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                cats.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_label_formatter(&|v| axis_value(*v))
        .label_style((FAMILY, 14).into_font())
        .axis_desc_style((FAMILY, 15).into_font())
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()
        .map_err(err)?;
    let sets = b.sets.len().max(1) as f64;
    let width = 0.7 / sets;
    for (k, set) in b.sets.iter().enumerate() {
        for (i, v) in set.values.iter().enumerate() {
            let Some(v) = *v else { continue };
            let x0 = i as f64 - 0.35 + k as f64 * width;
            let color = set.colors.get(i).copied().unwrap_or(BLACK);
            let fill = if set.light {
                color.mix(0.45).filled()
            } else {
                color.filled()
            };
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x0, 0.0), (x0 + width * 0.92, v)],
                    fill,
                )))
                .map_err(err)?;
            let text = if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                crate::numfmt::fmt_value(v)
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (x0, v + (yb - ya) * 0.015),
                    (FAMILY, 12).into_font(),
                )))
                .map_err(err)?;
        }
    }
    for (i, note) in b.notes.iter().enumerate() {
        if note.is_empty() {
            continue;
        }
        chart
            .draw_series(std::iter::once(Text::new(
                note.clone(),
                (i as f64 - 0.35, yb - (yb - ya) * 0.04),
                (FAMILY, 14).into_font().color(&BLACK.mix(0.75)),
            )))
            .map_err(err)?;
    }
    let named: Vec<_> = b.sets.iter().filter(|s| !s.name.is_empty()).collect();
    if !named.is_empty() {
        for set in &named {
            let light = set.light;
            // A set of one colour shows it in the legend; a set coloured per category (by
            // technique) shows only light or dark.
            let one = set
                .colors
                .first()
                .filter(|c| set.colors.iter().all(|d| d == *c))
                .copied();
            chart
                .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
                .map_err(err)?
                .label(&set.name)
                .legend(move |(x, y)| {
                    let c = match (one, light) {
                        (Some(c), true) => c.mix(0.45),
                        (Some(c), false) => c.mix(1.0),
                        (None, true) => BLACK.mix(0.35),
                        (None, false) => BLACK.mix(0.8),
                    };
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled())
                });
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

fn bounds(v: &[f64]) -> (f64, f64) {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_round_trip_and_tick_sensibly() {
        for a in [Axis::Linear, Axis::Log, Axis::Nines] {
            for v in [1.0, 50.0, 99.0] {
                assert!((a.from(a.to(v)) - v).abs() < 1e-6, "{a:?} {v}");
            }
        }
        let (_, _, t) = Axis::Log.layout(3.0, 20_000.0);
        let labels: Vec<_> = t.iter().map(|&x| Axis::Log.label(x)).collect();
        assert_eq!(labels, ["1", "10", "100", "1000", "10k", "100k"]);
        let (_, _, t) = Axis::Nines.layout(0.0, 100.0);
        let labels: Vec<_> = t.iter().map(|&x| Axis::Nines.label(x)).collect();
        assert_eq!(labels, ["0%", "50%", "90%", "99%", "99.9%", "99.99%"]);
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(130.0), 200.0);
    }

    #[test]
    fn renders_svg_and_png() {
        let dir = std::env::temp_dir().join(format!("pushbench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fig = Figure {
            name: "t".into(),
            title: "Test".into(),
            columns: 2,
            panels: vec![
                Panel::Lines(Lines {
                    title: "lines".into(),
                    x_label: "x".into(),
                    y_label: "y".into(),
                    x_axis: Axis::Log,
                    y_axis: Axis::Linear,
                    series: vec![Series {
                        name: "a".into(),
                        color: RED,
                        stroke: Stroke::Solid,
                        points: vec![(1.0, 1.0), (100.0, 3.0)],
                    }],
                }),
                Panel::Bars(Bars {
                    title: "bars".into(),
                    y_label: "y".into(),
                    categories: vec!["a".into(), "b".into()],
                    sets: vec![BarSet {
                        name: String::new(),
                        values: vec![Some(1.0), None],
                        colors: vec![RED, BLUE],
                        light: false,
                    }],
                    notes: vec!["≥".into(), String::new()],
                }),
            ],
        };
        fig.render(&dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("lines") && svg.contains("\na\n"));
        let png = std::fs::read(dir.join("t.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The demo's figures, as PNGs (plotters): loss against wall time, or against bytes
//! sent, for each run, and a straggler sweep's time and bytes to the target against the
//! straggler's factor.
//!
//! Text needs a TrueType font; plotters' `ab_glyph` backend is given the first of a few
//! common system fonts (`scripts/setup` installs DejaVu on Debian).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::demo::{Run, SweepPoint};

/// Okabe–Ito: told apart with any colour vision.
const COLOURS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
];

/// Where fonts are looked for.
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

fn load_font() -> Result<(), String> {
    let path = FONTS
        .iter()
        .find(|p| Path::new(p).exists())
        .ok_or("no TrueType font found for the plot's text (install fonts-dejavu-core)")?;
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    // plotters keeps fonts for the life of the program.
    register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| format!("{path}: not a usable font"))
}

/// What the loss is drawn against: where a curve crosses the target line reads as the
/// time, or the bytes, to the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Axis {
    /// Wall time in seconds.
    Time,
    /// Megabytes each worker had sent (the mean over workers).
    Bytes,
}

impl Axis {
    /// `run`'s loss curve against this axis.
    fn curve(self, run: &Run) -> Vec<(f64, f64)> {
        match self {
            Axis::Time => run.curve.clone(),
            Axis::Bytes => run
                .bytes_curve
                .iter()
                .zip(&run.curve)
                .map(|(b, p)| (b / 1e6, p.1))
                .collect(),
        }
    }

    fn description(self) -> &'static str {
        match self {
            Axis::Time => "wall time (s)",
            Axis::Bytes => "MB sent per worker",
        }
    }
}

/// Draws the loss curves of `runs` against `axis` into `path`, with the target loss as
/// a dashed line.
pub fn loss_curves(runs: &[Run], target: f64, title: &str, axis: Axis, path: &Path) -> Result<(), String> {
    load_font()?;
    let draw = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let curves: Vec<Vec<(f64, f64)>> = runs.iter().map(|r| axis.curve(r)).collect();
    let t_max = curves.iter().flatten().map(|p| p.0).fold(1e-3, f64::max);
    let losses = runs.iter().flat_map(|r| r.curve.iter().map(|p| p.1));
    let (lo, hi) = losses.fold((f64::MAX, f64::MIN), |(lo, hi), l| (lo.min(l), hi.max(l)));
    let (lo, hi) = if lo < hi { (lo, hi) } else { (0.0, 1.0) };
    let pad = 0.05 * (hi - lo);
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..t_max * 1.02, (lo - pad)..(hi + pad))
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc(axis.description())
        .y_desc("test loss (mean over workers)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw(&e))?;
    for ((r, curve), colour) in runs.iter().zip(&curves).zip(COLOURS.iter().cycle()) {
        let style = ShapeStyle::from(colour).stroke_width(2);
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), style))
            .map_err(|e| draw(&e))?
            .label(format!("{} ({})", r.label(), r.topology))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    let dashes = (0..40).map(|i| {
        let (a, b) = (t_max * f64::from(i) / 40.0, t_max * (f64::from(i) + 0.5) / 40.0);
        PathElement::new(vec![(a, target), (b, target)], BLACK.mix(0.5))
    });
    chart.draw_series(dashes).map_err(|e| draw(&e))?;
    legend_and_write(&mut chart, &root, SeriesLabelPosition::UpperRight).map_err(|e| draw(&e))
}

/// Draws the series' legend in the corner `at`, then writes the file.
fn legend_and_write<'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, CT>,
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    at: SeriesLabelPosition,
) -> Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(at)
        .draw()?;
    root.present()
}

/// Draws `y` of every run of a sweep against the straggler factor (log scale) into
/// `path`, a line per kind of run (its label); a run without a value (the target not
/// reached) leaves its point out.
pub fn sweep(
    points: &[SweepPoint],
    y: impl Fn(&Run) -> Option<f64>,
    y_desc: &str,
    title: &str,
    path: &Path,
) -> Result<(), String> {
    load_font()?;
    let draw = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let mut labels: Vec<String> = Vec::new();
    for p in points {
        if !labels.contains(&p.run.label()) {
            labels.push(p.run.label());
        }
    }
    let values: Vec<(f64, f64)> = points.iter().filter_map(|p| Some((p.factor, y(&p.run)?))).collect();
    let (x_lo, x_hi) = values
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v.0), hi.max(v.0)));
    let y_hi = values.iter().map(|v| v.1).fold(0.0, f64::max);
    let (x_lo, x_hi, y_hi) = if values.is_empty() {
        (1.0, 8.0, 1.0)
    } else {
        (x_lo / 1.2, x_hi * 1.2, y_hi.max(1e-9) * 1.1)
    };
    let root = BitMapBackend::new(path, (800, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d((x_lo..x_hi).log_scale(), 0.0..y_hi)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .x_desc("one worker slower by (log scale)")
        .x_label_formatter(&|x| format!("{x:.0}x"))
        .y_desc(y_desc)
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw(&e))?;
    for (label, colour) in labels.iter().zip(COLOURS.iter().cycle()) {
        let style = ShapeStyle::from(colour).stroke_width(2);
        let line: Vec<(f64, f64)> = points
            .iter()
            .filter(|p| p.run.label() == *label)
            .filter_map(|p| Some((p.factor, y(&p.run)?)))
            .collect();
        chart
            .draw_series(line.iter().map(|&at| Circle::new(at, 4, style.filled())))
            .map_err(|e| draw(&e))?;
        chart
            .draw_series(LineSeries::new(line.iter().copied(), style))
            .map_err(|e| draw(&e))?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    legend_and_write(&mut chart, &root, SeriesLabelPosition::UpperLeft).map_err(|e| draw(&e))
}

//! The demo's figure: loss against wall time for each run, as a PNG (plotters).
//!
//! Text needs a TrueType font; plotters' `ab_glyph` backend is given the first of a few
//! common system fonts (`scripts/setup` installs DejaVu on Debian).

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::demo::Run;

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

/// Draws the loss curves of `runs` into `path`, with the target loss as a dashed line.
pub fn loss_curves(runs: &[Run], target: f64, title: &str, path: &Path) -> Result<(), String> {
    load_font()?;
    let draw = |e: &dyn std::fmt::Display| format!("plot {}: {e}", path.display());
    let t_max = runs
        .iter()
        .flat_map(|r| r.curve.iter().map(|p| p.0))
        .fold(1e-3, f64::max);
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
        .x_desc("wall time (s)")
        .y_desc("test loss (mean over workers)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|e| draw(&e))?;
    // Okabe–Ito: told apart with any colour vision.
    let colours = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
    ];
    for (r, colour) in runs.iter().zip(colours.iter().cycle()) {
        let style = ShapeStyle::from(colour).stroke_width(2);
        chart
            .draw_series(LineSeries::new(r.curve.iter().copied(), style))
            .map_err(|e| draw(&e))?
            .label(format!("{} ({})", r.label(), r.topology))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    let dashes = (0..40).map(|i| {
        let (a, b) = (t_max * f64::from(i) / 40.0, t_max * (f64::from(i) + 0.5) / 40.0);
        PathElement::new(vec![(a, target), (b, target)], BLACK.mix(0.5))
    });
    chart.draw_series(dashes).map_err(|e| draw(&e))?;
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))?;
    Ok(())
}

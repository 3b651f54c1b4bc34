//! PNG charts (plotters, bitmap backend, with an embedded DejaVu Sans so no system font is
//! needed): per-subset accuracy by method, and training curves with the forgetting metric.

use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::report::Report;

const FONT: &str = "sans-serif";
const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .map_err(|_| "the embedded chart font did not load".to_string());
    });
    result
}

fn err(path: &Path) -> impl Fn(String) -> String + '_ {
    move |e| format!("{}: chart: {e}", path.display())
}

type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draw the legend and write the file.
fn finish<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    root: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    e: &impl Fn(String) -> String,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    root.present().map_err(|x| e(x.to_string()))
}

/// Grouped bars: accuracy (%) of each method on each subset, and the mean.
pub fn accuracy_chart(report: &Report, title: &str, path: &Path) -> Result<(), String> {
    register_font()?;
    let e = err(path);
    let methods = report.methods();
    let mut subsets: Vec<String> = Vec::new();
    for r in &report.rows {
        if !subsets.contains(&r.subset) {
            subsets.push(r.subset.clone());
        }
    }
    subsets.push("mean".into());
    let value = |method: &str, subset: &str| -> Option<f64> {
        if subset == "mean" {
            return report.mean(method).map(|m| 100.0 * m.accuracy);
        }
        report
            .rows
            .iter()
            .find(|r| r.method == method && r.subset == subset)
            .map(|r| 100.0 * r.metrics.accuracy)
    };
    let root =
        BitMapBackend::new(path, (160 + 170 * subsets.len() as u32, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let n = subsets.len();
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..n as f64, 0f64..100f64)
        .map_err(|x| e(x.to_string()))?;
    let labels = subsets.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            match (x - x.floor() - 0.5).abs() < 1e-6 && i < labels.len() {
                true => labels[i].clone(),
                false => String::new(),
            }
        })
        .y_desc("accuracy (%)")
        .label_style((FONT, 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    let width = 0.8 / methods.len().max(1) as f64;
    for (mi, method) in methods.iter().enumerate() {
        let colour = PALETTE[mi % PALETTE.len()];
        let bars: Vec<Rectangle<(f64, f64)>> = subsets
            .iter()
            .enumerate()
            .filter_map(|(si, s)| {
                let v = value(method, s)?;
                let x0 = si as f64 + 0.1 + mi as f64 * width;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width, v)],
                    colour.filled(),
                ))
            })
            .collect();
        let name = if method.is_empty() {
            "model"
        } else {
            method.as_str()
        };
        chart
            .draw_series(bars)
            .map_err(|x| e(x.to_string()))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    }
    finish(&mut chart, &root, &e)
}

/// Training curves: one line per named series of `(x, y)` points (e.g. loss per step for each
/// method, forgetting per epoch), all on one chart.
pub fn training_chart(
    series: &[(String, Vec<(f64, f64)>)],
    title: &str,
    x_desc: &str,
    path: &Path,
) -> Result<(), String> {
    register_font()?;
    let e = err(path);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_max, mut y_min, mut y_max) = (1.0f64, f64::INFINITY, f64::NEG_INFINITY);
    for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        x_max = x_max.max(x);
        y_min = y_min.min(y);
        y_max = y_max.max(y);
    }
    if !y_min.is_finite() {
        (y_min, y_max) = (0.0, 1.0);
    }
    let pad = ((y_max - y_min) * 0.05).max(1e-3);
    let root = BitMapBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, (y_min - pad)..(y_max + pad))
        .map_err(|x| e(x.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .label_style((FONT, 14))
        .draw()
        .map_err(|x| e(x.to_string()))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))
            .map_err(|x| e(x.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2)));
    }
    finish(&mut chart, &root, &e)
}

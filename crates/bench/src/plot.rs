//! The ratios as a PNG bar chart.
//!
//! Text is drawn with plotters' pure-Rust `ab_glyph` rasteriser from DejaVu Sans, read at run
//! time (Debian's `fonts-dejavu-core`, which `scripts/bench` installs when missing), so the
//! build needs no fontconfig or freetype development packages.

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::{Ratio, Target};

const FONT_PATHS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

fn load_font() -> Result<(), String> {
    let bytes = FONT_PATHS
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .ok_or("DejaVuSans.ttf not found (apt-get install fonts-dejavu-core)")?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| "DejaVuSans.ttf is not a usable font".to_string())
}

/// Draws one horizontal bar per ratio (ours / baseline), with 1.0 and each target marked.
///
/// # Errors
///
/// When the font is missing or the PNG cannot be written.
pub fn ratios(path: &str, ratios: &[Ratio], caption: &str) -> Result<(), String> {
    load_font()?;
    let n = ratios.len() as i32;
    let xmax = ratios
        .iter()
        .map(|r| r.ratio)
        .chain(ratios.iter().filter_map(|r| match r.target {
            Some(Target::AtMost(t) | Target::AtLeast(t)) => Some(t),
            None => None,
        }))
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let height = 120 + 44 * ratios.len() as u32;
    let root = BitMapBackend::new(path, (1400, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("pylock / baseline ratios: {caption}"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(560)
        .build_cartesian_2d(0f64..xmax, (0..n).into_segmented())
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(ratios.len())
        .y_label_formatter(&|v| match v {
            // Bars are drawn top down: the first ratio sits at the highest segment.
            SegmentValue::CenterOf(i) => usize::try_from(n - 1 - *i)
                .ok()
                .and_then(|i| ratios.get(i))
                .map(|r| r.label.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_style(("sans-serif", 15))
        .x_desc("ratio (pylock / baseline); thin line: 1.0; thick tick: target")
        .x_label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| err(&e))?;
    let green = RGBColor(46, 139, 87);
    let red = RGBColor(200, 55, 45);
    let grey = RGBColor(120, 130, 150);
    for (i, r) in ratios.iter().enumerate() {
        // The first ratio at the top.
        let i = n - 1 - i as i32;
        let color = match r.target {
            Some(t) if t.met(r.ratio) => green,
            Some(_) => red,
            None => grey,
        };
        let ratio = if r.ratio.is_finite() { r.ratio } else { 0.0 };
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (ratio, SegmentValue::Exact(i + 1)),
            ],
            color.mix(0.85).filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        chart
            .draw_series(std::iter::once(bar))
            .map_err(|e| err(&e))?;
        let label = match r.target {
            Some(t) => format!("{ratio:.2}×  (target {})", t.text()),
            None => format!("{ratio:.2}×"),
        };
        chart
            .draw_series(std::iter::once(Text::new(
                label,
                (ratio + xmax * 0.01, SegmentValue::CenterOf(i)),
                ("sans-serif", 15).into_font().color(&BLACK),
            )))
            .map_err(|e| err(&e))?;
        if let Some(Target::AtMost(t) | Target::AtLeast(t)) = r.target {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(t, SegmentValue::Exact(i)), (t, SegmentValue::Exact(i + 1))],
                    ShapeStyle::from(&BLACK).stroke_width(3),
                )))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(1.0, SegmentValue::Exact(0)), (1.0, SegmentValue::Exact(n))],
            ShapeStyle::from(&BLACK).stroke_width(1),
        )))
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

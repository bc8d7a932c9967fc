//! Line charts as SVG (plotters; text is left to the viewer, so no fonts needed).

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;

/// One line of a chart.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// Colours by series position (the same system keeps its colour across charts
/// when the callers pass systems in the same order).
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_y: bool,
    /// Vertical markers (e.g. the moment of a kill) at these x values.
    pub marks: &'a [f64],
}

/// Draws `series` into an SVG at `path`.
pub fn line_chart(path: &Path, chart: &Chart, series: &[Series]) -> anyhow::Result<()> {
    let pts = || series.iter().flat_map(|s| s.points.iter());
    if pts().next().is_none() {
        return Ok(());
    }
    let x_max = pts().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let x_min = pts().map(|p| p.0).fold(f64::MAX, f64::min).min(x_max);
    let y_max = pts().map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(chart.title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! draw {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_desc(chart.x_label)
                .y_desc(chart.y_label)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
            for (i, s) in series.iter().enumerate() {
                let colour = COLOURS[i % COLOURS.len()];
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .map(|&(x, y)| (x, if chart.log_y { y.max(1e-3) } else { y }))
                    .collect();
                ctx.draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                    .map_err(|e| anyhow!("{e}"))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                if points.len() <= 12 {
                    ctx.draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))
                        .map_err(|e| anyhow!("{e}"))?;
                }
            }
            for &m in chart.marks {
                let (lo, hi) = if chart.log_y {
                    (1e-3, y_max)
                } else {
                    (0.0, y_max)
                };
                ctx.draw_series(LineSeries::new(
                    vec![(m, lo), (m, hi)],
                    BLACK.stroke_width(1),
                ))
                .map_err(|e| anyhow!("{e}"))?;
            }
            ctx.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| anyhow!("{e}"))?;
        }};
    }
    if chart.log_y {
        let y_min = pts()
            .map(|p| p.1)
            .filter(|y| *y > 0.0)
            .fold(f64::MAX, f64::min)
            .min(y_max)
            * 0.8;
        draw!(builder
            .build_cartesian_2d(x_min..x_max, (y_min.max(1e-3)..y_max).log_scale())
            .map_err(|e| anyhow!("{e}"))?);
    } else {
        draw!(builder
            .build_cartesian_2d(x_min..x_max, 0.0..y_max)
            .map_err(|e| anyhow!("{e}"))?);
    }
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_an_svg_with_every_series_and_its_label() {
        let dir = std::env::temp_dir().join(format!("bo-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.svg");
        let series = vec![
            Series {
                label: "alpha".into(),
                points: vec![(0.0, 1.0), (1.0, 10.0), (2.0, 100.0)],
            },
            Series {
                label: "beta".into(),
                points: vec![(0.0, 5.0), (2.0, 7.0)],
            },
        ];
        for log_y in [false, true] {
            let chart = Chart {
                title: "t",
                x_label: "x",
                y_label: "y",
                log_y,
                marks: &[1.0],
            };
            line_chart(&path, &chart, &series).unwrap();
            let svg = std::fs::read_to_string(&path).unwrap();
            assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
            assert!(svg.contains("alpha") && svg.contains("beta"));
            assert!(
                svg.matches("<polyline").count() >= 3,
                "two series and a mark"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

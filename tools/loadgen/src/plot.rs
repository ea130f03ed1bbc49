//! Saga latency over time as a PNG: p50 (blue) and p99 (red) per second of
//! scheduled send time, with plotters' bitmap backend. Text needs a TrueType
//! font, loaded at run time (plotters' `ab_glyph` renderer, no system font
//! library); without one the chart is drawn with grid lines only.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use crate::stats::TimelinePoint;

/// Fonts tried when none is given (Debian's fonts-dejavu-core, fonts-liberation).
const FONT_CANDIDATES: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

const FONT_NAME: &str = "loadgen-sans";

/// Registers a font for the labels; `false` when none could be loaded.
pub fn load_font(path: Option<&Path>) -> bool {
    let candidates: Vec<PathBuf> = match path {
        Some(path) => vec![path.to_owned()],
        None => FONT_CANDIDATES.iter().map(PathBuf::from).collect(),
    };
    for candidate in candidates {
        if let Ok(bytes) = std::fs::read(&candidate) {
            // Registered once per process; plotters keeps a 'static reference.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT_NAME, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// What was drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    pub labels: bool,
    pub points: usize,
}

/// Draws `points` to `path` (PNG). `labels` says whether a font was loaded.
pub fn draw(
    path: &Path,
    title: &str,
    points: &[TimelinePoint],
    labels: bool,
) -> anyhow::Result<Drawn> {
    let ended: Vec<&TimelinePoint> = points.iter().filter(|p| p.p99_ms > 0.0).collect();
    // The send window: the seconds that scheduled orders (completions may run later).
    let seconds = points
        .iter()
        .rposition(|p| p.scheduled > 0)
        .map_or(points.len(), |last| last + 1)
        .max(1) as f64;
    let top = ended.iter().map(|p| p.p99_ms).fold(1.0_f64, f64::max) * 1.1;

    let root = BitMapBackend::new(path, (1200, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if labels {
        builder
            .caption(title, (FONT_NAME, 22))
            .x_label_area_size(45)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(5).y_label_area_size(5);
    }
    let mut chart = builder.build_cartesian_2d(0.0..seconds, 0.0..top)?;
    {
        let mut mesh = chart.configure_mesh();
        if labels {
            mesh.x_desc("seconds since start (by scheduled send time)")
                .y_desc("saga latency, ms (blue p50, red p99)")
                .label_style((FONT_NAME, 15))
                .axis_desc_style((FONT_NAME, 16))
                .x_label_formatter(&|v| format!("{v:.0}"))
                .y_label_formatter(&|v| format!("{v:.0}"));
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw()?;
    }
    chart.draw_series(LineSeries::new(
        ended.iter().map(|p| (p.second as f64 + 0.5, p.p50_ms)),
        BLUE.stroke_width(2),
    ))?;
    chart.draw_series(LineSeries::new(
        ended.iter().map(|p| (p.second as f64 + 0.5, p.p99_ms)),
        RED.stroke_width(2),
    ))?;
    root.present()?;
    Ok(Drawn {
        labels,
        points: ended.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn points() -> Vec<TimelinePoint> {
        (0..30)
            .map(|s| TimelinePoint {
                second: s,
                scheduled: 50,
                completed: 50,
                p50_ms: 10.0 + s as f64,
                p99_ms: 40.0 + 2.0 * s as f64,
                max_ms: 90.0,
            })
            .collect()
    }

    #[test]
    fn a_plot_without_a_font_is_still_a_png() {
        let dir = std::env::temp_dir().join(format!("loadgen-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("nofont.png");
        let drawn = draw(&path, "t", &points(), false).expect("drawn");
        assert_eq!(drawn.points, 30);
        let bytes = std::fs::read(&path).expect("written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_plot_with_a_font_has_labels_when_one_is_installed() {
        if !load_font(None) {
            // No font on this machine: the label path cannot be exercised.
            return;
        }
        let dir = std::env::temp_dir().join(format!("loadgen-plot-font-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("font.png");
        let drawn = draw(&path, "saga latency", &points(), true).expect("drawn");
        assert!(drawn.labels);
        assert!(std::fs::metadata(&path).expect("written").len() > 1000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

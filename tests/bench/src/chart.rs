//! Line charts (y against a log-scaled count of existing objects), drawn as SVG and PNG.

use std::path::Path;

use anyhow::{anyhow, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

/// Where the bench script installs a font (Debian's fonts-dejavu-core); text needs one.
const FONTS: [&str; 2] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// File name without extension: `<stem>.svg` and `<stem>.png` are written.
    pub file_stem: String,
    pub title: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
}

/// Registers the font the charts use; call once before drawing.
pub fn load_font() -> Result<()> {
    let path = FONTS.iter().find(|p| Path::new(p).is_file()).ok_or_else(|| {
        anyhow!("no font for the charts (looked for {}): apt-get install fonts-dejavu-core", FONTS.join(", "))
    })?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {path}"))?;
    plotters::style::register_font("sans-serif", FontStyle::Normal, Box::leak(bytes.into_boxed_slice()))
        .map_err(|_| anyhow!("{path} is not a usable font"))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(0, 0, 0),
    RGBColor(227, 119, 194),
];

impl Chart {
    /// Writes `<dir>/<stem>.svg` and `<dir>/<stem>.png`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let svg = dir.join(format!("{}.svg", self.file_stem));
        self.draw(SVGBackend::new(&svg, (900, 560)).into_drawing_area())
            .with_context(|| format!("drawing {}", svg.display()))?;
        let png = dir.join(format!("{}.png", self.file_stem));
        self.draw(BitMapBackend::new(&png, (900, 560)).into_drawing_area())
            .with_context(|| format!("drawing {}", png.display()))
    }

    fn bounds(&self) -> (f64, f64, f64) {
        let points = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x_min, mut x_max, mut y_max) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
            x_min = x_min.min(x);
            x_max = x_max.max(x);
            y_max = y_max.max(y);
        }
        if x_min > x_max {
            return (1.0, 10.0, 1.0);
        }
        (x_min.max(1.0), x_max.max(x_min * 10.0).max(1.0), if y_max > 0.0 { y_max * 1.15 } else { 1.0 })
    }

    fn draw<DB: DrawingBackend>(&self, root: DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let err = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("{e}");
        root.fill(&WHITE).map_err(err)?;
        let (x_min, x_max, y_max) = self.bounds();
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d((x_min..x_max).log_scale(), 0f64..y_max)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_desc)
            .y_desc(&self.y_desc)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| crate::stats::fmt_num(*y))
            .draw()
            .map_err(err)?;
        for (i, series) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> =
                series.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_svg_and_png() {
        load_font().unwrap();
        let dir = std::env::temp_dir().join(format!("netloom-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let chart = Chart {
            file_stem: "t".into(),
            title: "op latency".into(),
            x_desc: "existing endpoints".into(),
            y_desc: "p99 ms".into(),
            series: vec![
                Series { name: "a".into(), points: vec![(10.0, 1.0), (100.0, 1.1), (1000.0, 1.2)] },
                Series { name: "b".into(), points: vec![(10.0, 5.0), (100.0, f64::NAN), (1000.0, 20.0)] },
            ],
        };
        chart.write(&dir).unwrap();
        let svg = std::fs::read_to_string(dir.join("t.svg")).unwrap();
        assert!(svg.contains("op latency") && svg.contains("existing endpoints"), "{svg}");
        let png = std::fs::read(dir.join("t.png")).unwrap();
        assert_eq!(&png[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bounds_cover_every_finite_point() {
        let chart = Chart {
            file_stem: "b".into(),
            title: String::new(),
            x_desc: String::new(),
            y_desc: String::new(),
            series: vec![Series { name: "a".into(), points: vec![(10.0, 2.0), (1000.0, f64::INFINITY), (500.0, 4.0)] }],
        };
        let (x_min, x_max, y_max) = chart.bounds();
        assert_eq!((x_min, x_max), (10.0, 500.0));
        assert!((4.0..5.0).contains(&y_max));
    }
}

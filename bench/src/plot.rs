//! SVG bar charts: one file per scenario, one panel per unit, a pair of horizontal bars
//! per metric (candidate above, its same-round baseline below), with min-max whiskers
//! over the rounds.

use std::path::Path;

use anyhow::Context as _;
use plotters::{
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::report::{Stat, fmt_num};

/// One metric's bars.
pub struct Bar {
    pub label: String,
    pub value: Stat,
    pub baseline: Option<(String, Stat)>,
}

/// Bars sharing a unit (one x axis).
pub struct Panel {
    pub unit: String,
    pub bars: Vec<Bar>,
}

const WIDTH: u32 = 1000;
const ROW: u32 = 44;
/// Caption, axis and margins of a panel.
const PANEL_EXTRA: u32 = 80;
/// Room left of the plot for the metric names.
const LABEL_W: u32 = 300;
const CANDIDATE: RGBColor = RGBColor(31, 119, 180);
const BASELINE: RGBColor = RGBColor(170, 170, 170);

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the plot: {e:?}")
}

/// Writes `path`.
pub fn draw(path: &Path, title: &str, panels: &[Panel]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let heights: Vec<u32> = panels
        .iter()
        .map(|p| PANEL_EXTRA + ROW * p.bars.len() as u32)
        .collect();
    let total = 50 + heights.iter().sum::<u32>();
    let root = SVGBackend::new(path, (WIDTH, total)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut rest = root.titled(title, ("sans-serif", 20)).map_err(err)?;
    for (p, h) in panels.iter().zip(&heights) {
        let (area, below) = rest.split_vertically(*h);
        panel(&root, &area, p)?;
        rest = below;
    }
    root.present().map_err(err)?;
    Ok(())
}

fn panel<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    area: &DrawingArea<DB, plotters::coord::Shift>,
    p: &Panel,
) -> anyhow::Result<()> {
    let n = p.bars.len();
    let top = p
        .bars
        .iter()
        .flat_map(|b| [Some(b.value.max), b.baseline.as_ref().map(|(_, s)| s.max)])
        .flatten()
        .fold(0.0f64, f64::max);
    // Room right of the longest bar for its number and baseline name.
    let xmax = if top > 0.0 { top * 1.6 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .margin_left(LABEL_W)
        .x_label_area_size(30)
        .caption(&p.unit, ("sans-serif", 15))
        .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(p.unit.as_str())
        .draw()
        .map_err(err)?;
    let small =
        TextStyle::from(("sans-serif", 11).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let label =
        TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let y = |i: usize| (n - 1 - i) as f64;
    let nudge = xmax * 0.006;

    chart
        .draw_series(p.bars.iter().enumerate().map(|(i, b)| {
            Rectangle::new(
                [(0.0, y(i) + 0.52), (b.value.median, y(i) + 0.9)],
                CANDIDATE.filled(),
            )
        }))
        .map_err(err)?
        .label("candidate (median of rounds)")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], CANDIDATE.filled()));
    chart
        .draw_series(p.bars.iter().enumerate().filter_map(|(i, b)| {
            let (_, s) = b.baseline.as_ref()?;
            Some(Rectangle::new(
                [(0.0, y(i) + 0.1), (s.median, y(i) + 0.48)],
                BASELINE.filled(),
            ))
        }))
        .map_err(err)?
        .label("baseline, same round")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BASELINE.filled()));
    for (i, b) in p.bars.iter().enumerate() {
        let mut whisker = |s: &Stat, yc: f64| -> anyhow::Result<()> {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(s.min, yc), (s.max, yc)],
                    BLACK.stroke_width(1),
                )))
                .map_err(err)?;
            Ok(())
        };
        whisker(&b.value, y(i) + 0.71)?;
        if let Some((_, s)) = &b.baseline {
            whisker(s, y(i) + 0.29)?;
        }
        let mut texts = vec![Text::new(
            fmt_num(b.value.median),
            (b.value.max.max(b.value.median) + nudge, y(i) + 0.71),
            small.clone(),
        )];
        if let Some((name, s)) = &b.baseline {
            texts.push(Text::new(
                format!("{} {name}", fmt_num(s.median)),
                (s.max.max(s.median) + nudge, y(i) + 0.29),
                small.clone(),
            ));
        }
        chart.draw_series(texts).map_err(err)?;
        let (px, py) = chart.backend_coord(&(0.0, y(i) + 0.5));
        root.draw(&Text::new(b.label.clone(), (px - 8, py), label.clone()))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 11))
        .draw()
        .map_err(err)?;
    Ok(())
}

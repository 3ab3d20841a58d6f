//! PNG charts of job results, drawn with plotters on an in-memory bitmap and
//! encoded with `png`: a backtest's equity with its drawdown below, its
//! drawdown alone, its monthly returns as a heatmap and its daily return
//! histogram; a Monte Carlo study's fan of equity percentiles and the
//! histogram of its scenarios' total returns.
//!
//! Owns: the chart names and the kinds they apply to, the size bounds, the
//! renderers and the reading of a Monte Carlo result's `fan`. Must not: read
//! the store or compute statistics (the service hands over the data, the
//! statistics are `jesse_mcp_core::analysis`'s).
//!
//! The same data and size always give the same bytes: nothing here reads a
//! clock, and text is drawn with an embedded font (a DejaVu Sans subset,
//! `assets/DejaVuSans-subset.ttf`; origin and license in
//! `assets/LICENSE-DejaVu.txt`) rather than whatever the host has installed.

use std::collections::BTreeMap;
use std::error::Error;
use std::ops::{Range, RangeInclusive};
use std::sync::OnceLock;

use chrono::DateTime;
use jesse_mcp_core::analysis::{DrawdownPeriod, EquityPoint, PeriodReturn, drawdown_series};
use jesse_mcp_core::time::DAY_MS;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

/// DejaVu Sans 2.37 (Basic Latin, Latin-1 and a few symbols); see assets/LICENSE-DejaVu.txt.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

pub const DEFAULT_WIDTH: u32 = 1000;
pub const DEFAULT_HEIGHT: u32 = 600;
pub const WIDTHS: RangeInclusive<u32> = 320..=2400;
pub const HEIGHTS: RangeInclusive<u32> = 240..=1600;

const BLUE_LINE: RGBColor = RGBColor(31, 119, 180);
pub const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub const RED_LINE: RGBColor = RGBColor(214, 39, 40);
const GREEN_CELL: RGBColor = RGBColor(44, 160, 44);
pub const GREY: RGBColor = RGBColor(127, 127, 127);
pub const DARK: RGBColor = RGBColor(40, 40, 40);

/// A chart a job may be drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chart {
    Equity,
    Drawdown,
    Monthly,
    Histogram,
    Fan,
}

impl Chart {
    pub const ALL: &[Chart] = &[
        Chart::Equity,
        Chart::Drawdown,
        Chart::Monthly,
        Chart::Histogram,
        Chart::Fan,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Chart::Equity => "equity",
            Chart::Drawdown => "drawdown",
            Chart::Monthly => "monthly",
            Chart::Histogram => "histogram",
            Chart::Fan => "fan",
        }
    }

    pub fn parse(name: &str) -> Option<Chart> {
        Chart::ALL.iter().copied().find(|c| c.name() == name)
    }

    /// The charts a job of `kind` can be drawn as.
    pub fn applicable(kind: &str) -> &'static [Chart] {
        match kind {
            "backtest" => &[
                Chart::Equity,
                Chart::Drawdown,
                Chart::Monthly,
                Chart::Histogram,
            ],
            "monte_carlo" => &[Chart::Fan, Chart::Histogram],
            _ => &[],
        }
    }
}

/// Pixels of a chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: u32,
    pub height: u32,
}

impl Default for Size {
    fn default() -> Self {
        Size {
            width: DEFAULT_WIDTH,
            height: DEFAULT_HEIGHT,
        }
    }
}

impl Size {
    /// Text and line sizes follow the image's size (1.0 at the default size).
    fn scale(self) -> f64 {
        (f64::from(self.width) / f64::from(DEFAULT_WIDTH))
            .min(f64::from(self.height) / f64::from(DEFAULT_HEIGHT))
            .clamp(0.45, 2.4)
    }

    fn px(self, base: f64) -> u32 {
        (base * self.scale()).round().max(1.0) as u32
    }

    /// How many x labels fit without overlapping dates.
    fn x_labels(self) -> usize {
        (self.width as usize / 140).clamp(3, 12)
    }
}

type DrawResult = Result<(), Box<dyn Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

fn register_font() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        // The bytes are checked in and parse; a failure would show as text-less charts in tests.
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            tracing::error!("the embedded chart font does not parse");
        }
    });
}

fn font(size: Size, points: f64) -> TextStyle<'static> {
    TextStyle::from((FAMILY, (points * size.scale()).max(7.0)).into_font()).color(&DARK)
}

/// Draws on a white bitmap of `size` and encodes it as PNG.
fn render(size: Size, draw: impl FnOnce(Area<'_>) -> DrawResult) -> Result<Vec<u8>, String> {
    register_font();
    let (w, h) = (size.width, size.height);
    let mut buffer = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        draw(root.clone()).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    encode_png(&buffer, w, h).map_err(|e| e.to_string())
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

/// The area below a title, with room above it.
/// A title longer than the image is narrowed (down to 9 px) rather than cut.
fn titled<'a>(root: Area<'a>, title: &str, size: Size) -> Result<Area<'a>, Box<dyn Error>> {
    let root = root.margin(size.px(10.0), 0, 0, 0);
    let mut style = font(size, 22.0);
    let (text_width, _) = root.estimate_text_size(title, &style)?;
    let room = f64::from(size.width) * 0.96;
    if f64::from(text_width) > room {
        let points = (22.0 * size.scale() * room / f64::from(text_width)).max(9.0);
        style = TextStyle::from((FAMILY, points).into_font()).color(&DARK);
    }
    Ok(root.titled(title, style)?)
}

/// Days since the epoch, the x coordinate of dated charts.
fn days(time_ms: i64) -> f64 {
    time_ms as f64 / DAY_MS as f64
}

fn date_label(x: f64, span_days: f64) -> String {
    let ms = (x * DAY_MS as f64).round() as i64;
    let format = if span_days > 730.0 {
        "%Y-%m"
    } else {
        "%Y-%m-%d"
    };
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format(format).to_string())
        .unwrap_or_default()
}

/// A range around `lo..hi` with `pad` of its span on each side (never empty).
fn padded(lo: f64, hi: f64, pad: f64) -> Range<f64> {
    let (lo, hi) = if lo.is_finite() && hi.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let span = (hi - lo).abs();
    let margin = if span > 0.0 {
        span * pad
    } else {
        lo.abs().max(1.0) * 0.05
    };
    lo - margin..hi + margin
}

fn min_max(values: impl IntoIterator<Item = f64>) -> (f64, f64) {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        })
}

/// Decimals that tell apart labels `step` apart (0 to 6).
fn decimals(step: f64) -> usize {
    if step.is_finite() && step > 0.0 {
        (-step.log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        1
    }
}

fn percent_label(v: &f64) -> String {
    format!("{v:.1}")
}

fn money_label(v: &f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// Equity over time with the running peak, and the drawdown in a panel below.
pub fn equity(
    curve: &[EquityPoint],
    title: &str,
    currency: &str,
    size: Size,
) -> Result<Vec<u8>, String> {
    let xs: Vec<f64> = curve.iter().map(|p| days(p.time_ms)).collect();
    let values: Vec<f64> = curve.iter().map(|p| p.value).collect();
    let drawdown = drawdown_series(&values);
    let x_range = padded(xs[0], xs[xs.len() - 1], 0.0);
    let span = x_range.end - x_range.start;
    let mut peak = f64::NEG_INFINITY;
    let peaks: Vec<f64> = values
        .iter()
        .map(|v| {
            peak = peak.max(*v);
            peak
        })
        .collect();
    render(size, |root| {
        let root = titled(root, title, size)?;
        let (upper, lower) = root.split_vertically((root.dim_in_pixel().1 as f64 * 0.66) as u32);
        let x_fmt = |x: &f64| date_label(*x, span);
        let blank = |_: &f64| String::new();
        let (lo, hi) = min_max(values.iter().copied());
        let mut top = ChartBuilder::on(&upper)
            .margin_left(size.px(10.0))
            .margin_right(size.px(24.0))
            .margin_top(size.px(6.0))
            .x_label_area_size(size.px(6.0))
            .y_label_area_size(size.px(78.0))
            .build_cartesian_2d(x_range.clone(), padded(lo, hi, 0.05))?;
        top.configure_mesh()
            .x_labels(size.x_labels())
            .x_label_formatter(&blank)
            .y_label_formatter(&money_label)
            .y_desc(format!("Equity ({currency})"))
            .label_style(font(size, 13.0))
            .axis_desc_style(font(size, 14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        let stroke = size.px(2.0);
        top.draw_series(LineSeries::new(
            xs.iter().copied().zip(peaks.iter().copied()),
            GREY.mix(0.6).stroke_width(size.px(1.0)),
        ))?
        .label("Running peak")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], GREY.stroke_width(2)));
        top.draw_series(LineSeries::new(
            xs.iter().copied().zip(values.iter().copied()),
            BLUE_LINE.stroke_width(stroke),
        ))?
        .label("Equity")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE_LINE.stroke_width(3)));
        top.configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(font(size, 13.0))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;

        let (dd_lo, _) = min_max(drawdown.iter().copied());
        let mut bottom = ChartBuilder::on(&lower)
            .margin_left(size.px(10.0))
            .margin_right(size.px(24.0))
            .margin_bottom(size.px(6.0))
            .x_label_area_size(size.px(48.0))
            .y_label_area_size(size.px(78.0))
            .build_cartesian_2d(x_range, dd_lo.min(-0.5) * 1.08..0.0)?;
        bottom
            .configure_mesh()
            .x_labels(size.x_labels())
            .y_labels(5)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&percent_label)
            .x_desc("Date (UTC)")
            .y_desc("Drawdown (%)")
            .label_style(font(size, 13.0))
            .axis_desc_style(font(size, 14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        draw_underwater(&mut bottom, &xs, &drawdown, size)?;
        Ok(())
    })
}

fn draw_underwater<'a>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    xs: &[f64],
    drawdown: &[f64],
    size: Size,
) -> DrawResult {
    let mut outline: Vec<(f64, f64)> = xs.iter().copied().zip(drawdown.iter().copied()).collect();
    outline.push((xs[xs.len() - 1], 0.0));
    outline.push((xs[0], 0.0));
    chart.draw_series(std::iter::once(Polygon::new(
        outline,
        RED_LINE.mix(0.25).filled(),
    )))?;
    chart
        .draw_series(LineSeries::new(
            xs.iter().copied().zip(drawdown.iter().copied()),
            RED_LINE.stroke_width(size.px(1.5)),
        ))?
        .label("Drawdown")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED_LINE.stroke_width(3)));
    Ok(())
}

fn day_of(date: &str) -> Option<f64> {
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    Some(days(
        day.and_hms_opt(0, 0, 0)?.and_utc().timestamp_millis() + DAY_MS,
    ))
}

/// The drawdown from the running peak, with the worst periods shaded and numbered.
pub fn drawdown(
    curve: &[EquityPoint],
    worst: &[DrawdownPeriod],
    title: &str,
    size: Size,
) -> Result<Vec<u8>, String> {
    let xs: Vec<f64> = curve.iter().map(|p| days(p.time_ms)).collect();
    let values: Vec<f64> = curve.iter().map(|p| p.value).collect();
    let drawdown = drawdown_series(&values);
    let x_range = padded(xs[0], xs[xs.len() - 1], 0.0);
    let span = x_range.end - x_range.start;
    let last = xs[xs.len() - 1];
    render(size, |root| {
        let root = titled(root, title, size)?;
        let (dd_lo, _) = min_max(drawdown.iter().copied());
        let y_lo = dd_lo.min(-0.5) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(size.px(10.0))
            .margin_right(size.px(24.0))
            .margin_bottom(size.px(6.0))
            .x_label_area_size(size.px(48.0))
            .y_label_area_size(size.px(70.0))
            .build_cartesian_2d(x_range, y_lo..0.0)?;
        let x_fmt = |x: &f64| date_label(*x, span);
        chart
            .configure_mesh()
            .x_labels(size.x_labels())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&percent_label)
            .x_desc("Date (UTC)")
            .y_desc("Drawdown from the running peak (%)")
            .label_style(font(size, 13.0))
            .axis_desc_style(font(size, 14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        // The worst periods: shaded from the peak to the recovery (or the end).
        let spans: Vec<(usize, f64, f64, &DrawdownPeriod)> = worst
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                // A period's start and recovery are close days; samples are stamped
                // at the end of them (the next day's first minute).
                let start = day_of(&p.start)?;
                let end = p.recovery.as_deref().and_then(day_of).unwrap_or(last);
                Some((i, start, end, p))
            })
            .collect();
        if !spans.is_empty() {
            chart
                .draw_series(spans.iter().map(|(_, a, b, _)| {
                    Rectangle::new([(*a, y_lo), (*b, 0.0)], ORANGE.mix(0.12).filled())
                }))?
                .label(format!(
                    "The {} worst periods (peak to recovery)",
                    spans.len()
                ))
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 20, y + 5)], ORANGE.mix(0.3).filled())
                });
        }
        draw_underwater(&mut chart, &xs, &drawdown, size)?;
        for (i, _, _, p) in &spans {
            if let Some(x) = day_of(&p.trough) {
                let style = font(size, 12.0).pos(Pos::new(HPos::Center, VPos::Top));
                chart.draw_series(std::iter::once(Text::new(
                    format!("#{} {:.1}%", i + 1, p.depth_pct),
                    (x, p.depth_pct),
                    style,
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(font(size, 13.0))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// White to red (negative) or green (positive), saturated at ±`limit`.
fn heat(value: f64, limit: f64) -> RGBColor {
    let t = (value.abs() / limit).clamp(0.0, 1.0) * 0.85;
    let target = if value < 0.0 { RED_LINE } else { GREEN_CELL };
    let mix = |c: u8| (255.0 + (f64::from(c) - 255.0) * t).round() as u8;
    RGBColor(mix(target.0), mix(target.1), mix(target.2))
}

fn is_dark(c: RGBColor) -> bool {
    0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2) < 140.0
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Months × years of compounded returns, with each year's total in the last column.
pub fn monthly(
    months: &[PeriodReturn],
    years: &[PeriodReturn],
    title: &str,
    size: Size,
) -> Result<Vec<u8>, String> {
    let cells: BTreeMap<(i32, u32), f64> = months
        .iter()
        .filter_map(|m| Some(((m.year, m.month?), m.return_pct)))
        .collect();
    let totals: BTreeMap<i32, f64> = years.iter().map(|y| (y.year, y.return_pct)).collect();
    let rows: Vec<i32> = totals
        .keys()
        .copied()
        .chain(cells.keys().map(|(y, _)| *y))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let limit = cells.values().fold(0.0f64, |m, v| m.max(v.abs())).max(0.1);
    render(size, |root| {
        let root = titled(root, title, size)?;
        let (w, h) = root.dim_in_pixel();
        let (w, h) = (w as i32, h as i32);
        let left = size.px(70.0) as i32;
        let right = size.px(16.0) as i32;
        let header = size.px(46.0) as i32;
        let footer = size.px(64.0) as i32;
        let columns = 13;
        let cell_w = (w - left - right) / columns;
        let cell_h = ((h - header - footer) / rows.len().max(1) as i32)
            .min(size.px(72.0) as i32)
            .max(1);
        // The grid and its scale, centred vertically.
        let block = header + cell_h * rows.len() as i32 + footer;
        let root = root.shrink(
            (0, ((h - block) / 2).max(0)),
            (w as u32, block.min(h) as u32),
        );
        let centered = |points: f64| font(size, points).pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "Month",
            (left + cell_w * 6, size.px(10.0) as i32),
            centered(14.0),
        ))?;
        for (i, name) in MONTHS.iter().chain(std::iter::once(&"Year")).enumerate() {
            root.draw(&Text::new(
                *name,
                (
                    left + cell_w * i as i32 + cell_w / 2,
                    header - size.px(14.0) as i32,
                ),
                centered(13.0),
            ))?;
        }
        let rotated = font(size, 14.0)
            .transform(FontTransform::Rotate270)
            .pos(Pos::new(HPos::Center, VPos::Center));
        root.draw(&Text::new(
            "Year",
            (
                size.px(12.0) as i32,
                header + cell_h * rows.len() as i32 / 2,
            ),
            rotated,
        ))?;
        for (r, year) in rows.iter().enumerate() {
            let y0 = header + cell_h * r as i32;
            root.draw(&Text::new(
                year.to_string(),
                (left - size.px(26.0) as i32, y0 + cell_h / 2),
                centered(13.0),
            ))?;
            for column in 0..columns {
                let value = if column < 12 {
                    cells.get(&(*year, column as u32 + 1)).copied()
                } else {
                    totals.get(year).copied()
                };
                let x0 =
                    left + cell_w * column + if column == 12 { size.px(6.0) as i32 } else { 0 };
                let color = value.map_or(RGBColor(245, 245, 245), |v| heat(v, limit));
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w - 1, y0 + cell_h - 1)],
                    color.filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + cell_w - 1, y0 + cell_h - 1)],
                    WHITE.stroke_width(1),
                ))?;
                if let Some(v) = value {
                    let text = if is_dark(color) { WHITE } else { DARK };
                    root.draw(&Text::new(
                        format!("{v:+.1}"),
                        (x0 + cell_w / 2, y0 + cell_h / 2),
                        centered(if column == 12 { 13.0 } else { 12.0 }).color(&text),
                    ))?;
                }
            }
        }
        // The color scale.
        let bar_y = header + cell_h * rows.len() as i32 + size.px(22.0) as i32;
        let bar_w = (cell_w * 6).max(60);
        let bar_x = left + (cell_w * 13 - bar_w) / 2;
        let bar_h = size.px(12.0) as i32;
        for i in 0..bar_w {
            let v = (f64::from(i) / f64::from(bar_w - 1) * 2.0 - 1.0) * limit;
            root.draw(&Rectangle::new(
                [(bar_x + i, bar_y), (bar_x + i + 1, bar_y + bar_h)],
                heat(v, limit).filled(),
            ))?;
        }
        let label_y = bar_y + bar_h + size.px(10.0) as i32;
        for (x, text) in [
            (bar_x, format!("{:.1}", -limit)),
            (bar_x + bar_w / 2, "0".to_string()),
            (bar_x + bar_w, format!("+{limit:.1}")),
        ] {
            root.draw(&Text::new(text, (x, label_y), centered(12.0)))?;
        }
        root.draw(&Text::new(
            "Return (%)",
            (bar_x - size.px(60.0) as i32, bar_y + bar_h / 2),
            centered(12.0),
        ))?;
        Ok(())
    })
}

/// A vertical line on a histogram, named in the legend.
pub struct Marker {
    pub label: String,
    pub value: f64,
    pub color: RGBColor,
}

impl Marker {
    pub fn new(label: impl Into<String>, value: f64, color: RGBColor) -> Self {
        Self {
            label: label.into(),
            value,
            color,
        }
    }
}

/// A histogram of `values` (√n bins, 10 to 60) with marker lines.
pub fn histogram(
    values: &[f64],
    title: &str,
    x_desc: &str,
    y_desc: &str,
    markers: &[Marker],
    size: Size,
) -> Result<Vec<u8>, String> {
    let values: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let (lo, hi) = min_max(values.iter().copied());
    // Values equal but for rounding (a shuffle's total returns) make one bar,
    // not bins of float noise.
    let range = if hi - lo <= 1e-9 * lo.abs().max(hi.abs()).max(1.0) {
        padded(lo, lo, 0.0)
    } else {
        padded(lo, hi, 0.0)
    };
    let bins = ((values.len() as f64).sqrt().ceil() as usize).clamp(10, 60);
    let width = (range.end - range.start) / bins as f64;
    let mut counts = vec![0u32; bins];
    for v in &values {
        let i = (((v - range.start) / width).floor() as usize).min(bins - 1);
        counts[i] += 1;
    }
    let top = counts.iter().copied().max().unwrap_or(1).max(1);
    render(size, |root| {
        let root = titled(root, title, size)?;
        let (m_lo, m_hi) = min_max(markers.iter().map(|m| m.value));
        let x_range = padded(range.start.min(m_lo), range.end.max(m_hi), 0.03);
        let x_span = x_range.end - x_range.start;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(size.px(10.0))
            .margin_right(size.px(24.0))
            .margin_bottom(size.px(6.0))
            .x_label_area_size(size.px(48.0))
            .y_label_area_size(size.px(64.0))
            .build_cartesian_2d(x_range, 0.0..f64::from(top) * 1.12)?;
        let count_label = |v: &f64| format!("{v:.0}");
        let x_label = |v: &f64| format!("{v:.*}", decimals(x_span / size.x_labels() as f64));
        chart
            .configure_mesh()
            .x_labels(size.x_labels())
            .x_label_formatter(&x_label)
            .y_label_formatter(&count_label)
            .x_desc(x_desc)
            .y_desc(y_desc)
            .label_style(font(size, 13.0))
            .axis_desc_style(font(size, 14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        chart
            .draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| **c > 0)
                    .map(|(i, c)| {
                        let x0 = range.start + width * i as f64;
                        Rectangle::new(
                            [(x0, 0.0), (x0 + width, f64::from(*c))],
                            BLUE_LINE.mix(0.55).filled(),
                        )
                    }),
            )?
            .label(format!("{} values in {bins} bins", values.len()))
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLUE_LINE.mix(0.55).filled())
            });
        chart.draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(i, c)| {
                    let x0 = range.start + width * i as f64;
                    Rectangle::new(
                        [(x0, 0.0), (x0 + width, f64::from(*c))],
                        WHITE.stroke_width(1),
                    )
                }),
        )?;
        let y_top = f64::from(top) * 1.12;
        for marker in markers.iter().filter(|m| m.value.is_finite()) {
            let color = marker.color;
            chart
                .draw_series(LineSeries::new(
                    [(marker.value, 0.0), (marker.value, y_top)],
                    color.stroke_width(size.px(2.0)),
                ))?
                .label(format!("{} {:.2} %", marker.label, marker.value))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(font(size, 13.0))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

/// A Monte Carlo result's `fan`: equity relative to the starting balance
/// (1.0 = start) at each x, per percentile band, and the original's path.
#[derive(Debug, Clone, PartialEq)]
pub struct Fan {
    /// `trade` or `day`.
    pub x_label: String,
    pub x: Vec<f64>,
    /// Percentile (5, 25, 50, 75, 95) → one value per x.
    pub bands: BTreeMap<u32, Vec<f64>>,
    pub original: Option<Vec<f64>>,
}

/// Reads `fan: {x_label, x, bands: {"5": [...], ...}, original}` of a result body.
pub fn parse_fan(body: &Value) -> Result<Fan, String> {
    let fan = &body["fan"];
    let numbers = |v: &Value| -> Option<Vec<f64>> {
        v.as_array()?
            .iter()
            .map(|n| Some(n.as_f64().unwrap_or(f64::NAN)))
            .collect()
    };
    let x = numbers(&fan["x"]).ok_or("the result has no fan (`fan.x` is missing)")?;
    let mut bands = BTreeMap::new();
    for (key, band) in fan["bands"].as_object().into_iter().flatten() {
        let Ok(percentile) = key.parse::<f64>() else {
            continue;
        };
        let Some(values) = numbers(band) else {
            continue;
        };
        if values.len() == x.len()
            && percentile.fract() == 0.0
            && (0.0..=100.0).contains(&percentile)
        {
            bands.insert(percentile as u32, values);
        }
    }
    for needed in [5, 25, 50, 75, 95] {
        if !bands.contains_key(&needed) {
            return Err(format!(
                "the result's fan has no {needed}th percentile band"
            ));
        }
    }
    if x.is_empty() {
        return Err("the result's fan has no points".into());
    }
    let original = numbers(&fan["original"]).filter(|o| o.len() == x.len());
    Ok(Fan {
        x_label: fan["x_label"].as_str().unwrap_or("trade").to_string(),
        x,
        bands,
        original,
    })
}

/// Percentile bands of equity over the scenarios, with the median and the original.
pub fn fan(fan: &Fan, title: &str, size: Size) -> Result<Vec<u8>, String> {
    let (x_lo, x_hi) = min_max(fan.x.iter().copied());
    let (y_lo, y_hi) = min_max(
        fan.bands
            .values()
            .flatten()
            .chain(fan.original.iter().flatten())
            .copied()
            .chain([1.0]),
    );
    let x_desc = match fan.x_label.as_str() {
        "day" => "Day of the backtest",
        _ => "Trades closed",
    };
    let band = |lower: u32, upper: u32| -> Vec<(f64, f64)> {
        let xs = fan.x.iter().copied();
        xs.clone()
            .zip(fan.bands[&upper].iter().copied())
            .chain(xs.zip(fan.bands[&lower].iter().copied()).rev())
            .filter(|(_, y)| y.is_finite())
            .collect()
    };
    render(size, |root| {
        let root = titled(root, title, size)?;
        let mut chart = ChartBuilder::on(&root)
            .margin_left(size.px(10.0))
            .margin_right(size.px(24.0))
            .margin_bottom(size.px(6.0))
            .x_label_area_size(size.px(48.0))
            .y_label_area_size(size.px(70.0))
            .build_cartesian_2d(padded(x_lo, x_hi, 0.0), padded(y_lo, y_hi, 0.05))?;
        let y_fmt = |v: &f64| format!("{v:.2}");
        let x_fmt = |v: &f64| format!("{v:.0}");
        chart
            .configure_mesh()
            .x_labels(size.x_labels())
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .x_desc(x_desc)
            .y_desc("Equity (× starting balance)")
            .label_style(font(size, 13.0))
            .axis_desc_style(font(size, 14.0))
            .light_line_style(WHITE.mix(0.0))
            .bold_line_style(BLACK.mix(0.08))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(x_lo, 1.0), (x_hi, 1.0)],
            GREY.mix(0.7).stroke_width(size.px(1.0)),
        ))?;
        chart
            .draw_series(std::iter::once(Polygon::new(
                band(5, 95),
                BLUE_LINE.mix(0.15).filled(),
            )))?
            .label("5th–95th percentile")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLUE_LINE.mix(0.15).filled())
            });
        chart
            .draw_series(std::iter::once(Polygon::new(
                band(25, 75),
                BLUE_LINE.mix(0.35).filled(),
            )))?
            .label("25th–75th percentile")
            .legend(|(x, y)| {
                Rectangle::new([(x, y - 5), (x + 20, y + 5)], BLUE_LINE.mix(0.35).filled())
            });
        chart
            .draw_series(LineSeries::new(
                fan.x.iter().copied().zip(fan.bands[&50].iter().copied()),
                BLUE_LINE.stroke_width(size.px(2.0)),
            ))?
            .label("Median scenario")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], BLUE_LINE.stroke_width(3))
            });
        if let Some(original) = &fan.original {
            chart
                .draw_series(LineSeries::new(
                    fan.x.iter().copied().zip(original.iter().copied()),
                    ORANGE.stroke_width(size.px(2.0)),
                ))?
                .label("Original backtest")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], ORANGE.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font(font(size, 13.0))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Width and height from the PNG's IHDR chunk, after checking the signature.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (be(16), be(20))
    }

    /// The decoded pixels: how many differ from white (the chart drew something).
    fn inked(bytes: &[u8]) -> usize {
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buffer).unwrap();
        buffer[..info.buffer_size()]
            .chunks(3)
            .filter(|p| p != &[255, 255, 255])
            .count()
    }

    /// A Monte Carlo body as the `monte_carlo` kind stores it (hand-made).
    fn monte_carlo_body() -> Value {
        let x: Vec<f64> = (0..=40).map(f64::from).collect();
        let band = |k: f64| -> Vec<f64> { x.iter().map(|i| 1.0 + k * i / 40.0).collect() };
        json!({
            "fan": {"x_label": "trade", "x": x,
                    "bands": {"5": band(-0.3), "25": band(-0.05), "50": band(0.1), "75": band(0.25), "95": band(0.5)},
                    "original": band(0.2), "unit": "equity relative to the starting balance (1.0 = start)"},
            "distribution": {"total_return": (0..500).map(|i| f64::from(i % 97) - 30.0).collect::<Vec<_>>()},
            "metrics": {"total_return": {"original": 20.0}},
        })
    }

    #[test]
    fn fan_and_histogram_of_a_monte_carlo_body() {
        let body = monte_carlo_body();
        let parsed = parse_fan(&body).unwrap();
        assert_eq!(
            parsed.bands.keys().copied().collect::<Vec<_>>(),
            [5, 25, 50, 75, 95]
        );
        assert_eq!(parsed.x.len(), 41);
        let size = Size {
            width: 800,
            height: 500,
        };
        let png = fan(&parsed, "Monte Carlo fan", size).unwrap();
        assert_eq!(png_size(&png), (800, 500));
        assert!(inked(&png) > 10_000);
        assert_eq!(
            png,
            fan(&parsed, "Monte Carlo fan", size).unwrap(),
            "deterministic"
        );

        let totals: Vec<f64> = body["distribution"]["total_return"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_f64)
            .collect();
        let png = histogram(
            &totals,
            "Total return of the scenarios",
            "Total return (%)",
            "Scenarios",
            &[Marker::new("Original", 20.0, DARK)],
            Size::default(),
        )
        .unwrap();
        assert_eq!(png_size(&png), (1000, 600));
        assert!(inked(&png) > 10_000);

        // A shuffle's scenarios all have the same total return, but for rounding.
        let same: Vec<f64> = (0..200)
            .map(|i| 71.742 + f64::from(i % 3) * 1e-13)
            .collect();
        let png = histogram(&same, "Same", "Total return (%)", "Scenarios", &[], size).unwrap();
        assert_eq!(png_size(&png), (800, 500));

        let mut broken = body.clone();
        broken["fan"]["bands"].as_object_mut().unwrap().remove("25");
        assert!(parse_fan(&broken).unwrap_err().contains("25th"));
        assert!(parse_fan(&json!({})).is_err());
    }

    fn curve() -> Vec<EquityPoint> {
        let start = 1_672_531_200_000; // 2023-01-01
        (0..400)
            .map(|i: i64| EquityPoint {
                time_ms: start + i * DAY_MS + if i > 0 { 60_000 } else { 0 },
                value: 10_000.0 * (1.0 + 0.3 * ((i as f64) / 40.0).sin() + i as f64 / 1000.0),
            })
            .collect()
    }

    #[test]
    fn backtest_charts_render_at_the_bounds() {
        let curve = curve();
        let returns = jesse_mcp_core::analysis::daily_returns(&curve);
        let months = jesse_mcp_core::analysis::monthly_returns(&returns);
        let years = jesse_mcp_core::analysis::yearly_returns(&returns);
        let worst = jesse_mcp_core::analysis::drawdown_periods(&curve);
        for (width, height) in [(320, 240), (1000, 600), (2400, 1600)] {
            let size = Size { width, height };
            for png in [
                equity(&curve, "Equity", "USDT", size).unwrap(),
                drawdown(&curve, &worst[..worst.len().min(5)], "Drawdown", size).unwrap(),
                monthly(&months, &years, "Monthly returns (%)", size).unwrap(),
            ] {
                assert_eq!(png_size(&png), (width, height));
                assert!(inked(&png) > 1000);
            }
        }
    }

    #[test]
    fn charts_by_kind() {
        assert_eq!(
            Chart::applicable("monte_carlo"),
            [Chart::Fan, Chart::Histogram]
        );
        assert!(Chart::applicable("candle_import").is_empty());
        assert_eq!(Chart::parse("monthly"), Some(Chart::Monthly));
        assert_eq!(Chart::parse("pie"), None);
    }
}

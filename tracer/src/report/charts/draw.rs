//! Drawing a [`BarChart`] on any plotters backend (SVG and PNG alike): the title, the
//! value axis with its unit, one horizontal bar per row (the first on top), segment
//! labels where they fit, the legend (only the categories shown) and the notes.

use plotters::{
    coord::{Shift, types::RangedCoordf64},
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    font::FAMILY,
    model::{Bar, BarChart, Chart, TimelineCell, TimelineChart},
    palette::{Category, Rgb},
};

pub const WIDTH: u32 = 1000;
const BAR_PX: u32 = 34;
const TIMELINE_ROW_PX: u32 = 60;
const SIGNED_ROW_PX: u32 = 56;
const LEGEND_ROW_PX: u32 = 24;
const NOTE_PX: u32 = 20;
/// Rough advance of one character of 13 px text, for layout decisions only.
pub(super) const CHAR_PX: f64 = 7.5;

pub type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// The picture's size: it grows with the rows, the legend and the notes.
pub fn size(chart: &Chart) -> (u32, u32) {
    let rows = chart.labels().len().max(1) as u32;
    let row_px = match chart {
        Chart::Bars(_) => BAR_PX,
        Chart::Timeline(_) => TIMELINE_ROW_PX,
        Chart::Signed(_) => SIGNED_ROW_PX,
    };
    (WIDTH, 110 + row_px * rows + footer_px(chart))
}

fn footer_px(chart: &Chart) -> u32 {
    LEGEND_ROW_PX * legend_rows(&chart.categories()) as u32 + NOTE_PX * chart.notes().len() as u32 + 12
}

pub fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    let (_, height) = root.dim_in_pixel();
    let (plot, footer) = root.split_vertically(height.saturating_sub(footer_px(chart)));
    match chart {
        Chart::Bars(c) if !c.bars.is_empty() => draw_bars(&plot, c)?,
        Chart::Timeline(c) if c.rows.iter().any(|r| !r.cells.is_empty()) => draw_timeline(&plot, c)?,
        Chart::Signed(c) if !c.rows.is_empty() => super::draw_signed::draw_signed(&plot, c)?,
        _ => {
            plot.titled(chart.title(), (FAMILY, 20))?.draw(&Text::new(
                "nothing to show in this report",
                (20, 20),
                (FAMILY, 14).into_font(),
            ))?;
        }
    }
    draw_footer(&footer, &chart.categories(), chart.notes())
}

pub(super) fn rgb(c: Category) -> RGBColor {
    let Rgb(r, g, b) = c.colour();
    RGBColor(r, g, b)
}

fn draw_bars<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &BarChart) -> DrawResult<DB> {
    let x_max = chart.bars.iter().map(Bar::total).fold(0.0, f64::max).max(1e-9) * 1.08;
    let labels: Vec<&str> = chart.bars.iter().map(|b| b.label.as_str()).collect();
    let mut c = rows_chart(area, &chart.title, &chart.unit, 0.0..x_max, &labels)?;
    for (row, bar) in rows(chart.bars.len()).zip(&chart.bars) {
        draw_bar(&mut c, row, bar)?;
    }
    Ok(())
}

/// Rows from the top: row 0 of the coordinates is the bottom, and the first item goes on top.
pub(super) fn rows(n: usize) -> impl Iterator<Item = f64> {
    (0..n).rev().map(|r| r as f64)
}

/// The frame every layout shares: the title, a value axis over `x` with its
/// description, and one row per label, labelled on the left.
pub(super) fn rows_chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    x: std::ops::Range<f64>,
    labels: &[&str],
) -> Result<ChartContext<'a, DB, BarCoords>, DrawingAreaErrorKind<DB::ErrorType>> {
    let x_max = x.start.abs().max(x.end.abs());
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let label_px = ((longest as f64 * CHAR_PX) as u32 + 16).clamp(60, 360);
    let mut c = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(label_px)
        .build_cartesian_2d(x, 0f64..labels.len() as f64)?;
    c.configure_mesh()
        .disable_y_mesh()
        .y_labels(0)
        .x_desc(x_desc)
        .x_label_formatter(&|v| axis_number(*v, x_max))
        .label_style((FAMILY, 13))
        .axis_desc_style((FAMILY, 14))
        .draw()?;
    for (row, label) in rows(labels.len()).zip(labels) {
        let (x, y) = c.backend_coord(&(0.0, row + 0.5));
        let style = (FAMILY, 13).into_font().color(&BLACK).pos(Pos::new(HPos::Right, VPos::Center));
        area.draw(&Text::new(*label, (x - 8, y), style))?;
    }
    Ok(c)
}

/// Tick labels without needless decimals.
fn axis_number(v: f64, max: f64) -> String {
    if max >= 20.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

pub(super) type BarCoords = Cartesian2d<RangedCoordf64, RangedCoordf64>;

fn draw_bar<DB: DrawingBackend>(c: &mut ChartContext<DB, BarCoords>, row: f64, bar: &Bar) -> DrawResult<DB> {
    let (top, bottom) = (row + 0.8, row + 0.2);
    let mut x = 0.0;
    for seg in &bar.segments {
        let (x0, x1) = (x, x + seg.value);
        x = x1;
        c.draw_series(std::iter::once(Rectangle::new([(x0, top), (x1, bottom)], rgb(seg.category).filled())))?;
        let Some(label) = &seg.label else { continue };
        let px = |v: f64| c.backend_coord(&(v, row)).0;
        if (px(x1) - px(x0)) as f64 > label.chars().count() as f64 * CHAR_PX * 0.9 + 8.0 {
            let style = (FAMILY, 12).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
            c.draw_series(std::iter::once(Text::new(label.clone(), (x0 + x_max_px_pad(c), row + 0.5), style)))?;
        }
    }
    Ok(())
}

/// A few pixels of padding before a segment's label, in value units.
pub(super) fn x_max_px_pad<DB: DrawingBackend>(c: &ChartContext<DB, BarCoords>) -> f64 {
    let range = c.x_range();
    let (left, right) = (c.backend_coord(&(range.start, 0.0)).0, c.backend_coord(&(range.end, 0.0)).0);
    4.0 * (range.end - range.start) / (right - left).max(1) as f64
}

/// Legend entries per row.
const LEGEND_PER_ROW: usize = 3;

fn legend_rows(categories: &[Category]) -> usize {
    categories.len().div_ceil(LEGEND_PER_ROW)
}

fn draw_footer<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    categories: &[Category],
    notes: &[String],
) -> DrawResult<DB> {
    let column_px = (WIDTH as i32 - 40) / LEGEND_PER_ROW as i32;
    for (i, &cat) in categories.iter().enumerate() {
        let x = 20 + column_px * (i % LEGEND_PER_ROW) as i32;
        let y = 4 + LEGEND_ROW_PX as i32 * (i / LEGEND_PER_ROW) as i32;
        area.draw(&Rectangle::new([(x, y), (x + 16, y + 16)], rgb(cat).filled()))?;
        area.draw(&Rectangle::new([(x, y), (x + 16, y + 16)], BLACK.stroke_width(1)))?;
        area.draw(&Text::new(cat.label(), (x + 22, y + 1), (FAMILY, 13).into_font()))?;
    }
    let notes_y = 4 + LEGEND_ROW_PX as i32 * legend_rows(categories) as i32;
    for (i, note) in notes.iter().enumerate() {
        area.draw(&Text::new(note.as_str(), (20, notes_y + NOTE_PX as i32 * i as i32), (FAMILY, 12).into_font()))?;
    }
    Ok(())
}

fn draw_timeline<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &TimelineChart) -> DrawResult<DB> {
    let labels: Vec<&str> = chart.rows.iter().map(|r| r.label.as_str()).collect();
    let mut c = rows_chart(area, &chart.title, "time since the trace start (s)", 0.0..chart.seconds, &labels)?;
    for (row, r) in rows(chart.rows.len()).zip(&chart.rows) {
        for cell in &r.cells {
            draw_cell(&mut c, row, cell)?;
        }
    }
    Ok(())
}

/// One bin: its categories stacked bottom-up in 80 % of the row, the busiest thread's
/// name where it fits, and a triangle above it where VMM threads arrived.
fn draw_cell<DB: DrawingBackend>(c: &mut ChartContext<DB, BarCoords>, row: f64, cell: &TimelineCell) -> DrawResult<DB> {
    let (x0, x1) = (cell.start_s, cell.start_s + cell.len_s);
    let mut y = row + 0.05;
    for (cat, share) in &cell.shares {
        let y1 = y + 0.8 * share;
        c.draw_series(std::iter::once(Rectangle::new([(x0, y), (x1, y1)], rgb(*cat).filled())))?;
        y = y1;
    }
    let px = |v: f64| c.backend_coord(&(v, row)).0;
    if let Some(top) = &cell.top
        && (px(x1) - px(x0)) as f64 > top.chars().count() as f64 * CHAR_PX * 0.8 + 6.0
    {
        let style = (FAMILY, 11).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        c.draw_series(std::iter::once(Text::new(top.clone(), (x0 + x_max_px_pad(c), row + 0.45), style)))?;
    }
    if !cell.vmm_arrivals.is_empty() {
        let mark = TriangleMarker::new(((x0 + x1) / 2.0, row + 0.92), 5, BLACK.filled());
        c.draw_series(std::iter::once(mark))?;
    }
    Ok(())
}

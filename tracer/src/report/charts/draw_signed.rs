//! Drawing a [`SignedChart`]: per row, the measured value as a grey bar with its
//! error whisker on top, the components that explain it stacked from zero below
//! (increases to the right, decreases to the left), a line at zero, and each
//! reference as a black mark across the row with its label.

use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    draw::{BarCoords, CHAR_PX, DrawResult, rgb, rows, rows_chart, x_max_px_pad},
    font::FAMILY,
    model::{SignedChart, SignedRow},
};

/// The measured bar's colour: not a category (it is the total the categories explain).
pub const MEASURED: RGBColor = RGBColor(0x55, 0x55, 0x55);

pub fn draw_signed<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &SignedChart) -> DrawResult<DB> {
    let labels: Vec<&str> = chart.rows.iter().map(|r| r.label.as_str()).collect();
    let mut c = rows_chart(area, &chart.title, &chart.unit, x_range(chart), &labels)?;
    let top = chart.rows.len() as f64;
    c.draw_series(std::iter::once(PathElement::new([(0.0, 0.0), (0.0, top)], BLACK.stroke_width(1))))?;
    for (row, r) in rows(chart.rows.len()).zip(&chart.rows) {
        draw_row(&mut c, row, r)?;
    }
    Ok(())
}

/// From the most negative to the most positive thing drawn, zero included, padded.
pub fn x_range(chart: &SignedChart) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (0.0f64, 0.0f64);
    for r in &chart.rows {
        let (neg, pos) = stacked_extent(r);
        let refs = r.references.iter().map(|x| x.value);
        for v in [neg, pos, r.measured - r.error, r.measured + r.error].into_iter().chain(refs) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    let pad = 0.08 * (hi - lo).max(1e-9);
    (lo - pad)..(hi + pad)
}

/// How far the components reach left (sum of the negatives) and right.
fn stacked_extent(r: &SignedRow) -> (f64, f64) {
    let neg = r.components.iter().map(|s| s.value.min(0.0)).sum();
    let pos = r.components.iter().map(|s| s.value.max(0.0)).sum();
    (neg, pos)
}

fn draw_row<DB: DrawingBackend>(c: &mut ChartContext<DB, BarCoords>, row: f64, r: &SignedRow) -> DrawResult<DB> {
    // The measured value on top, its whisker across it.
    let (m0, m1) = (row + 0.58, row + 0.88);
    c.draw_series(std::iter::once(Rectangle::new([(0.0, m0), (r.measured, m1)], MEASURED.filled())))?;
    let y = (m0 + m1) / 2.0;
    let (w0, w1) = (r.measured - r.error, r.measured + r.error);
    let whisker = BLACK.stroke_width(2);
    c.draw_series(std::iter::once(PathElement::new([(w0, y), (w1, y)], whisker)))?;
    for x in [w0, w1] {
        c.draw_series(std::iter::once(PathElement::new([(x, m0 + 0.05), (x, m1 - 0.05)], whisker)))?;
    }
    // The components below: increases stack rightwards from zero, decreases leftwards.
    let (b0, b1) = (row + 0.12, row + 0.5);
    let (mut right, mut left) = (0.0, 0.0);
    for seg in &r.components {
        let (x0, x1) = if seg.value >= 0.0 {
            right += seg.value;
            (right - seg.value, right)
        } else {
            left += seg.value;
            (left, left - seg.value)
        };
        c.draw_series(std::iter::once(Rectangle::new([(x0, b0), (x1, b1)], rgb(seg.category).filled())))?;
        c.draw_series(std::iter::once(Rectangle::new([(x0, b0), (x1, b1)], WHITE.stroke_width(1))))?;
        let Some(label) = &seg.label else { continue };
        let px = |v: f64| c.backend_coord(&(v, row)).0;
        if (px(x1) - px(x0)) as f64 > label.chars().count() as f64 * CHAR_PX * 0.8 + 6.0 {
            let style = (FAMILY, 11).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
            let at = (x0 + x_max_px_pad(c), (b0 + b1) / 2.0);
            c.draw_series(std::iter::once(Text::new(label.clone(), at, style)))?;
        }
    }
    for reference in &r.references {
        let x = reference.value;
        c.draw_series(std::iter::once(PathElement::new([(x, row + 0.04), (x, row + 0.96)], BLACK.stroke_width(2))))?;
        let style = (FAMILY, 11).into_font().color(&BLACK).pos(Pos::new(HPos::Left, VPos::Top));
        c.draw_series(std::iter::once(Text::new(reference.label.clone(), (x + x_max_px_pad(c), row + 0.98), style)))?;
    }
    Ok(())
}

//! What a chart shows, apart from how it is drawn: bars of stacked segments, each
//! segment of one [`Category`]. The chart files build these from a report (pure, unit
//! tested); `draw.rs` turns them into pictures.

use super::palette::Category;

/// One stretch of a bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Segment {
    pub category: Category,
    /// In the chart's unit (`BarChart::unit`).
    pub value: f64,
    /// Written inside the segment where it fits (e.g. the thread that took the time).
    pub label: Option<String>,
}

/// One bar: a VM, a vCPU, a CPU, a victim thread.
#[derive(Clone, Debug, PartialEq)]
pub struct Bar {
    pub label: String,
    pub segments: Vec<Segment>,
}

impl Bar {
    pub fn new(label: impl Into<String>) -> Bar {
        Bar { label: label.into(), segments: Vec::new() }
    }

    /// Adds a segment unless it is empty.
    pub fn push(&mut self, category: Category, value: f64) {
        self.push_labelled(category, value, None);
    }

    pub fn push_labelled(&mut self, category: Category, value: f64, label: Option<String>) {
        if value > 0.0 {
            self.segments.push(Segment { category, value, label });
        }
    }

    pub fn total(&self) -> f64 {
        self.segments.iter().map(|s| s.value).sum()
    }
}

/// A horizontal stacked bar chart.
#[derive(Clone, Debug, PartialEq)]
pub struct BarChart {
    /// The files' stem: `<name>.svg`, `<name>.png`.
    pub name: &'static str,
    pub title: String,
    /// The value axis: what is measured, in which unit ("CPU time (ms)").
    pub unit: String,
    pub bars: Vec<Bar>,
    /// What to keep in mind when reading it (printed under the chart).
    pub notes: Vec<String>,
}

impl BarChart {
    /// The categories the bars use, in legend order.
    pub fn categories(&self) -> Vec<Category> {
        Category::ALL
            .into_iter()
            .filter(|c| self.bars.iter().any(|b| b.segments.iter().any(|s| s.category == *c)))
            .collect()
    }
}

/// Nanoseconds as the charts' milliseconds.
pub fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

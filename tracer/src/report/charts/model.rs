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

/// Each CPU over time: one row per CPU, one cell per timeline bin.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineChart {
    pub name: &'static str,
    pub title: String,
    pub rows: Vec<TimelineRow>,
    /// The time axis' end (s).
    pub seconds: f64,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TimelineRow {
    pub label: String,
    pub cells: Vec<TimelineCell>,
}

/// One bin on one CPU.
#[derive(Clone, Debug, PartialEq)]
pub struct TimelineCell {
    /// From the trace start (s).
    pub start_s: f64,
    pub len_s: f64,
    /// Shares of the bin by category (they sum to 1), stacked bottom-up.
    pub shares: Vec<(Category, f64)>,
    /// The thread that ran most, written in the cell where it fits.
    pub top: Option<String>,
    /// VMM threads that arrived on this CPU in this bin (marked above the cell).
    pub vmm_arrivals: Vec<String>,
}

/// Signed horizontal bars: per row a measured value with its error, and below it the
/// components that explain it, stacked from zero (increases to the right, decreases to
/// the left), with reference marks (an experiment's slowdown beside the study's).
#[derive(Clone, Debug, PartialEq)]
pub struct SignedChart {
    pub name: &'static str,
    pub title: String,
    /// The value axis: what is measured, in which unit.
    pub unit: String,
    pub rows: Vec<SignedRow>,
    pub notes: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SignedRow {
    pub label: String,
    /// What was measured (the grey bar), and its error (the whisker: ± this).
    pub measured: f64,
    pub error: f64,
    /// What it is made of, each in its category's colour; their sum is `measured`.
    pub components: Vec<Segment>,
    /// Figures to compare with, marked across the row.
    pub references: Vec<Reference>,
}

/// A figure to compare with, e.g. the study's +4.89 % for KVM.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference {
    pub label: String,
    pub value: f64,
}

/// Any chart this module draws.
#[derive(Clone, Debug, PartialEq)]
pub enum Chart {
    Bars(BarChart),
    Timeline(TimelineChart),
    Signed(SignedChart),
}

impl Chart {
    pub fn name(&self) -> &'static str {
        match self {
            Chart::Bars(c) => c.name,
            Chart::Timeline(c) => c.name,
            Chart::Signed(c) => c.name,
        }
    }

    pub fn title(&self) -> &str {
        match self {
            Chart::Bars(c) => &c.title,
            Chart::Timeline(c) => &c.title,
            Chart::Signed(c) => &c.title,
        }
    }

    /// The rows' labels (bars or CPUs), top first.
    pub fn labels(&self) -> Vec<&str> {
        match self {
            Chart::Bars(c) => c.bars.iter().map(|b| b.label.as_str()).collect(),
            Chart::Timeline(c) => c.rows.iter().map(|r| r.label.as_str()).collect(),
            Chart::Signed(c) => c.rows.iter().map(|r| r.label.as_str()).collect(),
        }
    }

    /// The bars of a bar chart (none for a timeline).
    pub fn bars(&self) -> &[Bar] {
        match self {
            Chart::Bars(c) => &c.bars,
            Chart::Timeline(_) | Chart::Signed(_) => &[],
        }
    }

    pub fn notes(&self) -> &[String] {
        match self {
            Chart::Bars(c) => &c.notes,
            Chart::Timeline(c) => &c.notes,
            Chart::Signed(c) => &c.notes,
        }
    }

    /// The categories shown, in legend order.
    pub fn categories(&self) -> Vec<Category> {
        match self {
            Chart::Bars(c) => c.categories(),
            Chart::Timeline(c) => Category::ALL
                .into_iter()
                .filter(|cat| c.rows.iter().flat_map(|r| &r.cells).any(|cell| cell.shares.iter().any(|s| s.0 == *cat)))
                .collect(),
            Chart::Signed(c) => Category::ALL
                .into_iter()
                .filter(|cat| c.rows.iter().flat_map(|r| &r.components).any(|s| s.category == *cat))
                .collect(),
        }
    }
}

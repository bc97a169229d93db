//! Charts of a report, drawn with plotters, each written as SVG and PNG, and one
//! self-contained `index.html` that shows them with the key numbers.
//!
//! One file per chart builds its [`BarChart`] from the report (pure, unit tested);
//! `draw.rs` draws any of them (`draw_signed.rs` the signed bars of an experiment's
//! slowdown, which `experiment::charts` builds); the categories' colours live in
//! `palette.rs` alone.

mod attribution;
mod draw;
mod draw_signed;
mod exit_latency;
mod exits;
#[cfg(test)]
pub(crate) mod fixtures;
mod font;
mod html;
mod model;
mod palette;
mod per_cpu;
mod split;
mod timeline;
mod who_took;

use std::path::{Path, PathBuf};

use plotters::prelude::*;

pub use draw_signed::MEASURED as MEASURED_COLOUR;
pub use font::FontError;
pub use html::{chart_section, escape};
pub use model::{
    Bar, BarChart, Chart, Reference, Segment, SignedChart, SignedRow, TimelineCell, TimelineChart, TimelineRow,
};
pub use palette::{Category, Rgb};

use super::{Report, WriteError, write_atomic};
use crate::diagnose::Finding;

/// Every chart of a report, in the order index.html shows them.
pub fn charts(r: &Report) -> Vec<Chart> {
    vec![
        Chart::Bars(attribution::chart(r)),
        Chart::Bars(per_cpu::chart(r)),
        Chart::Timeline(timeline::chart(r)),
        Chart::Bars(who_took::chart(r)),
        Chart::Bars(exits::chart(r)),
        Chart::Bars(exit_latency::chart(r)),
    ]
}

/// A chart written to disk.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartFile {
    pub name: &'static str,
    pub title: String,
    pub svg: PathBuf,
    pub png: PathBuf,
    /// Pixels, the same for both files.
    pub size: (u32, u32),
}

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error(transparent)]
    Font(#[from] FontError),
    #[error("cannot create the output directory {path} (choose another --out)")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot draw the {chart} chart: {message}")]
    Draw { chart: &'static str, message: String },
    #[error(transparent)]
    Write(#[from] WriteError),
}

/// Draws every chart of `r` into `dir` (created if needed) as SVG and PNG, then
/// writes `dir/index.html` with them and the findings; returns the charts written.
pub fn write_dir(r: &Report, findings: &[Finding], dir: &Path) -> Result<Vec<ChartFile>, ChartError> {
    std::fs::create_dir_all(dir).map_err(|source| ChartError::Dir { path: dir.to_path_buf(), source })?;
    let files = charts(r).iter().map(|c| write_chart(c, dir)).collect::<Result<Vec<_>, _>>()?;
    write_atomic(&dir.join("index.html"), html::index(r, findings, &files).as_bytes())?;
    Ok(files)
}

/// Writes `<dir>/<name>.svg` and `<dir>/<name>.png`.
pub fn write_chart(chart: &Chart, dir: &Path) -> Result<ChartFile, ChartError> {
    font::ensure_registered()?;
    let size = draw::size(chart);
    let fail = |e: &dyn std::fmt::Display| ChartError::Draw { chart: chart.name(), message: e.to_string() };
    let mut svg_text = String::new();
    {
        let root = SVGBackend::with_string(&mut svg_text, size).into_drawing_area();
        draw::draw(&root, chart).map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    let svg = dir.join(format!("{}.svg", chart.name()));
    write_atomic(&svg, svg_text.as_bytes())?;
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        draw::draw(&root, chart).map_err(|e| fail(&e))?;
        root.present().map_err(|e| fail(&e))?;
    }
    let png = dir.join(format!("{}.png", chart.name()));
    write_atomic(&png, &encode_png(&pixels, size).map_err(|e| fail(&e))?)?;
    Ok(ChartFile { name: chart.name(), title: chart.title().to_string(), svg, png, size })
}

/// RGB pixels as a PNG file's bytes.
fn encode_png(rgb: &[u8], (width, height): (u32, u32)) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The recorded fixtures have no exits (no /dev/kvm when they were made): the
    /// exits and exit latency charts are drawn here from the hand-made report.
    #[test]
    fn the_exits_chart_is_drawn_with_its_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let chart = Chart::Bars(exits::chart(&fixtures::one_vm_report()));
        let file = write_chart(&chart, dir.path()).unwrap();
        let svg = std::fs::read_to_string(&file.svg).unwrap();
        for label in ["web: exit HLT", "web: exit IO_INSTRUCTION", "web: to VMM KVM_EXIT_IO"] {
            assert!(svg.contains(label), "{label}");
        }
        assert!(svg.contains(&Category::VcpuOverhead.colour().hex().to_uppercase()));
        assert!(std::fs::metadata(&file.png).unwrap().len() > 1000);
        let latency = write_chart(&Chart::Bars(exit_latency::chart(&fixtures::one_vm_report())), dir.path()).unwrap();
        assert!(std::fs::read_to_string(&latency.svg).unwrap().contains("web: IO_INSTRUCTION 1-8 µs"));
    }
}

//! Draws every chart from reports recorded on a real host (tests/fixtures/, made by
//! tests/fixtures/record.sh) and checks the files: each SVG parses and names what it
//! shows, each PNG decodes at the size said, and every category has its palette
//! colour in every chart, in the legend and in the pixels.

use std::{collections::BTreeMap, path::PathBuf};

use vmmtrace::{
    diagnose::{Thresholds, diagnose},
    report::{
        Report,
        charts::{Category, Chart, ChartFile, charts, write_dir},
    },
};

fn fixture(name: &str) -> Report {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    Report::from_json(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

const FIXTURES: [&str; 2] = ["lookalike-vm.json", "jobs.json"];

/// The SVG's texts, in document order, and for each legend label the fill of the
/// square drawn just before it.
struct SvgSeen {
    texts: Vec<String>,
    legend: BTreeMap<String, String>,
}

fn read_svg(file: &ChartFile) -> SvgSeen {
    let text = std::fs::read_to_string(&file.svg).unwrap();
    let doc = roxmltree::Document::parse(&text).unwrap_or_else(|e| panic!("{} is not XML: {e}", file.svg.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    assert_eq!(root.attribute("width"), Some(file.size.0.to_string().as_str()));
    assert_eq!(root.attribute("height"), Some(file.size.1.to_string().as_str()));
    let (mut texts, mut legend, mut last_fill) = (Vec::new(), BTreeMap::new(), None::<String>);
    for node in root.descendants().filter(|n| n.is_element()) {
        match node.tag_name().name() {
            "rect" => {
                if let Some(fill) = node.attribute("fill").filter(|f| *f != "none") {
                    last_fill = Some(fill.to_ascii_lowercase());
                }
            }
            "text" => {
                let t = node.text().unwrap_or("").trim().to_string();
                if Category::ALL.iter().any(|c| c.label() == t) {
                    legend.insert(t.clone(), last_fill.clone().unwrap_or_default());
                }
                texts.push(t);
            }
            _ => {}
        }
    }
    SvgSeen { texts, legend }
}

/// The distinct RGB colours of a PNG, after checking its size.
fn png_colours(file: &ChartFile) -> std::collections::HashSet<[u8; 3]> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&file.png).unwrap()));
    let mut reader = decoder.read_info().unwrap_or_else(|e| panic!("{} is not a PNG: {e}", file.png.display()));
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), file.size, "{}", file.png.display());
    assert_eq!(info.color_type, png::ColorType::Rgb);
    buf[..info.buffer_size()].chunks(3).map(|p| [p[0], p[1], p[2]]).collect()
}

#[test]
fn every_chart_of_every_fixture_is_drawn_readable_and_in_the_palette_colours() {
    for name in FIXTURES {
        let report = fixture(name);
        let dir = tempfile::tempdir().unwrap();
        let files = write_dir(&report, &diagnose(&report, &Thresholds::default()), dir.path())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let models = charts(&report);
        assert_eq!(files.len(), models.len());
        for (file, model) in files.iter().zip(&models) {
            let svg = read_svg(file);
            assert!(svg.texts.iter().any(|t| t == model.title()), "{name} {}: no title in {:?}", file.name, svg.texts);
            for label in model.labels() {
                assert!(svg.texts.iter().any(|t| t == label), "{name} {}: no row {label:?}", file.name);
            }
            let pixels = png_colours(file);
            for cat in model.categories() {
                assert_eq!(svg.legend.get(cat.label()), Some(&cat.colour().hex()), "{name} {}: legend", file.name);
                let rgb = cat.colour();
                assert!(pixels.contains(&[rgb.0, rgb.1, rgb.2]), "{name} {}: no {} pixels", file.name, cat.label());
            }
        }
        let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
        for f in &files {
            assert!(html.contains(&format!("src=\"{}.svg\"", f.name)), "{name}: index.html misses {}", f.name);
        }
    }
}

#[test]
fn the_recorded_fixtures_show_what_their_runs_did() {
    let vm = charts(&fixture("lookalike-vm.json"));
    let labels = |i: usize| vm[i].labels();
    assert!(labels(0).iter().any(|l| l.starts_with("VM ")), "{:?}", labels(0));
    assert!(labels(0).iter().any(|l| l.contains("vCPU 0")), "{:?}", labels(0));
    assert_eq!(labels(1), ["CPU 0", "CPU 1"]);
    let vmm = vm[0].bars()[1].segments.iter().find(|s| s.category == Category::VmmThreads).map(|s| s.value);
    // Two busy VMM threads for 4 s on 2 CPUs: well over a second of theirs.
    assert!(vmm.unwrap_or(0.0) > 1000.0, "{vmm:?}");
    let Chart::Timeline(timeline) = &vm[2] else { panic!("the third chart is the timeline") };
    let pinned = timeline.rows.iter().find(|r| r.label.contains("pinned vCPU")).expect("a row for the vCPU's CPU");
    assert!(pinned.cells.len() >= 10, "4 s in 100 ms bins: {}", pinned.cells.len());
    assert!(
        pinned.cells.iter().any(|c| !c.vmm_arrivals.is_empty()),
        "the floating VMM threads are marked arriving on the pinned vCPU's CPU"
    );
    let who_took = vm[3].bars();
    let vcpu = who_took.iter().find(|b| b.label.contains("vCPU 0")).expect("the vCPU is a victim");
    assert!(
        vcpu.segments.iter().any(|s| s.category == Category::VmmThreads
            && s.label.as_deref().is_some_and(|l| l.starts_with("IO mon_iothread") || l.starts_with("qemu-system"))),
        "a VMM thread named among the vCPU's thieves: {vcpu:?}"
    );
    let jobs = charts(&fixture("jobs.json"));
    assert!(jobs[0].bars().iter().filter(|b| b.label.starts_with("job sh")).count() >= 2);
    assert!(jobs[4].bars().is_empty(), "no VM, no exits");
}

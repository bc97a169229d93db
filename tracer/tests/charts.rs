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

fn experiment_fixture() -> vmmtrace::experiment::ExperimentResult {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/experiment.json");
    vmmtrace::experiment::ExperimentResult::load(&path).unwrap_or_else(|e| panic!("{e}"))
}

/// The experiment chart of a result recorded here (tests/fixtures/experiment.json: `vmmtrace
/// experiment --env host --cpus 0,1 --repeat 2 --scale 0.05`): one row per compared
/// scenario with its measured slowdown, the parts in their palette colours, the study's
/// Linux figure marked on the N-jobs unpinned rows; index.html shows it with the table.
#[test]
fn the_experiment_chart_shows_each_slowdown_beside_its_parts_and_the_study() {
    let r = experiment_fixture();
    let dir = tempfile::tempdir().unwrap();
    let findings = vmmtrace::experiment::findings::findings(&r);
    let files = vmmtrace::experiment::charts::write_dir(&r, &findings, dir.path()).unwrap();
    assert_eq!(files.len(), 1);
    let model = vmmtrace::experiment::charts::slowdown_chart(&r);
    let compared: Vec<_> = r.summary.iter().filter_map(|s| s.slowdown.as_ref()).collect();
    assert_eq!(model.rows.len(), compared.len());
    assert_eq!(compared.len(), 6, "2 workloads x 3 scenarios against 1 job unpinned");
    for (row, d) in model.rows.iter().zip(&compared) {
        assert_eq!(row.measured, d.pct);
        assert_eq!(row.error, d.std_error_pct);
        // The parts drawn add up to the measured slowdown, less the changes too small to draw.
        let drawn: f64 = row.components.iter().map(|s| s.value).sum();
        assert!((drawn - d.pct).abs() < 0.05 * d.parts_pp.len() as f64, "{row:?} {d:?}");
    }
    let marked: Vec<&str> = model.rows.iter().filter(|r| !r.references.is_empty()).map(|r| r.label.as_str()).collect();
    assert_eq!(marked.len(), 2, "the N-jobs unpinned row of each workload: {marked:?}");
    assert!(marked.iter().all(|l| l.contains("2 jobs pin=none")), "{marked:?}");
    let file = &files[0];
    let svg = read_svg(file);
    assert!(svg.texts.iter().any(|t| t == &model.title), "{:?}", svg.texts);
    for row in &model.rows {
        assert!(svg.texts.iter().any(|t| t == &row.label), "no row {:?}", row.label);
    }
    assert!(svg.texts.iter().any(|t| t == "study, Linux: +1.28 %"), "{:?}", svg.texts);
    let pixels = png_colours(file);
    let chart = Chart::Signed(model.clone());
    assert!(chart.categories().contains(&Category::RunqWait), "the jobs' wait for each other");
    for cat in chart.categories() {
        assert_eq!(svg.legend.get(cat.label()), Some(&cat.colour().hex()), "legend of {}", cat.label());
        let rgb = cat.colour();
        assert!(pixels.contains(&[rgb.0, rgb.1, rgb.2]), "no {} pixels", cat.label());
    }
    let grey = vmmtrace::report::charts::MEASURED_COLOUR;
    assert!(pixels.contains(&[grey.0, grey.1, grey.2]), "the measured bars");
    let html = std::fs::read_to_string(dir.path().join("index.html")).unwrap();
    assert!(html.contains("src=\"experiment_slowdown.svg\""));
    assert!(html.contains("+1.28 % Linux") && html.contains("<table>"), "the table with the study's figure");
    assert!(html.contains(&findings[0].summary.replace('\'', "&#39;")), "the findings");
    assert!(!html.contains("http") && !html.contains("<script"), "self-contained");
}

/// diagnose on the same result: the N-jobs effect of each workload, named by its
/// largest part and its thieves, and whether pinning helped, in words and as data.
#[test]
fn diagnose_tells_what_the_n_jobs_scenario_cost_and_whether_pinning_helped() {
    use vmmtrace::diagnose::Kind;
    let r = experiment_fixture();
    let findings = vmmtrace::experiment::findings::findings(&r);
    let n_jobs: Vec<_> = findings.iter().filter(|f| f.kind == Kind::NJobsSlowdown).collect();
    assert_eq!(n_jobs.len(), 2, "one per workload");
    for f in &n_jobs {
        let s = r
            .summary
            .iter()
            .find(|s| {
                s.scenario.jobs == 2
                    && s.scenario.pinning == vmmtrace::experiment::Pinning::None
                    && s.scenario.workload.name() == f.facts["workload"]
            })
            .unwrap();
        let d = s.slowdown.as_ref().unwrap();
        assert!(f.summary.contains(&format!("{:+.1} %", d.pct)), "{}", f.summary);
        assert!(f.summary.contains("+1.28 % on Linux"), "{}", f.summary);
        assert!(f.summary.contains(&s.top_thieves[0].comm), "the top thief named: {}", f.summary);
        // The largest part is the one that grew most.
        let largest = f.facts["largest_part"].as_str().unwrap();
        let max = d.parts_pp.iter().filter(|(k, _)| *k != "unaccounted").map(|(_, v)| *v).fold(f64::MIN, f64::max);
        assert_eq!(d.parts_pp[largest], max, "{}", f.summary);
        assert!(!f.remedy.is_empty());
    }
    let pinning: Vec<_> = findings.iter().filter(|f| f.kind == Kind::PinningEffect).collect();
    assert_eq!(pinning.len(), 4, "vcpu against none, for 1 and 2 jobs of each workload");
    for f in &pinning {
        let beyond = f.facts["beyond_spread"].as_bool().unwrap();
        let change = f.facts["change_pp"].as_f64().unwrap();
        let err = f.facts["std_error_pp"].as_f64().unwrap();
        assert_eq!(beyond, change.abs() > 2.0 * err);
        assert_eq!(f.summary.contains("no effect beyond the repeats' spread"), !beyond, "{}", f.summary);
    }
    let costs: Vec<u64> = findings.iter().map(|f| f.cost_ns).collect();
    assert!(costs.windows(2).all(|w| w[0] >= w[1]), "most costly first: {costs:?}");
}

//! `vmmtrace report RESULT --out DIR` for an experiment result: the slowdown chart
//! (each scenario's measured slowdown with the spread of its repeats, beside the
//! change of each part of the jobs' account, and the study's figures as marks where
//! the scenario is the study's), written as SVG and PNG with the report's palette,
//! and `DIR/index.html` showing it with the table and the findings.

use std::{fmt::Write as _, path::Path};

use super::{
    decompose::{ScenarioSummary, explain},
    plan::Pinning,
    result::ExperimentResult,
    table::{STUDY_KVM_PCT, STUDY_LINUX_PCT, STUDY_XEN_PCT, study_figure},
};
use crate::{
    diagnose::Finding,
    report::{
        charts::{
            Category, ChartError, ChartFile, Reference, Segment, SignedChart, SignedRow, chart_section, escape,
            write_chart,
        },
        write_atomic,
    },
};

/// The colour and words of a part of a job's account, as the chart groups them: CPU
/// time for the work, VM overhead on the vCPU, and the run-queue wait by thief in the
/// thief's colour (the other jobs' share in the wait's own colour: it is the N-jobs
/// effect the study measured).
pub fn part_category(part: &str) -> (Category, &'static str) {
    match part {
        "on_cpu" | "on_cpu.guest" | "on_cpu.kvm_run" => (Category::GuestOrJob, "CPU time"),
        "on_cpu.exit_handling" | "on_cpu.vmm_user" | "vm_setup" => (Category::VcpuOverhead, "VM overhead"),
        "runq_wait.other_jobs" => (Category::RunqWait, "wait: other jobs"),
        "runq_wait.vmm_own" | "runq_wait.vmm_other_vms" => (Category::VmmThreads, "wait: VMM threads"),
        "runq_wait.host_kernel" => (Category::HostKernel, "wait: host kernel"),
        "runq_wait.idle" | "blocked" => (Category::Idle, "blocked, wake-up"),
        "unaccounted" => (Category::Other, "unaccounted"),
        _ => (Category::Other, "wait: other"),
    }
}

/// Changes under this many points are too small to draw.
const MIN_PP: f64 = 0.05;

/// The components of a slowdown, one per label (parts that share a colour and words
/// summed), largest first.
fn components(parts_pp: &std::collections::BTreeMap<String, f64>) -> Vec<Segment> {
    let mut by: Vec<(Category, &'static str, f64)> = Vec::new();
    for (part, pp) in parts_pp {
        let (category, words) = part_category(part);
        match by.iter_mut().find(|(_, w, _)| *w == words) {
            Some(entry) => entry.2 += pp,
            None => by.push((category, words, *pp)),
        }
    }
    by.retain(|(_, _, pp)| pp.abs() >= MIN_PP);
    by.sort_by(|a, b| b.2.abs().total_cmp(&a.2.abs()));
    by.into_iter()
        .map(|(category, words, pp)| Segment { category, value: pp, label: Some(format!("{words} {pp:+.1}")) })
        .collect()
}

/// The study's figures for the same comparison: N against N-1 jobs unpinned.
fn references(s: &ScenarioSummary, n_cpus: usize) -> Vec<Reference> {
    if s.scenario.jobs != n_cpus || s.scenario.pinning != Pinning::None {
        return Vec::new();
    }
    let mark = |who: &str, pct: f64| Reference { label: format!("study, {who}: +{pct:.2} %"), value: pct };
    if s.scenario.env.is_virtual() {
        vec![mark("KVM", STUDY_KVM_PCT), mark("Xen", STUDY_XEN_PCT)]
    } else {
        vec![mark("Linux", STUDY_LINUX_PCT)]
    }
}

/// The chart: one row per compared scenario.
pub fn slowdown_chart(r: &ExperimentResult) -> SignedChart {
    let n = r.config.plan.cpus.len();
    let rows = r
        .summary
        .iter()
        .filter_map(|s| {
            let d = s.slowdown.as_ref()?;
            Some(SignedRow {
                label: format!(
                    "{} {} {} jobs pin={}: {:+.1} ±{:.1} %",
                    s.scenario.env.name(),
                    s.scenario.workload.name(),
                    s.scenario.jobs,
                    s.scenario.pinning.name(),
                    d.pct,
                    d.std_error_pct
                ),
                measured: d.pct,
                error: d.std_error_pct,
                components: components(&d.parts_pp),
                references: references(s, n),
            })
        })
        .collect();
    SignedChart {
        name: "experiment_slowdown",
        title: format!("Slowdown per job against {} job(s) unpinned, and what it is made of", n.saturating_sub(1)),
        unit: "slowdown of the mean job wall time (%); its parts in percentage points".into(),
        rows,
        notes: vec![
            "Grey bar: the measured slowdown of the mean job wall time; whisker: ± its standard error over the repeats."
                .into(),
            "Coloured bars: the change of each part of the jobs' account (pp of the baseline's wall time); they add up to the grey bar."
                .into(),
            "CPU time in the job colour; waiting for the other jobs in the run-queue wait colour; waiting for others in the thief's."
                .into(),
            format!(
                "Black marks: the study's figure for N against N-1 jobs unpinned (Linux +{STUDY_LINUX_PCT} %, KVM +{STUDY_KVM_PCT} %, Xen +{STUDY_XEN_PCT} %)."
            ),
        ],
    }
}

/// Draws the chart into `dir` (created if needed) and writes `dir/index.html`.
pub fn write_dir(r: &ExperimentResult, findings: &[Finding], dir: &Path) -> Result<Vec<ChartFile>, ChartError> {
    std::fs::create_dir_all(dir).map_err(|source| ChartError::Dir { path: dir.to_path_buf(), source })?;
    let files = vec![write_chart(&crate::report::charts::Chart::Signed(slowdown_chart(r)), dir)?];
    write_atomic(&dir.join("index.html"), index(r, findings, &files).as_bytes())?;
    Ok(files)
}

/// The page: what ran, the chart, the table, what each slowdown is made of, and the
/// findings. Self-contained: no script, no font, the image beside it.
pub fn index(r: &ExperimentResult, findings: &[Finding], charts: &[ChartFile]) -> String {
    let n = r.config.plan.cpus.len();
    let mut s = String::new();
    let title = format!("vmmtrace experiment: {}", r.host.hostname);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{0}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{0}</h1>\n",
        escape(&title)
    );
    let _ = writeln!(
        s,
        "<p>Kernel {}, CPUs {} (N = {n}: {} against {n} jobs), {} repeats, scale {}, {} of {} runs{}.</p>",
        escape(&r.host.kernel),
        escape(&crate::host::format_cpu_list(&r.config.plan.cpus)),
        n.saturating_sub(1),
        r.config.plan.repeat,
        r.config.scale,
        r.runs.len(),
        r.plan.len(),
        if r.complete { "" } else { " (INCOMPLETE)" }
    );
    s.push_str("<h2>Findings</h2>\n<ol class=\"findings\">\n");
    for f in findings {
        let _ = writeln!(s, "<li>{}<br><b>Remedy:</b> {}</li>", escape(&f.summary), escape(&f.remedy));
    }
    s.push_str("</ol>\n");
    for c in charts {
        s.push_str(&chart_section(c));
    }
    table(&mut s, r, n);
    s.push_str("</body>\n</html>\n");
    s
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1040px;color:#222}\
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right;border-bottom:1px solid #ddd}\
td.l,th{text-align:left}img{max-width:100%;height:auto;border:1px solid #ccc}.files{font-size:small}";

/// The summary as a table, and below each compared scenario what it is made of.
fn table(s: &mut String, r: &ExperimentResult, n: usize) {
    s.push_str("<h2>Table</h2>\n<table>\n<tr><th>env</th><th>workload</th><th>jobs</th><th>pinning</th><th>wall (s) ± stddev</th><th>slowdown ± std error</th><th>study</th><th>worst closure</th><th>what it is made of</th></tr>\n");
    for x in &r.summary {
        let slow = match &x.slowdown {
            Some(d) => format!("{:+.2} ± {:.2} %", d.pct, d.std_error_pct),
            None => "baseline".into(),
        };
        let _ = writeln!(
            s,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td><td>{:.3} ± {:.3}</td><td>{}</td><td class=\"l\">{}</td><td>{:.2} %</td><td class=\"l\">{}</td></tr>",
            x.scenario.env.name(),
            x.scenario.workload.name(),
            x.scenario.jobs,
            x.scenario.pinning.name(),
            x.wall_s.mean,
            x.wall_s.stddev,
            slow,
            escape(&study_figure(&x.scenario, n).unwrap_or_default()),
            100.0 * x.closure_error_max_abs,
            escape(&x.slowdown.as_ref().map(explain).unwrap_or_default())
        );
    }
    s.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_that_share_words_are_summed_and_small_changes_left_out() {
        let pp = [
            ("on_cpu", 0.5),
            ("runq_wait.vmm_own", 1.0),
            ("runq_wait.vmm_other_vms", 0.5),
            ("runq_wait.other_jobs", 3.0),
            ("blocked", -0.02),
            ("unaccounted", -0.4),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let c = components(&pp);
        let labels: Vec<&str> = c.iter().map(|s| s.label.as_deref().unwrap()).collect();
        assert_eq!(labels, ["wait: other jobs +3.0", "wait: VMM threads +1.5", "CPU time +0.5", "unaccounted -0.4"]);
        assert_eq!(c[1].category, Category::VmmThreads);
        assert_eq!(c[0].category, Category::RunqWait);
    }
}

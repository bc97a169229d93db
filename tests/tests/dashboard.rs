//! The Grafana dashboard (docs/grafana/vmmtrace-host.json) is valid JSON, its every
//! query is valid PromQL (`promtool check rules`) and names only metrics that
//! `vmmtrace serve` exports (the families its exporter registers).

use std::collections::BTreeSet;

use serde_json::Value;
use vmmtrace::serve::series::{COUNTERS, GAUGES};

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana/vmmtrace-host.json");

fn dashboard() -> Value {
    let text = std::fs::read_to_string(DASHBOARD).unwrap_or_else(|e| panic!("{DASHBOARD}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel's PromQL expression, with Grafana's variables given values.
fn expressions(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().unwrap_or_else(|| panic!("panel {}: a target without expr", p["title"]));
            out.push(e.replace("$__rate_interval", "5m").replace("$instance", ".*"));
        }
    }
    out
}

/// The metric of each `label_values(METRIC, LABEL)` of the templating.
fn variable_metrics(d: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if let Some(q) = v["query"]["query"].as_str() {
            let args = q.strip_prefix("label_values(").and_then(|r| r.strip_suffix(')')).expect("label_values(..)");
            out.push(args.split(',').next().unwrap().trim().to_string());
        }
    }
    out
}

/// Keywords, and the aggregation operators (which may be followed by `by (...)`
/// rather than by their parenthesis).
const KEYWORDS: [&str; 23] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "topk",
    "bottomk",
    "quantile",
    "stddev",
    "stdvar",
    "count_values",
    "group",
];
/// Keywords followed by a list of label names in parentheses.
const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];

/// The metric names in a PromQL expression: identifiers outside label matchers,
/// ranges and grouping lists that are not functions or keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let (mut i, mut depth, mut out) = (0, 0i32, Vec::new());
    let mut skip_group = false;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            '(' if skip_group => {
                // A grouping list: skip to its closing parenthesis.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
                skip_group = false;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += 1;
                }
            }
            c if depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                let start = i;
                while i + 1 < chars.len() && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '_') {
                    i += 1;
                }
                let word: String = chars[start..=i].iter().collect();
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                skip_group = GROUPING.contains(&word.as_str());
                if next != Some(&'(') && !KEYWORDS.contains(&word.as_str()) {
                    out.push(word);
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn every_query_names_only_metrics_that_serve_exports() {
    let d = dashboard();
    let exported: BTreeSet<&str> = COUNTERS.iter().chain(GAUGES.iter()).map(|f| f.name).collect();
    let exprs = expressions(&d);
    assert!(exprs.len() >= 10, "the dashboard has {} queries", exprs.len());
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "no metric in {e}");
        for n in names {
            assert!(exported.contains(n.as_str()), "{n} (in {e}) is not exported by vmmtrace serve: {exported:?}");
            used.insert(n);
        }
    }
    for m in variable_metrics(&d) {
        assert!(exported.contains(m.as_str()), "variable query on {m}, which serve does not export");
    }
    // The overview the issue asks for: guest vs hypervisor, vCPU wait, VMM migrations, exits.
    for needed in [
        "vmmtrace_vm_cpu_seconds_total",
        "vmmtrace_vcpu_runqueue_wait_seconds_total",
        "vmmtrace_vmm_thread_migrations_total",
        "vmmtrace_kvm_exits_total",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
}

#[test]
fn the_metric_name_reader_skips_labels_functions_and_groupings() {
    let e = r#"sum by (vm, vcpu) (rate(a_total{vm="x", role!~"vcpu|vmm"}[5m])) / on (instance) b * 2"#;
    assert_eq!(metric_names(e), vec!["a_total", "b"]);
    assert_eq!(metric_names("topk(10, c)"), vec!["c"]);
}

#[test]
fn every_query_is_valid_promql() {
    let exprs = expressions(&dashboard());
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yml");
    let mut yaml = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        yaml.push_str(&format!("      - record: dashboard:query_{i}\n        expr: '{}'\n", e.replace('\'', "''")));
    }
    std::fs::write(&rules, yaml).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("run promtool: apt-get install prometheus (cargo xtask setup does)");
    assert!(
        out.status.success(),
        "promtool check rules: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

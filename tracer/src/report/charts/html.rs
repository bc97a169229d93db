//! `index.html`: the key numbers and every chart, self-contained (no script, no font,
//! no network: the images are the SVG files beside it, by relative path).

use std::fmt::Write as _;

use super::{ChartFile, palette::Category};
use crate::diagnose::Finding;
use crate::report::{Report, ms, role_name};

pub fn index(r: &Report, findings: &[Finding], charts: &[ChartFile]) -> String {
    let mut s = String::new();
    let title = format!("vmmtrace report: {}", r.host.hostname);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        STYLE,
        escape(&title)
    );
    key_numbers(&mut s, r);
    diagnosis(&mut s, findings);
    legend(&mut s);
    for c in charts {
        s.push_str(&chart_section(c));
    }
    s.push_str("</body>\n</html>\n");
    s
}

/// A chart on a page: its title, the SVG beside the page, links to both files.
pub fn chart_section(c: &ChartFile) -> String {
    let file = c.svg.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let png = c.png.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    format!(
        "<section>\n<h2>{}</h2>\n<img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"{}\">\n<p class=\"files\">{} · {}</p>\n</section>\n",
        escape(&c.title),
        escape(&file),
        c.size.0,
        c.size.1,
        escape(&c.title),
        link(&file),
        link(&png)
    )
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:1040px;color:#222}\
table{border-collapse:collapse}td,th{padding:2px 10px;text-align:right}th{text-align:left}\
img{max-width:100%;height:auto;border:1px solid #ccc}.files{font-size:small}\
.swatch{display:inline-block;width:1em;height:1em;border:1px solid #000;vertical-align:middle;margin:0 4px 0 12px}";

fn link(file: &str) -> String {
    format!("<a href=\"{0}\">{0}</a>", escape(file))
}

/// The trace window, each CPU's busy share, time by role and per VM.
fn key_numbers(s: &mut String, r: &Report) {
    let total = r.wall_ns as f64 * r.cpus.len().max(1) as f64;
    let _ = writeln!(
        s,
        "<p>{:.2} s traced on {} CPUs, kernel {}.{}</p>",
        r.wall_ns as f64 / 1e9,
        r.cpus.len(),
        escape(&r.host.kernel),
        r.command
            .as_ref()
            .map(|c| format!(" Command: <code>{}</code>.", escape(&c.argv.join(" "))))
            .unwrap_or_default()
    );
    s.push_str("<table>\n<tr><th>CPU time</th><th>ms</th><th>share</th></tr>\n");
    for (role, ns) in &r.by_role_ns {
        let _ = writeln!(
            s,
            "<tr><th>{}</th><td>{:.1}</td><td>{:.1} %</td></tr>",
            escape(&role_name(*role)),
            ms(*ns),
            100.0 * *ns as f64 / total
        );
    }
    let idle: u64 = r.cpus.iter().map(|c| c.idle_ns).sum();
    let _ = writeln!(
        s,
        "<tr><th>idle</th><td>{:.1}</td><td>{:.1} %</td></tr>\n</table>",
        ms(idle),
        100.0 * idle as f64 / total
    );
    for vm in &r.vms {
        let _ = writeln!(
            s,
            "<p>VM <b>{}</b> (pid {}): {} vCPUs; inside KVM_RUN {:.1} ms, VMM userspace on vCPU threads {:.1} ms, VMM threads {:.1} ms.</p>",
            escape(&vm.name),
            vm.pid,
            vm.vcpus.len(),
            ms(vm.kvm_run_ns),
            ms(vm.vmm_user_ns),
            ms(vm.vmm_threads_ns)
        );
    }
}

/// The findings of `vmmtrace diagnose`, most costly first.
fn diagnosis(s: &mut String, findings: &[Finding]) {
    s.push_str("<h2>Diagnosis</h2>\n");
    if findings.is_empty() {
        s.push_str("<p>No finding: nothing in this report crosses the default thresholds.</p>\n");
        return;
    }
    s.push_str("<ol class=\"findings\">\n");
    for f in findings {
        let _ = writeln!(s, "<li>{}<br><b>Remedy:</b> {}</li>", escape(&f.summary), escape(&f.remedy));
    }
    s.push_str("</ol>\n");
}

/// The colours, once, for readers of the page.
fn legend(s: &mut String) {
    s.push_str("<p class=\"legend\">");
    for c in Category::ALL {
        let _ =
            write!(s, "<span class=\"swatch\" style=\"background:{}\"></span>{}", c.colour().hex(), escape(c.label()));
    }
    s.push_str("</p>\n");
}

pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(ch),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::charts::fixtures::one_vm_report;

    #[test]
    fn names_are_escaped_and_nothing_is_fetched() {
        let mut r = one_vm_report();
        r.vms[0].name = "<script>".into();
        let html = index(&r, &[], &[]);
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http"));
    }
}

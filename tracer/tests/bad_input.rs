//! Property tests over every parser of outside text: /proc files, tracefs format
//! files, BTF, /proc/kallsyms, CPU lists, durations, capability masks, kernel log
//! lines and report files of older or foreign schemas. Each parser must never panic
//! on any input, and must read back what a well-formed input says.
//!
//! Kept fast for CI (256 cases each, well under a second in all in release and a few
//! seconds in debug): `cargo test -p vmmtrace --test bad_input`.

use proptest::prelude::*;
use vmmtrace::{
    check::{kernel_version, last_kvm_refusal},
    cli::parse_duration,
    host::{format_cpu_list, in_kvm_run, parse_cmdline, parse_cpu_list, parse_stat, parse_status},
    probe::{btf::Btf, kallsyms::symbol_ranges, privileges::parse_cap_eff, tracefs::parse_format},
    report::Report,
};

/// A real report (`vmmtrace record -d 200ms`, trimmed to three threads).
const REPORT_V1: &str = include_str!("data/report-v1.json");

/// A comm as the kernel may show it: up to 15 bytes of anything but NUL and newline,
/// parentheses and spaces included.
fn comm() -> impl Strategy<Value = String> {
    proptest::string::string_regex("[ -~()]{0,15}").unwrap()
}

/// Parses `blob` and, if it parses, asks it every question the probes ask of BTF.
fn query_every_way(blob: Vec<u8>) {
    if let Ok(btf) = Btf::parse(blob) {
        let _ = btf.member_offset("task_struct", "pid");
        let _ = btf.typedef_proto_params("btf_trace_sched_switch");
        let _ = btf.typedef_proto_param_types("btf_trace_sched_switch");
        let _ = btf.has_struct("vcpu_vmx");
    }
}

proptest! {
    #[test]
    fn cpu_lists_never_panic(s in any::<String>()) {
        let _ = parse_cpu_list(&s);
    }

    #[test]
    fn cpu_lists_read_back_what_format_writes(cpus in prop::collection::vec(0u32..5000, 0..64), nl in any::<bool>()) {
        let mut text = format_cpu_list(&cpus);
        if nl {
            text.push('\n');
        }
        let mut want = cpus.clone();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(parse_cpu_list(&text).unwrap(), want);
    }

    #[test]
    fn cpu_list_errors_name_the_input(s in "[0-9,\\- a-z]{1,20}") {
        if let Err(e) = parse_cpu_list(&s) {
            let quoted = format!("{s:?}");
            prop_assert!(e.to_string().contains(&quoted), "{}", e);
        }
    }

    #[test]
    fn stat_never_panics(s in any::<String>()) {
        let _ = parse_stat(&s);
    }

    #[test]
    fn stat_reads_any_comm_and_the_fields_after_it(
        tid in any::<u32>(), comm in comm(), ppid in any::<u32>(), flags in any::<u32>(), gtime in any::<u64>()
    ) {
        let mut fields: Vec<String> = ["S", &ppid.to_string(), "1", "1", "0", "-1", &flags.to_string()]
            .iter().map(|s| s.to_string()).collect();
        fields.resize(40, "0".to_string());
        fields.push(gtime.to_string());
        fields.resize(fields.len() + 8, "0".to_string());
        let text = format!("{tid} ({comm}) {}\n", fields.join(" "));
        let stat = parse_stat(&text).unwrap();
        prop_assert_eq!((stat.tid, stat.comm, stat.ppid, stat.flags), (tid, comm, ppid, flags));
        prop_assert_eq!(stat.guest_time_ticks, Some(gtime));
    }

    #[test]
    fn status_never_panics(s in any::<String>()) {
        let _ = parse_status(&s);
    }

    #[test]
    fn status_reads_name_tgid_and_cpus(name in comm(), tgid in any::<u32>(), cpus in prop::collection::vec(0u32..512, 1..16)) {
        let text = format!("Name:\t{name}\nUmask:\t0022\nTgid:\t{tgid}\nCpus_allowed:\tff\nCpus_allowed_list:\t{}\n", format_cpu_list(&cpus));
        let status = parse_status(&text).unwrap();
        prop_assert_eq!(status.name.as_deref(), Some(name.trim()));
        prop_assert_eq!(status.tgid, Some(tgid));
        let mut want = cpus.clone();
        want.sort_unstable();
        want.dedup();
        prop_assert_eq!(status.cpus_allowed, Some(want));
    }

    #[test]
    fn cmdline_reads_back_its_arguments(args in prop::collection::vec("[^\u{0}]{1,12}", 1..8), bytes in any::<Vec<u8>>()) {
        let mut text = args.join("\0");
        text.push('\0');
        prop_assert_eq!(parse_cmdline(text.as_bytes()), args);
        let _ = parse_cmdline(&bytes);
    }

    #[test]
    fn syscall_lines_never_panic_and_find_kvm_run(s in any::<String>(), fd in any::<u32>(), rest in "( 0x[0-9a-f]{1,16}){0,6}") {
        let _ = in_kvm_run(&s);
        let kvm_run = format!("16 0x{fd:x} 0xae80{rest}");
        prop_assert!(in_kvm_run(&kvm_run));
        let other_ioctl = format!("16 0x{fd:x} 0xae81{rest}");
        prop_assert!(!in_kvm_run(&other_ioctl));
    }

    #[test]
    fn format_files_never_panic(s in any::<String>()) {
        let _ = parse_format(&s);
    }

    #[test]
    fn format_files_give_each_field_its_offset(
        fields in prop::collection::btree_map("[a-z_][a-z0-9_]{0,15}", (any::<u32>(), 1u32..64), 1..12),
        id in any::<u32>()
    ) {
        let mut text = format!("name: some_event\nID: {id}\nformat:\n");
        for (name, (offset, size)) in &fields {
            text.push_str(&format!("\tfield:unsigned long {name}[4];\toffset:{offset};\tsize:{size};\tsigned:0;\n"));
        }
        text.push_str("\nprint fmt: \"x=%d\", REC->x\n");
        let format = parse_format(&text).unwrap();
        prop_assert_eq!(format.id, Some(id));
        for (name, (offset, size)) in &fields {
            prop_assert_eq!(format.fields[name].offset, *offset);
            prop_assert_eq!(format.fields[name].size, *size);
        }
    }

    #[test]
    fn btf_never_panics(bytes in any::<Vec<u8>>(), header in prop::collection::vec(any::<u32>(), 5), body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Btf::parse(bytes);
        // A valid magic and header with arbitrary offsets and types behind it.
        let mut blob = vec![0x9f, 0xeb, 1, 0];
        for h in header {
            blob.extend((h % 1024).to_le_bytes());
        }
        blob.extend(body);
        query_every_way(blob);
    }

    /// The minimal BTF blob with a few bytes changed (the fuzzer found a type id past
    /// the end this way).
    #[test]
    fn damaged_btf_never_panics(changes in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut blob = include_bytes!("data/minimal.btf").to_vec();
        for (at, byte) in changes {
            let i = at.index(blob.len());
            blob[i] = byte;
        }
        query_every_way(blob);
    }

    #[test]
    fn kallsyms_never_panics(s in any::<String>(), addr in any::<u64>()) {
        let _ = symbol_ranges(&s, &["f", "g"]);
        let text = format!("{addr:016x} T f\n");
        let ranges = symbol_ranges(&text, &["f"]);
        prop_assert!(ranges[0] == (0, 0) || ranges[0].0 == addr);
    }

    #[test]
    fn durations_never_panic_and_refuse_what_is_not_positive(s in any::<String>(), neg in 0.0f64..1e6) {
        let _ = parse_duration(&s);
        let e = parse_duration(&format!("-{neg}")).unwrap_err();
        prop_assert!(e.contains("not a positive duration") || e.contains("not a duration"), "{}", e);
    }

    /// A duration that parses is never zero, however small the number.
    #[test]
    fn tiny_durations_are_refused_or_positive(exp in 0u32..200, unit in prop::sample::select(vec!["", "ms", "s", "m", "h"])) {
        if let Ok(d) = parse_duration(&format!("1e-{exp}{unit}")) {
            prop_assert!(!d.is_zero());
        }
    }

    #[test]
    fn whole_milliseconds_read_back(ms in 1u64..86_400_000) {
        prop_assert_eq!(parse_duration(&format!("{ms}ms")).unwrap().as_millis() as u64, ms);
    }

    #[test]
    fn small_parsers_never_panic(s in any::<String>()) {
        let _ = parse_cap_eff(&s);
        let _ = kernel_version(&s);
        let _ = last_kvm_refusal(&s);
    }

    #[test]
    fn report_files_never_panic(s in any::<String>()) {
        let _ = Report::from_json(&s);
    }

    #[test]
    fn foreign_schemas_are_refused_by_name(schema in "[a-z]{1,8}/[0-9]{1,3}") {
        prop_assume!(schema != "vmmtrace/1");
        let text = REPORT_V1.replacen("\"vmmtrace/1\"", &format!("{schema:?}"), 1);
        let e = Report::from_json(&text).unwrap_err().to_string();
        prop_assert!(e.contains(&schema), "{}", e);
    }

    /// A report of an older or damaged writer: any one field removed, or its value
    /// replaced, gives a report or an error, never a panic.
    #[test]
    fn damaged_reports_never_panic(which in any::<prop::sample::Index>(), value in prop_oneof![
        Just(serde_json::Value::Null), Just(serde_json::json!(-1)), Just(serde_json::json!("x")),
        Just(serde_json::json!([])), Just(serde_json::json!({})), Just(serde_json::json!(u64::MAX))
    ], remove in any::<bool>()) {
        let mut v: serde_json::Value = serde_json::from_str(REPORT_V1).unwrap();
        let paths = leaf_paths(&v, String::new());
        let path = which.get(&paths);
        if remove {
            remove_at(&mut v, path);
        } else if let Some(slot) = v.pointer_mut(path) {
            *slot = value;
        }
        if let Ok(r) = Report::from_json(&v.to_string()) {
            let _ = vmmtrace::report::render_text(&r, 5);
        }
    }
}

/// The input cargo-fuzz found: ranges that each pass join into one that did not.
#[test]
fn joined_ranges_read_back() {
    let cpus = parse_cpu_list("661-65000,65001-69116").unwrap_or_default();
    assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).unwrap_or_default(), cpus);
}

#[test]
fn the_highest_address_ends_its_own_range() {
    assert_eq!(symbol_ranges("ffffffffffffffff T f\n", &["f"]), vec![(u64::MAX, u64::MAX)]);
}

proptest! {
    // Lists of up to ~100,000 CPUs: few cases, to stay fast in a debug build.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// What parses reads back the same once formatted, also where ranges join into
    /// one (cargo-fuzz found a list where they did not).
    #[test]
    fn parsed_cpu_lists_survive_a_format_round_trip(start in 0u32..100_000, pieces in prop::collection::vec((0u32..2, 20_000u32..33_000), 3)) {
        let mut text = Vec::new();
        let mut next = start;
        for (gap, len) in pieces {
            let first = next + gap;
            text.push(format!("{first}-{}", first + len));
            next = first + len + 1;
        }
        if let Ok(cpus) = parse_cpu_list(&text.join(",")) {
            prop_assert_eq!(parse_cpu_list(&format_cpu_list(&cpus)).unwrap(), cpus);
        }
    }
}

/// A hand-made BTF blob (tests/data/minimal.btf, also the fuzzer's seed): `int`,
/// `struct task_struct { int; int pid; }` and the typedef of a 5-argument
/// `btf_trace_sched_switch` prototype.
#[test]
fn the_minimal_btf_gives_what_the_probes_need() {
    let btf = Btf::parse(include_bytes!("data/minimal.btf").to_vec()).unwrap();
    assert_eq!(btf.member_offset("task_struct", "pid").unwrap(), 4);
    assert_eq!(btf.typedef_proto_params("btf_trace_sched_switch").unwrap(), 5);
}

#[test]
fn the_fixture_is_a_report() {
    let r = Report::from_json(REPORT_V1).unwrap();
    assert_eq!(r.threads.len(), 3);
}

/// JSON pointers of every value under `v` (the fields a damaged report may lack).
fn leaf_paths(v: &serde_json::Value, at: String) -> Vec<String> {
    let mut out = vec![at.clone()];
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.extend(leaf_paths(x, format!("{at}/{k}")));
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                out.extend(leaf_paths(x, format!("{at}/{i}")));
            }
        }
        _ => {}
    }
    out
}

fn remove_at(v: &mut serde_json::Value, path: &str) {
    let Some((parent, key)) = path.rsplit_once('/') else { return };
    match v.pointer_mut(parent) {
        Some(serde_json::Value::Object(m)) => {
            m.remove(key);
        }
        Some(serde_json::Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}

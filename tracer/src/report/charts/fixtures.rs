//! A small report made by hand for the pure unit tests of the chart builders (the
//! drawing tests read reports recorded on a real host: tests/fixtures/).

use serde_json::json;

use crate::report::Report;

const MS: u64 = 1_000_000;

/// 1 s on 2 CPUs: VM "web" with vCPU 0 (tid 101, pinned to CPU 1: 400 ms guest,
/// 50 ms exit handling, 50 ms VMM userspace) and its emulator thread (tid 102, 150 ms
/// over both CPUs), a job thread (tid 300, 400 ms on CPU 0) and a kworker (50 ms).
pub fn one_vm_report() -> Report {
    let thread = |tid: u32, comm: &str, role: &str, per_cpu: [u64; 2]| {
        json!({"tid": tid, "pid": if tid < 200 { 100 } else { tid }, "comm": comm, "role": role,
               "vcpu": null, "vm": null, "on_cpu_ns": per_cpu[0] + per_cpu[1], "per_cpu_ns": per_cpu,
               "switches": 10, "involuntary_switches": 5, "migrations": 2})
    };
    let vcpu = json!({"index": 0, "tid": 101, "comm": "CPU 0/KVM", "on_cpu_ns": 500 * MS,
        "kvm_run_ns": 450 * MS, "vmm_user_ns": 50 * MS, "guest_ns": 400 * MS, "exit_handling_ns": 50 * MS,
        "split_unavailable": null, "guest_estimate": null, "samples_guest": 0, "samples_host_kvm": 0,
        "userspace_exits": {"KVM_EXIT_IO": 200},
        "exits": {
            "HLT": {"count": 1000, "completed": 1000, "latency_ns": 0, "latency_hist_log2": [], "guest_idle": true},
            "IO_INSTRUCTION": {"count": 500, "completed": 500, "latency_ns": 0,
                "latency_hist_log2": [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 300, 0, 0, 200], "guest_idle": false}
        },
        "kvm_events": {}, "switches": 10, "involuntary_switches": 5, "migrations": 0, "affinity": [1], "pinned": true});
    let report = json!({
        "schema": crate::report::SCHEMA, "wall_ns": 1000 * MS, "started_unix_s": 0,
        "host": {"hostname": "test", "cpus": 2, "kernel": "6.18",
                 "features": {"sched_switch": "tp_btf", "attached": [], "unavailable": []}},
        "command": null,
        "cpus": [{"cpu": 0, "busy_ns": 550 * MS, "idle_ns": 450 * MS}, {"cpu": 1, "busy_ns": 550 * MS, "idle_ns": 450 * MS}],
        "threads": [
            thread(101, "CPU 0/KVM", "vcpu", [0, 500 * MS]),
            thread(300, "bzip2", "workload", [400 * MS, 0]),
            thread(102, "qemu-system-x86", "vmm", [100 * MS, 50 * MS]),
            thread(10, "kworker/0:1", "host_kernel", [50 * MS, 0]),
        ],
        "by_role_ns": {"vcpu": 500 * MS, "workload": 400 * MS, "vmm": 150 * MS, "host_kernel": 50 * MS},
        "vms": [{"name": "web", "pid": 100, "kind": "qemu", "vcpus": [vcpu],
                 "vmm_threads": [{"tid": 102, "comm": "qemu-system-x86", "on_cpu_ns": 150 * MS, "migrations": 2,
                                  "affinity": [0, 1], "pinned": false}],
                 "vmm_threads_ns": 150 * MS, "kvm_run_ns": 450 * MS, "vmm_user_ns": 50 * MS}],
        "dropped_events": 0, "events": {}
    });
    Report::from_json(&report.to_string()).expect("the hand-made report parses")
}

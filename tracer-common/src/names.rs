//! Names of the maps and programs of the eBPF object, used by both sides: userspace
//! finds them by these names, and the eBPF crate fails to build if a map or program
//! is named otherwise ([`crate::assert_named!`]: aya-ebpf's `#[map(name = ...)]` and
//! program macros take string literals only, so the constant cannot be passed there).

/// Maps (`#[map]` statics of `tracer-ebpf/src/maps.rs`).
pub mod map {
    pub const CONFIG: &str = "CONFIG";
    pub const CPU_STATE: &str = "CPU_STATE";
    pub const THREAD_STATS: &str = "THREAD_STATS";
    pub const THREAD_INFO: &str = "THREAD_INFO";
    pub const WATCH: &str = "WATCH";
    pub const VCPU_STATE: &str = "VCPU_STATE";
    pub const VCPU_EXITS: &str = "VCPU_EXITS";
    pub const USERSPACE_EXITS: &str = "USERSPACE_EXITS";
    pub const KVM_EVENTS: &str = "KVM_EVENTS";
    pub const GUEST_SAMPLES: &str = "GUEST_SAMPLES";
    pub const COUNTERS: &str = "COUNTERS";
    pub const THREAD_SCHED: &str = "THREAD_SCHED";
    pub const THREAD_SCHED_BY_TID: &str = "THREAD_SCHED_BY_TID";
    pub const CPU_HISTORY: &str = "CPU_HISTORY";
    pub const LEDGER: &str = "LEDGER";
    pub const PAIR_CACHE: &str = "PAIR_CACHE";
    pub const TIMELINE: &str = "TIMELINE";
    pub const EXITED: &str = "EXITED";
}

/// Programs (the functions of `tracer-ebpf`).
pub mod program {
    pub const SCHED_SWITCH_BTF: &str = "sched_switch_btf";
    pub const SCHED_SWITCH_TP: &str = "sched_switch_tp";
    pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
    pub const SCHED_PROCESS_FORK: &str = "sched_process_fork";
    pub const SCHED_PROCESS_EXEC: &str = "sched_process_exec";
    pub const TASK_RENAME: &str = "task_rename";
    pub const SYS_ENTER_IOCTL: &str = "sys_enter_ioctl";
    pub const SYS_EXIT_IOCTL: &str = "sys_exit_ioctl";
    pub const KVM_ENTRY: &str = "kvm_entry";
    pub const KVM_EXIT: &str = "kvm_exit";
    pub const KVM_USERSPACE_EXIT: &str = "kvm_userspace_exit";
    pub const GUEST_SAMPLE: &str = "guest_sample";
    pub const SCHED_WAKEUP_BTF: &str = "sched_wakeup_btf";
    pub const SCHED_WAKEUP_NEW_BTF: &str = "sched_wakeup_new_btf";
    pub const SCHED_WAKEUP_TP: &str = "sched_wakeup_tp";
    pub const SCHED_WAKEUP_NEW_TP: &str = "sched_wakeup_new_tp";
    pub const SCHED_PROCESS_EXIT_BTF: &str = "sched_process_exit_btf";
    pub const SCHED_PROCESS_EXIT_TP: &str = "sched_process_exit_tp";
    /// One program per counted KVM event slot (`KVM_EVENTS` keys carry the slot).
    pub const KVM_EVENT: [&str; 8] = [
        "kvm_event_0",
        "kvm_event_1",
        "kvm_event_2",
        "kvm_event_3",
        "kvm_event_4",
        "kvm_event_5",
        "kvm_event_6",
        "kvm_event_7",
    ];
    pub const KVM_ENTRY_BTF: &str = "kvm_entry_btf";
    pub const KVM_EXIT_BTF: &str = "kvm_exit_btf";
    pub const KVM_USERSPACE_EXIT_BTF: &str = "kvm_userspace_exit_btf";
    /// The tp_btf twins of `KVM_EVENT`, slot for slot.
    pub const KVM_EVENT_BTF: [&str; 8] = [
        "kvm_event_btf_0",
        "kvm_event_btf_1",
        "kvm_event_btf_2",
        "kvm_event_btf_3",
        "kvm_event_btf_4",
        "kvm_event_btf_5",
        "kvm_event_btf_6",
        "kvm_event_btf_7",
    ];
}

/// `a == b`, usable in a `const` (str's `==` is not const yet).
pub const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Fails the build unless the item `$item` is named `$name`.
#[macro_export]
macro_rules! assert_named {
    ($item:ident, $name:expr) => {
        const _: () = assert!($crate::names::same(stringify!($item), $name), "renamed: update tracer_common::names");
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_bytes() {
        assert!(same("CONFIG", map::CONFIG));
        assert!(!same("CONFIG", "CONFIGS"));
        assert!(!same("kvm_event_1", program::KVM_EVENT[0]));
    }

    assert_named!(kvm_event_7, program::KVM_EVENT[7]);
}

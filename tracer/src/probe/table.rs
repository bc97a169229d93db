//! Policy: which classic tracepoints the probes use, which program each runs, the
//! record fields it reads, and what happens when the kernel lacks it. The mechanism
//! that follows these tables is in `attach.rs`.

use tracer_common::{names::program, tp_off};

/// A field of a tracepoint record that a program reads, and its slot in the
/// `TP_OFFSETS` global.
pub struct FieldSlot {
    pub field: &'static str,
    pub slot: usize,
}

/// What a missing or failing tracepoint does to tracing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Tracing cannot work without it: `attach` fails with the reason.
    Required,
    /// Used when the kernel has it; silently left out when it does not. Failing to
    /// read or attach an existing one is an error.
    IfPresent,
    /// Left out with a reason in `features.unavailable`; tracing goes on.
    Optional,
}

/// Which option turns a tracepoint on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    /// Always attached.
    Sched,
    /// Attached unless `--no-kvm`.
    Kvm,
    /// Attached unless `--no-ledger`, and only where sched_switch is the classic
    /// tracepoint: with tp_btf sched_switch, the programs of [`LEDGER_BTF`] run instead.
    Ledger,
    /// Always attached (it retires exited threads from the maps), as the classic
    /// tracepoint only where sched_switch is one too: with tp_btf sched_switch,
    /// [`EXIT_BTF`] runs instead.
    Exit,
}

/// One classic tracepoint and the program attached to it.
pub struct TracepointRow {
    pub category: &'static str,
    pub name: &'static str,
    /// Program name in the eBPF object (`tracer_common::names::program`).
    pub program: &'static str,
    pub fields: &'static [FieldSlot],
    pub need: Need,
    pub group: Group,
    /// kvm_entry and kvm_exit: without both, KVM_RUN time cannot be split into guest
    /// mode and exit handling.
    pub splits_kvm_run: bool,
}

impl TracepointRow {
    /// "category:name", as the report lists probes.
    pub fn probe(&self) -> String {
        format!("{}:{}", self.category, self.name)
    }
}

const fn sched(name: &'static str, program: &'static str, fields: &'static [FieldSlot]) -> TracepointRow {
    TracepointRow {
        category: "sched",
        name,
        program,
        fields,
        need: Need::Required,
        group: Group::Sched,
        splits_kvm_run: false,
    }
}

const fn kvm(
    category: &'static str,
    name: &'static str,
    program: &'static str,
    fields: &'static [FieldSlot],
) -> TracepointRow {
    TracepointRow { category, name, program, fields, need: Need::Optional, group: Group::Kvm, splits_kvm_run: false }
}

/// Every classic tracepoint with a program of its own, in the order they are read
/// and attached. The classic sched_switch is attached only where tp_btf is not
/// usable, but its layout is always read.
pub const TRACEPOINTS: &[TracepointRow] = &[
    sched(
        "sched_switch",
        program::SCHED_SWITCH_TP,
        &[
            FieldSlot { field: "prev_state", slot: tp_off::SWITCH_PREV_STATE },
            FieldSlot { field: "next_pid", slot: tp_off::SWITCH_NEXT_PID },
        ],
    ),
    sched(
        "sched_migrate_task",
        program::SCHED_MIGRATE_TASK,
        &[
            FieldSlot { field: "pid", slot: tp_off::MIGRATE_PID },
            FieldSlot { field: "dest_cpu", slot: tp_off::MIGRATE_DEST_CPU },
        ],
    ),
    TracepointRow {
        group: Group::Ledger,
        ..sched("sched_wakeup", program::SCHED_WAKEUP_TP, &[FieldSlot { field: "pid", slot: tp_off::WAKEUP_PID }])
    },
    TracepointRow {
        group: Group::Ledger,
        ..sched(
            "sched_wakeup_new",
            program::SCHED_WAKEUP_NEW_TP,
            &[FieldSlot { field: "pid", slot: tp_off::WAKEUP_NEW_PID }],
        )
    },
    sched(
        "sched_process_fork",
        program::SCHED_PROCESS_FORK,
        &[
            FieldSlot { field: "parent_pid", slot: tp_off::FORK_PARENT_PID },
            FieldSlot { field: "child_pid", slot: tp_off::FORK_CHILD_PID },
        ],
    ),
    sched("sched_process_exec", program::SCHED_PROCESS_EXEC, &[]),
    TracepointRow { group: Group::Exit, ..sched("sched_process_exit", program::SCHED_PROCESS_EXIT_TP, &[]) },
    TracepointRow {
        category: "task",
        need: Need::IfPresent,
        ..sched(
            "task_rename",
            program::TASK_RENAME,
            &[
                FieldSlot { field: "pid", slot: tp_off::RENAME_PID },
                FieldSlot { field: "newcomm", slot: tp_off::RENAME_NEWCOMM },
            ],
        )
    },
    kvm(
        "syscalls",
        "sys_enter_ioctl",
        program::SYS_ENTER_IOCTL,
        &[FieldSlot { field: "cmd", slot: tp_off::IOCTL_CMD }],
    ),
    kvm("syscalls", "sys_exit_ioctl", program::SYS_EXIT_IOCTL, &[]),
    TracepointRow {
        splits_kvm_run: true,
        ..kvm(
            "kvm",
            "kvm_exit",
            program::KVM_EXIT,
            &[
                FieldSlot { field: "exit_reason", slot: tp_off::KVM_EXIT_REASON },
                FieldSlot { field: "isa", slot: tp_off::KVM_EXIT_ISA },
            ],
        )
    },
    TracepointRow { splits_kvm_run: true, ..kvm("kvm", "kvm_entry", program::KVM_ENTRY, &[]) },
    kvm(
        "kvm",
        "kvm_userspace_exit",
        program::KVM_USERSPACE_EXIT,
        &[FieldSlot { field: "reason", slot: tp_off::KVM_USERSPACE_EXIT_REASON }],
    ),
];

/// An in-kernel KVM event counted per thread where kvm_entry/kvm_exit don't fire.
/// Slot i runs program `names::program::KVM_EVENT[i]`.
pub struct KvmEventSlot {
    pub category: &'static str,
    pub name: &'static str,
}

/// The KVM events of the slots, in slot order (at most `program::KVM_EVENT.len()`).
pub const KVM_EVENT_SLOTS: &[KvmEventSlot] = &[
    KvmEventSlot { category: "kvm", name: "kvm_pio" },
    KvmEventSlot { category: "kvm", name: "kvm_mmio" },
    KvmEventSlot { category: "kvm", name: "kvm_msr" },
    KvmEventSlot { category: "kvm", name: "kvm_apic_accept_irq" },
    KvmEventSlot { category: "kvm", name: "kvm_vcpu_wakeup" },
    KvmEventSlot { category: "kvm", name: "kvm_emulate_insn" },
    KvmEventSlot { category: "kvm", name: "kvm_eoi" },
    KvmEventSlot { category: "kvmmmu", name: "kvm_mmu_set_spte" },
];

const _: () = assert!(KVM_EVENT_SLOTS.len() <= program::KVM_EVENT.len());

/// The ledger's tp_btf programs and the tracepoints they attach to, used with tp_btf
/// sched_switch (they read the task's pid from its `task_struct`).
pub const LEDGER_BTF: [(&str, &str); 2] =
    [(program::SCHED_WAKEUP_BTF, "sched_wakeup"), (program::SCHED_WAKEUP_NEW_BTF, "sched_wakeup_new")];

/// The exit probe's tp_btf program and tracepoint, used with tp_btf sched_switch.
pub const EXIT_BTF: (&str, &str) = (program::SCHED_PROCESS_EXIT_BTF, "sched_process_exit");
/// What `check` and the report's `attached` list where tp_btf sched_switch infers
/// wakeups from the kernel's sched_info instead of a sched_wakeup program.
pub const WAKELESS_PROBE: &str =
    "tp_btf:sched_switch reads the kernel's sched_info (wakeups inferred at switch-in, no sched_wakeup program)";

/// The probe listed when `--no-ledger` leaves out the run-queue states and the ledger.
pub const NO_LEDGER_PROBE: &str = "sched:sched_wakeup, sched:sched_wakeup_new (run-queue wait and ledger)";

/// The probe listed when `--no-kvm` leaves out every KVM probe.
pub const NO_KVM_PROBE: &str = "syscalls:sys_enter_ioctl, kvm:*";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_slot_is_used_once() {
        let mut slots: Vec<usize> = TRACEPOINTS.iter().flat_map(|r| r.fields.iter().map(|f| f.slot)).collect();
        slots.sort_unstable();
        assert_eq!(slots, (0..tp_off::COUNT).collect::<Vec<_>>());
    }

    #[test]
    fn the_split_needs_kvm_entry_and_kvm_exit() {
        let split: Vec<String> = TRACEPOINTS.iter().filter(|r| r.splits_kvm_run).map(TracepointRow::probe).collect();
        assert_eq!(split, ["kvm:kvm_exit", "kvm:kvm_entry"]);
    }
}

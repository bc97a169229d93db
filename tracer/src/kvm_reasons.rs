//! KVM exit reason names (VMX, SVM, userspace exits).
//!
//! The tables are the ones the kernel prints for the `kvm:kvm_exit` and
//! `kvm:kvm_userspace_exit` tracepoints (see
//! `/sys/kernel/tracing/events/kvm/{kvm_exit,kvm_userspace_exit}/format`), so a name
//! in a vmmtrace report is the same string `perf script` or `trace-cmd` would show.
//! The tables were taken from kernel 6.18's format files; the unit tests check them
//! entry by entry against a copy of those print fmts, and against the live format
//! files when tracefs is mounted.
//!
//! * VMX: the tracepoint's `exit_reason` is the full VMCS exit reason; the basic
//!   reason is `exit_reason & 0xffff` and bit 31 (`0x8000_0000`) means the VM entry
//!   failed (`FAILED_VMENTRY`).
//! * SVM: the tracepoint's `exit_reason` is the VMCB exit code, used as is
//!   (`0x40 + n` are exception intercepts, `0x400` is a nested page fault, the
//!   `0x8000_00xx` codes are SEV-ES `vmgexit` sub-reasons).
//! * Userspace exits: `kvm_run.exit_reason` (`KVM_EXIT_*`), as returned to the VMM
//!   by `ioctl(KVM_RUN)`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The `isa` field of the `kvm:kvm_exit` tracepoint.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u32)]
pub enum Isa {
    /// Intel VT-x.
    Vmx = 1,
    /// AMD-V.
    Svm = 2,
}

impl Isa {
    /// The tracepoint's `isa` value (1 VMX, 2 SVM); `None` for anything else.
    pub fn from_u32(isa: u32) -> Option<Isa> {
        match isa {
            1 => Some(Isa::Vmx),
            2 => Some(Isa::Svm),
            _ => None,
        }
    }
}

/// VMX: flag in the full exit reason saying the VM entry failed.
pub const VMX_EXIT_REASON_FAILED_VMENTRY: u32 = 0x8000_0000;
/// VMX basic exit reason of `HLT`.
pub const VMX_EXIT_REASON_HLT: u32 = 12;
/// SVM exit code of `hlt`.
pub const SVM_EXIT_HLT: u32 = 0x078;
/// SVM exit code of `idle-halt` (HLT with no pending interrupt, newer AMD CPUs).
pub const SVM_EXIT_IDLE_HLT: u32 = 0x0a6;

/// VMX basic exit reasons, as printed by `kvm:kvm_exit` (`VMX_EXIT_REASONS`).
const VMX_EXIT_REASONS: &[(u32, &str)] = &[
    (0, "EXCEPTION_NMI"),
    (1, "EXTERNAL_INTERRUPT"),
    (2, "TRIPLE_FAULT"),
    (3, "INIT_SIGNAL"),
    (4, "SIPI_SIGNAL"),
    (7, "INTERRUPT_WINDOW"),
    (8, "NMI_WINDOW"),
    (9, "TASK_SWITCH"),
    (10, "CPUID"),
    (12, "HLT"),
    (13, "INVD"),
    (14, "INVLPG"),
    (15, "RDPMC"),
    (16, "RDTSC"),
    (18, "VMCALL"),
    (19, "VMCLEAR"),
    (20, "VMLAUNCH"),
    (21, "VMPTRLD"),
    (22, "VMPTRST"),
    (23, "VMREAD"),
    (24, "VMRESUME"),
    (25, "VMWRITE"),
    (26, "VMOFF"),
    (27, "VMON"),
    (28, "CR_ACCESS"),
    (29, "DR_ACCESS"),
    (30, "IO_INSTRUCTION"),
    (31, "MSR_READ"),
    (32, "MSR_WRITE"),
    (33, "INVALID_STATE"),
    (34, "MSR_LOAD_FAIL"),
    (36, "MWAIT_INSTRUCTION"),
    (37, "MONITOR_TRAP_FLAG"),
    (39, "MONITOR_INSTRUCTION"),
    (40, "PAUSE_INSTRUCTION"),
    (41, "MCE_DURING_VMENTRY"),
    (43, "TPR_BELOW_THRESHOLD"),
    (44, "APIC_ACCESS"),
    (45, "EOI_INDUCED"),
    (46, "GDTR_IDTR"),
    (47, "LDTR_TR"),
    (48, "EPT_VIOLATION"),
    (49, "EPT_MISCONFIG"),
    (50, "INVEPT"),
    (51, "RDTSCP"),
    (52, "PREEMPTION_TIMER"),
    (53, "INVVPID"),
    (54, "WBINVD"),
    (55, "XSETBV"),
    (56, "APIC_WRITE"),
    (57, "RDRAND"),
    (58, "INVPCID"),
    (59, "VMFUNC"),
    (60, "ENCLS"),
    (61, "RDSEED"),
    (62, "PML_FULL"),
    (63, "XSAVES"),
    (64, "XRSTORS"),
    (67, "UMWAIT"),
    (68, "TPAUSE"),
    (74, "BUS_LOCK"),
    (75, "NOTIFY"),
    (77, "TDCALL"),
    (84, "MSR_READ_IMM"),
    (85, "MSR_WRITE_IMM"),
];

/// SVM exit codes, as printed by `kvm:kvm_exit` (`SVM_EXIT_REASONS`).
const SVM_EXIT_REASONS: &[(u32, &str)] = &[
    (0x000, "read_cr0"),
    (0x002, "read_cr2"),
    (0x003, "read_cr3"),
    (0x004, "read_cr4"),
    (0x008, "read_cr8"),
    (0x010, "write_cr0"),
    (0x012, "write_cr2"),
    (0x013, "write_cr3"),
    (0x014, "write_cr4"),
    (0x018, "write_cr8"),
    (0x020, "read_dr0"),
    (0x021, "read_dr1"),
    (0x022, "read_dr2"),
    (0x023, "read_dr3"),
    (0x024, "read_dr4"),
    (0x025, "read_dr5"),
    (0x026, "read_dr6"),
    (0x027, "read_dr7"),
    (0x030, "write_dr0"),
    (0x031, "write_dr1"),
    (0x032, "write_dr2"),
    (0x033, "write_dr3"),
    (0x034, "write_dr4"),
    (0x035, "write_dr5"),
    (0x036, "write_dr6"),
    (0x037, "write_dr7"),
    (0x040, "DE excp"),
    (0x041, "DB excp"),
    (0x043, "BP excp"),
    (0x044, "OF excp"),
    (0x045, "BR excp"),
    (0x046, "UD excp"),
    (0x047, "NM excp"),
    (0x048, "DF excp"),
    (0x04a, "TS excp"),
    (0x04b, "NP excp"),
    (0x04c, "SS excp"),
    (0x04d, "GP excp"),
    (0x04e, "PF excp"),
    (0x050, "MF excp"),
    (0x051, "AC excp"),
    (0x052, "MC excp"),
    (0x053, "XF excp"),
    (0x060, "interrupt"),
    (0x061, "nmi"),
    (0x062, "smi"),
    (0x063, "init"),
    (0x064, "vintr"),
    (0x065, "cr0_sel_write"),
    (0x066, "read_idtr"),
    (0x067, "read_gdtr"),
    (0x068, "read_ldtr"),
    (0x069, "read_rt"),
    (0x06a, "write_idtr"),
    (0x06b, "write_gdtr"),
    (0x06c, "write_ldtr"),
    (0x06d, "write_rt"),
    (0x06e, "rdtsc"),
    (0x06f, "rdpmc"),
    (0x070, "pushf"),
    (0x071, "popf"),
    (0x072, "cpuid"),
    (0x073, "rsm"),
    (0x074, "iret"),
    (0x075, "swint"),
    (0x076, "invd"),
    (0x077, "pause"),
    (0x078, "hlt"),
    (0x079, "invlpg"),
    (0x07a, "invlpga"),
    (0x07b, "io"),
    (0x07c, "msr"),
    (0x07d, "task_switch"),
    (0x07e, "ferr_freeze"),
    (0x07f, "shutdown"),
    (0x080, "vmrun"),
    (0x081, "hypercall"),
    (0x082, "vmload"),
    (0x083, "vmsave"),
    (0x084, "stgi"),
    (0x085, "clgi"),
    (0x086, "skinit"),
    (0x087, "rdtscp"),
    (0x088, "icebp"),
    (0x089, "wbinvd"),
    (0x08a, "monitor"),
    (0x08b, "mwait"),
    (0x08d, "xsetbv"),
    (0x08f, "write_efer_trap"),
    (0x090, "write_cr0_trap"),
    (0x094, "write_cr4_trap"),
    (0x098, "write_cr8_trap"),
    (0x0a2, "invpcid"),
    (0x0a5, "buslock"),
    (0x0a6, "idle-halt"),
    (0x400, "npf"),
    (0x401, "avic_incomplete_ipi"),
    (0x402, "avic_unaccelerated_access"),
    (0x403, "vmgexit"),
    (0x8000_0001, "vmgexit_mmio_read"),
    (0x8000_0002, "vmgexit_mmio_write"),
    (0x8000_0003, "vmgexit_nmi_complete"),
    (0x8000_0004, "vmgexit_ap_hlt_loop"),
    (0x8000_0005, "vmgexit_ap_jump_table"),
    (0x8000_0010, "vmgexit_page_state_change"),
    (0x8000_0011, "vmgexit_guest_request"),
    (0x8000_0012, "vmgexit_ext_guest_request"),
    (0x8000_0013, "vmgexit_ap_creation"),
    (0x8000_fffd, "vmgexit_hypervisor_feature"),
    (0xffff_ffff, "invalid_guest_state"),
];

/// `KVM_EXIT_*` userspace exit reasons. 0..=30 are the ones the `kvm_userspace_exit`
/// tracepoint prints (with a `KVM_EXIT_` prefix); 31.. come from `<linux/kvm.h>`
/// (31..=37 as in Linux 6.1's uapi header, 38..=40 from later kernels).
const USERSPACE_EXIT_REASONS: &[(u32, &str)] = &[
    (0, "UNKNOWN"),
    (1, "EXCEPTION"),
    (2, "IO"),
    (3, "HYPERCALL"),
    (4, "DEBUG"),
    (5, "HLT"),
    (6, "MMIO"),
    (7, "IRQ_WINDOW_OPEN"),
    (8, "SHUTDOWN"),
    (9, "FAIL_ENTRY"),
    (10, "INTR"),
    (11, "SET_TPR"),
    (12, "TPR_ACCESS"),
    (13, "S390_SIEIC"),
    (14, "S390_RESET"),
    (15, "DCR"),
    (16, "NMI"),
    (17, "INTERNAL_ERROR"),
    (18, "OSI"),
    (19, "PAPR_HCALL"),
    (20, "S390_UCONTROL"),
    (21, "WATCHDOG"),
    (22, "S390_TSCH"),
    (23, "EPR"),
    (24, "SYSTEM_EVENT"),
    (25, "S390_STSI"),
    (26, "IOAPIC_EOI"),
    (27, "HYPERV"),
    (28, "ARM_NISV"),
    (29, "X86_RDMSR"),
    (30, "X86_WRMSR"),
    (31, "DIRTY_RING_FULL"),
    (32, "AP_RESET_HOLD"),
    (33, "X86_BUS_LOCK"),
    (34, "XEN"),
    (35, "RISCV_SBI"),
    (36, "RISCV_CSR"),
    (37, "NOTIFY"),
    (38, "LOONGARCH_IOCSR"),
    (39, "MEMORY_FAULT"),
    (40, "TDX"),
];

fn lookup(table: &'static [(u32, &'static str)], value: u32) -> Option<&'static str> {
    table.iter().find(|(v, _)| *v == value).map(|(_, name)| *name)
}

/// The VMX basic exit reason (`exit_reason & 0xffff`).
pub fn vmx_basic_reason(exit_reason: u32) -> u32 {
    exit_reason & 0xffff
}

/// True if this is a VMX exit reason with the `FAILED_VMENTRY` bit set.
/// Always false for SVM (its codes are not flag words).
pub fn is_failed_vmentry(isa: Isa, exit_reason: u32) -> bool {
    isa == Isa::Vmx && exit_reason & VMX_EXIT_REASON_FAILED_VMENTRY != 0
}

/// The name the kernel's `kvm:kvm_exit` tracepoint prints for this exit reason.
///
/// VMX: the basic reason's name, followed by `" FAILED_VMENTRY"` when bit 31 is set
/// and by the remaining flag bits in hex if any other high bit is set
/// (e.g. `"INVALID_STATE FAILED_VMENTRY"`). Unknown reasons give `"unknown(0x..)"`
/// (the basic reason for VMX, the full code for SVM).
pub fn exit_reason_name(isa: Isa, exit_reason: u32) -> Cow<'static, str> {
    match isa {
        Isa::Vmx => {
            let basic = vmx_basic_reason(exit_reason);
            let flags = exit_reason & !0xffff;
            let base: Cow<'static, str> = match lookup(VMX_EXIT_REASONS, basic) {
                Some(name) => Cow::Borrowed(name),
                None => Cow::Owned(format!("unknown(0x{basic:x})")),
            };
            if flags == 0 {
                return base;
            }
            let mut name = base.into_owned();
            if flags & VMX_EXIT_REASON_FAILED_VMENTRY != 0 {
                name.push_str(" FAILED_VMENTRY");
            }
            let other = flags & !VMX_EXIT_REASON_FAILED_VMENTRY;
            if other != 0 {
                name.push_str(&format!(" 0x{other:x}"));
            }
            Cow::Owned(name)
        }
        Isa::Svm => match lookup(SVM_EXIT_REASONS, exit_reason) {
            Some(name) => Cow::Borrowed(name),
            None => Cow::Owned(format!("unknown(0x{exit_reason:x})")),
        },
    }
}

/// True if the exit means the guest had nothing to do (it halted): such exits are
/// guest idle time, not hypervisor overhead.
///
/// VMX: `HLT` (12) only, and not when the entry failed. `MWAIT_INSTRUCTION` is not
/// idle: KVM emulates an intercepted MWAIT as a NOP. SVM: `hlt` (0x78) and
/// `idle-halt` (0xa6).
pub fn is_guest_idle(isa: Isa, exit_reason: u32) -> bool {
    match isa {
        Isa::Vmx => exit_reason == VMX_EXIT_REASON_HLT,
        Isa::Svm => exit_reason == SVM_EXIT_HLT || exit_reason == SVM_EXIT_IDLE_HLT,
    }
}

/// The name of a `KVM_EXIT_*` userspace exit reason, e.g. `"KVM_EXIT_IO"`, as the
/// `kvm:kvm_userspace_exit` tracepoint prints it; `"unknown(0x..)"` otherwise.
pub fn userspace_exit_name(reason: u32) -> Cow<'static, str> {
    match lookup(USERSPACE_EXIT_REASONS, reason) {
        Some(name) => Cow::Owned(format!("KVM_EXIT_{name}")),
        None => Cow::Owned(format!("unknown(0x{reason:x})")),
    }
}

/// The `{ VALUE, "NAME" }` pairs of the first `__print_symbolic` table in a
/// tracepoint's print fmt (how the kernel names the values it prints), to check the
/// tables above against a kernel; adjacent C string literals (`"KVM_EXIT_" "IO"`)
/// are concatenated. None if `fmt` has no well-formed table.
pub fn print_symbolic_entries(fmt: &str) -> Option<Vec<(u32, String)>> {
    let start = fmt.find("__print_symbolic(")?;
    let body = &fmt[start..];
    let body = &body[..body.find("})")? + 1];
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(open) = rest.find("{ ") {
        let close = rest[open..].find(" }")? + open;
        let (value, name) = rest[open + 2..close].split_once(',')?;
        let name: String = name.split('"').skip(1).step_by(2).collect();
        out.push((symbolic_value(value)?, name));
        rest = &rest[close + 2..];
    }
    Some(out)
}

/// The value of one `{ VALUE, "NAME" }` entry: decimal, hex, `a + b`, -1.
fn symbolic_value(expr: &str) -> Option<u32> {
    expr.split('+').try_fold(0u32, |sum, term| {
        let term = term.trim();
        let v = match term.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => term.parse::<i64>().ok()? as u32,
        };
        Some(sum.wrapping_add(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `__print_symbolic` tables of `kvm:kvm_exit`'s print fmt on kernel 6.18
    /// (`/sys/kernel/tracing/events/kvm/kvm_exit/format`), verbatim.
    const KVM_EXIT_VMX_FMT: &str = r#"__print_symbolic(REC->exit_reason & 0xffff, { 0, "EXCEPTION_NMI" }, { 1, "EXTERNAL_INTERRUPT" }, { 2, "TRIPLE_FAULT" }, { 3, "INIT_SIGNAL" }, { 4, "SIPI_SIGNAL" }, { 7, "INTERRUPT_WINDOW" }, { 8, "NMI_WINDOW" }, { 9, "TASK_SWITCH" }, { 10, "CPUID" }, { 12, "HLT" }, { 13, "INVD" }, { 14, "INVLPG" }, { 15, "RDPMC" }, { 16, "RDTSC" }, { 18, "VMCALL" }, { 19, "VMCLEAR" }, { 20, "VMLAUNCH" }, { 21, "VMPTRLD" }, { 22, "VMPTRST" }, { 23, "VMREAD" }, { 24, "VMRESUME" }, { 25, "VMWRITE" }, { 26, "VMOFF" }, { 27, "VMON" }, { 28, "CR_ACCESS" }, { 29, "DR_ACCESS" }, { 30, "IO_INSTRUCTION" }, { 31, "MSR_READ" }, { 32, "MSR_WRITE" }, { 33, "INVALID_STATE" }, { 34, "MSR_LOAD_FAIL" }, { 36, "MWAIT_INSTRUCTION" }, { 37, "MONITOR_TRAP_FLAG" }, { 39, "MONITOR_INSTRUCTION" }, { 40, "PAUSE_INSTRUCTION" }, { 41, "MCE_DURING_VMENTRY" }, { 43, "TPR_BELOW_THRESHOLD" }, { 44, "APIC_ACCESS" }, { 45, "EOI_INDUCED" }, { 46, "GDTR_IDTR" }, { 47, "LDTR_TR" }, { 48, "EPT_VIOLATION" }, { 49, "EPT_MISCONFIG" }, { 50, "INVEPT" }, { 51, "RDTSCP" }, { 52, "PREEMPTION_TIMER" }, { 53, "INVVPID" }, { 54, "WBINVD" }, { 55, "XSETBV" }, { 56, "APIC_WRITE" }, { 57, "RDRAND" }, { 58, "INVPCID" }, { 59, "VMFUNC" }, { 60, "ENCLS" }, { 61, "RDSEED" }, { 62, "PML_FULL" }, { 63, "XSAVES" }, { 64, "XRSTORS" }, { 67, "UMWAIT" }, { 68, "TPAUSE" }, { 74, "BUS_LOCK" }, { 75, "NOTIFY" }, { 77, "TDCALL" }, { 84, "MSR_READ_IMM" }, { 85, "MSR_WRITE_IMM" })"#;

    const KVM_EXIT_SVM_FMT: &str = r#"__print_symbolic(REC->exit_reason, { 0x000, "read_cr0" }, { 0x002, "read_cr2" }, { 0x003, "read_cr3" }, { 0x004, "read_cr4" }, { 0x008, "read_cr8" }, { 0x010, "write_cr0" }, { 0x012, "write_cr2" }, { 0x013, "write_cr3" }, { 0x014, "write_cr4" }, { 0x018, "write_cr8" }, { 0x020, "read_dr0" }, { 0x021, "read_dr1" }, { 0x022, "read_dr2" }, { 0x023, "read_dr3" }, { 0x024, "read_dr4" }, { 0x025, "read_dr5" }, { 0x026, "read_dr6" }, { 0x027, "read_dr7" }, { 0x030, "write_dr0" }, { 0x031, "write_dr1" }, { 0x032, "write_dr2" }, { 0x033, "write_dr3" }, { 0x034, "write_dr4" }, { 0x035, "write_dr5" }, { 0x036, "write_dr6" }, { 0x037, "write_dr7" }, { 0x040 + 0, "DE excp" }, { 0x040 + 1, "DB excp" }, { 0x040 + 3, "BP excp" }, { 0x040 + 4, "OF excp" }, { 0x040 + 5, "BR excp" }, { 0x040 + 6, "UD excp" }, { 0x040 + 7, "NM excp" }, { 0x040 + 8, "DF excp" }, { 0x040 + 10, "TS excp" }, { 0x040 + 11, "NP excp" }, { 0x040 + 12, "SS excp" }, { 0x040 + 13, "GP excp" }, { 0x040 + 14, "PF excp" }, { 0x040 + 16, "MF excp" }, { 0x040 + 17, "AC excp" }, { 0x040 + 18, "MC excp" }, { 0x040 + 19, "XF excp" }, { 0x060, "interrupt" }, { 0x061, "nmi" }, { 0x062, "smi" }, { 0x063, "init" }, { 0x064, "vintr" }, { 0x065, "cr0_sel_write" }, { 0x066, "read_idtr" }, { 0x067, "read_gdtr" }, { 0x068, "read_ldtr" }, { 0x069, "read_rt" }, { 0x06a, "write_idtr" }, { 0x06b, "write_gdtr" }, { 0x06c, "write_ldtr" }, { 0x06d, "write_rt" }, { 0x06e, "rdtsc" }, { 0x06f, "rdpmc" }, { 0x070, "pushf" }, { 0x071, "popf" }, { 0x072, "cpuid" }, { 0x073, "rsm" }, { 0x074, "iret" }, { 0x075, "swint" }, { 0x076, "invd" }, { 0x077, "pause" }, { 0x078, "hlt" }, { 0x079, "invlpg" }, { 0x07a, "invlpga" }, { 0x07b, "io" }, { 0x07c, "msr" }, { 0x07d, "task_switch" }, { 0x07e, "ferr_freeze" }, { 0x07f, "shutdown" }, { 0x080, "vmrun" }, { 0x081, "hypercall" }, { 0x082, "vmload" }, { 0x083, "vmsave" }, { 0x084, "stgi" }, { 0x085, "clgi" }, { 0x086, "skinit" }, { 0x087, "rdtscp" }, { 0x088, "icebp" }, { 0x089, "wbinvd" }, { 0x08a, "monitor" }, { 0x08b, "mwait" }, { 0x08d, "xsetbv" }, { 0x08f, "write_efer_trap" }, { 0x090, "write_cr0_trap" }, { 0x094, "write_cr4_trap" }, { 0x098, "write_cr8_trap" }, { 0x0a2, "invpcid" }, { 0x0a5, "buslock" }, { 0x0a6, "idle-halt" }, { 0x400, "npf" }, { 0x401, "avic_incomplete_ipi" }, { 0x402, "avic_unaccelerated_access" }, { 0x403, "vmgexit" }, { 0x80000001, "vmgexit_mmio_read" }, { 0x80000002, "vmgexit_mmio_write" }, { 0x80000003, "vmgexit_nmi_complete" }, { 0x80000004, "vmgexit_ap_hlt_loop" }, { 0x80000005, "vmgexit_ap_jump_table" }, { 0x80000010, "vmgexit_page_state_change" }, { 0x80000011, "vmgexit_guest_request" }, { 0x80000012, "vmgexit_ext_guest_request" }, { 0x80000013, "vmgexit_ap_creation" }, { 0x8000fffd, "vmgexit_hypervisor_feature" }, { -1, "invalid_guest_state" })"#;

    /// `kvm:kvm_userspace_exit`'s table on kernel 6.18, verbatim.
    const KVM_USERSPACE_EXIT_FMT: &str = r#"__print_symbolic(REC->reason, { 0, "KVM_EXIT_" "UNKNOWN" }, { 1, "KVM_EXIT_" "EXCEPTION" }, { 2, "KVM_EXIT_" "IO" }, { 3, "KVM_EXIT_" "HYPERCALL" }, { 4, "KVM_EXIT_" "DEBUG" }, { 5, "KVM_EXIT_" "HLT" }, { 6, "KVM_EXIT_" "MMIO" }, { 7, "KVM_EXIT_" "IRQ_WINDOW_OPEN" }, { 8, "KVM_EXIT_" "SHUTDOWN" }, { 9, "KVM_EXIT_" "FAIL_ENTRY" }, { 10, "KVM_EXIT_" "INTR" }, { 11, "KVM_EXIT_" "SET_TPR" }, { 12, "KVM_EXIT_" "TPR_ACCESS" }, { 13, "KVM_EXIT_" "S390_SIEIC" }, { 14, "KVM_EXIT_" "S390_RESET" }, { 15, "KVM_EXIT_" "DCR" }, { 16, "KVM_EXIT_" "NMI" }, { 17, "KVM_EXIT_" "INTERNAL_ERROR" }, { 18, "KVM_EXIT_" "OSI" }, { 19, "KVM_EXIT_" "PAPR_HCALL" }, { 20, "KVM_EXIT_" "S390_UCONTROL" }, { 21, "KVM_EXIT_" "WATCHDOG" }, { 22, "KVM_EXIT_" "S390_TSCH" }, { 23, "KVM_EXIT_" "EPR" }, { 24, "KVM_EXIT_" "SYSTEM_EVENT" }, { 25, "KVM_EXIT_" "S390_STSI" }, { 26, "KVM_EXIT_" "IOAPIC_EOI" }, { 27, "KVM_EXIT_" "HYPERV" }, { 28, "KVM_EXIT_" "ARM_NISV" }, { 29, "KVM_EXIT_" "X86_RDMSR" }, { 30, "KVM_EXIT_" "X86_WRMSR" })"#;

    fn symbolic_entries(fmt: &str) -> Vec<(u32, String)> {
        print_symbolic_entries(fmt).expect("a __print_symbolic table")
    }

    fn assert_vmx_table_matches(fmt: &str) {
        let entries = symbolic_entries(fmt);
        assert!(entries.len() >= 60, "parsed only {} VMX entries", entries.len());
        for (value, name) in &entries {
            assert_eq!(exit_reason_name(Isa::Vmx, *value), name.as_str(), "VMX {value}");
        }
        assert_eq!(entries.len(), VMX_EXIT_REASONS.len(), "VMX table has extra entries");
    }

    fn assert_svm_table_matches(fmt: &str) {
        let entries = symbolic_entries(fmt);
        assert!(entries.len() >= 100, "parsed only {} SVM entries", entries.len());
        for (value, name) in &entries {
            assert_eq!(exit_reason_name(Isa::Svm, *value), name.as_str(), "SVM {value:#x}");
        }
        assert_eq!(entries.len(), SVM_EXIT_REASONS.len(), "SVM table has extra entries");
    }

    #[test]
    fn vmx_table_matches_kernel_print_fmt() {
        assert_vmx_table_matches(KVM_EXIT_VMX_FMT);
    }

    #[test]
    fn svm_table_matches_kernel_print_fmt() {
        assert_svm_table_matches(KVM_EXIT_SVM_FMT);
    }

    #[test]
    fn userspace_table_matches_kernel_print_fmt() {
        let entries = symbolic_entries(KVM_USERSPACE_EXIT_FMT);
        assert_eq!(entries.len(), 31);
        for (value, name) in &entries {
            assert_eq!(userspace_exit_name(*value), name.as_str(), "KVM_EXIT {value}");
        }
    }

    #[test]
    fn vmx_spot_checks() {
        let cases = [
            (0, "EXCEPTION_NMI"),
            (1, "EXTERNAL_INTERRUPT"),
            (10, "CPUID"),
            (12, "HLT"),
            (28, "CR_ACCESS"),
            (30, "IO_INSTRUCTION"),
            (31, "MSR_READ"),
            (32, "MSR_WRITE"),
            (36, "MWAIT_INSTRUCTION"),
            (40, "PAUSE_INSTRUCTION"),
            (48, "EPT_VIOLATION"),
            (49, "EPT_MISCONFIG"),
            (52, "PREEMPTION_TIMER"),
            (56, "APIC_WRITE"),
            (85, "MSR_WRITE_IMM"),
        ];
        for (reason, name) in cases {
            assert_eq!(exit_reason_name(Isa::Vmx, reason), name);
        }
    }

    #[test]
    fn svm_spot_checks() {
        let cases = [
            (0x000, "read_cr0"),
            (0x040 + 14, "PF excp"),
            (0x040 + 13, "GP excp"),
            (0x060, "interrupt"),
            (0x064, "vintr"),
            (0x072, "cpuid"),
            (0x078, "hlt"),
            (0x07b, "io"),
            (0x07c, "msr"),
            (0x081, "hypercall"),
            (0x0a6, "idle-halt"),
            (0x400, "npf"),
            (0x403, "vmgexit"),
            (0x8000_0010, "vmgexit_page_state_change"),
            (0x8000_fffd, "vmgexit_hypervisor_feature"),
            (u32::MAX, "invalid_guest_state"),
        ];
        for (reason, name) in cases {
            assert_eq!(exit_reason_name(Isa::Svm, reason), name);
        }
    }

    #[test]
    fn userspace_spot_checks() {
        let cases = [
            (0, "KVM_EXIT_UNKNOWN"),
            (2, "KVM_EXIT_IO"),
            (5, "KVM_EXIT_HLT"),
            (6, "KVM_EXIT_MMIO"),
            (8, "KVM_EXIT_SHUTDOWN"),
            (9, "KVM_EXIT_FAIL_ENTRY"),
            (10, "KVM_EXIT_INTR"),
            (17, "KVM_EXIT_INTERNAL_ERROR"),
            (24, "KVM_EXIT_SYSTEM_EVENT"),
            (29, "KVM_EXIT_X86_RDMSR"),
            (30, "KVM_EXIT_X86_WRMSR"),
            (33, "KVM_EXIT_X86_BUS_LOCK"),
            (37, "KVM_EXIT_NOTIFY"),
            (39, "KVM_EXIT_MEMORY_FAULT"),
        ];
        for (reason, name) in cases {
            assert_eq!(userspace_exit_name(reason), name);
        }
    }

    #[test]
    fn unknown_values() {
        assert_eq!(exit_reason_name(Isa::Vmx, 5), "unknown(0x5)");
        assert_eq!(exit_reason_name(Isa::Vmx, 0xfff), "unknown(0xfff)");
        assert_eq!(exit_reason_name(Isa::Svm, 0x0a0), "unknown(0xa0)");
        assert_eq!(exit_reason_name(Isa::Svm, 0x040 + 2), "unknown(0x42)");
        assert_eq!(exit_reason_name(Isa::Svm, 0x8000_0000), "unknown(0x80000000)");
        assert_eq!(userspace_exit_name(1000), "unknown(0x3e8)");
        assert_eq!(Isa::from_u32(0), None);
        assert_eq!(Isa::from_u32(3), None);
        assert_eq!(Isa::from_u32(1), Some(Isa::Vmx));
        assert_eq!(Isa::from_u32(2), Some(Isa::Svm));
        assert_eq!(Isa::Vmx as u32, 1);
        assert_eq!(Isa::Svm as u32, 2);
    }

    #[test]
    fn vmx_failed_vmentry_flag() {
        let reason = VMX_EXIT_REASON_FAILED_VMENTRY | 33;
        assert_eq!(exit_reason_name(Isa::Vmx, reason), "INVALID_STATE FAILED_VMENTRY");
        assert_eq!(
            exit_reason_name(Isa::Vmx, VMX_EXIT_REASON_FAILED_VMENTRY | 41),
            "MCE_DURING_VMENTRY FAILED_VMENTRY"
        );
        assert!(is_failed_vmentry(Isa::Vmx, reason));
        assert!(!is_failed_vmentry(Isa::Vmx, 33));
        // SVM codes are not flag words: 0x80000001 is a vmgexit reason, not a failure.
        assert!(!is_failed_vmentry(Isa::Svm, 0x8000_0001));
        assert_eq!(vmx_basic_reason(reason), 33);
        // Other high bits are shown in hex, unknown basic reasons keep their flags.
        assert_eq!(exit_reason_name(Isa::Vmx, (1 << 27) | 48), "EPT_VIOLATION 0x8000000");
        assert_eq!(exit_reason_name(Isa::Vmx, VMX_EXIT_REASON_FAILED_VMENTRY | 0x99), "unknown(0x99) FAILED_VMENTRY");
    }

    #[test]
    fn guest_idle() {
        assert!(is_guest_idle(Isa::Vmx, 12));
        assert!(!is_guest_idle(Isa::Vmx, VMX_EXIT_REASON_FAILED_VMENTRY | 12));
        assert!(!is_guest_idle(Isa::Vmx, 36), "MWAIT is emulated as a NOP, not idle");
        assert!(!is_guest_idle(Isa::Vmx, 30));
        assert!(is_guest_idle(Isa::Svm, 0x078));
        assert!(is_guest_idle(Isa::Svm, 0x0a6));
        assert!(!is_guest_idle(Isa::Svm, 12));
        assert!(!is_guest_idle(Isa::Svm, 0x400));
    }

    #[test]
    fn isa_serializes_as_snake_case() {
        assert_eq!(serde_json::to_string(&Isa::Vmx).unwrap(), "\"vmx\"");
    }
}

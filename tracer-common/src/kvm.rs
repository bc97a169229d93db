//! KVM accounting: the per-vCPU-thread state machine driven by `ioctl(KVM_RUN)`
//! entry/return and the `kvm_entry`/`kvm_exit` tracepoints, shared by the probes and
//! userspace (and unit-tested here on recorded event sequences, since a PVM host never
//! fires `kvm_entry`/`kvm_exit`).

use crate::Mode;

/// `ioctl` request number of `KVM_RUN` (`_IO(KVMIO, 0x80)`).
pub const KVM_RUN: u64 = 0xAE80;

/// `code` of a `GUEST_SAMPLES` key: a sample inside KVM_RUN in user mode (guest code
/// running natively) ...
pub const SAMPLE_GUEST: u32 = 0;
/// ... or in kernel mode (the host kernel's KVM code, or emulation).
pub const SAMPLE_HOST_KVM: u32 = 1;

/// How many kernel functions the guest sampler recognises as taking host interrupts
/// that arrived while the guest ran.
pub const GUEST_IRQ_RANGES: usize = 4;

/// Those functions, by name (the ones this kernel has are looked up in /proc/kallsyms).
/// PVM takes such interrupts in pvm_do_event_irqoff, VMX in vmx_do_interrupt_irqoff
/// and vmx_do_nmi_irqoff (measured on PVM only; VT-x and AMD-V hosts have
/// kvm_entry/kvm_exit and do not need the estimate).
pub const GUEST_IRQ_FUNCTIONS: [&str; 3] = ["pvm_do_event_irqoff", "vmx_do_interrupt_irqoff", "vmx_do_nmi_irqoff"];

/// Log2 buckets of the exit latency histogram: bucket `b` holds latencies in
/// `[2^(b-1), 2^b)` ns (bucket 0 holds 0 ns); the last bucket is open-ended.
pub const HIST_BUCKETS: usize = 32;

/// Key of the per-vCPU-thread maps (`VCPU_EXITS`, `USERSPACE_EXITS`, `KVM_EVENTS`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[repr(C)]
pub struct TidKey {
    pub tid: u32,
    /// Exit reason (kvm_exit: `exit_reason`; for VMX the basic reason,
    /// `exit_reason & 0xffff`), userspace exit reason, or tracepoint id.
    pub code: u32,
    /// `isa` of kvm_exit (1 VMX, 2 SVM); 0 elsewhere.
    pub isa: u32,
    pub _pad: u32,
}

/// State of one thread with respect to KVM (value of the `VCPU_STATE` hash, keyed by
/// tid). A thread gets an entry the first time it enters `KVM_RUN`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VcpuState {
    /// [`Mode`] as u32.
    pub mode: u32,
    /// Reason and isa of the last kvm_exit whose handling has not yet ended (by the
    /// next kvm_entry); valid when `exit_ts != 0`.
    pub exit_reason: u32,
    pub exit_isa: u32,
    pub _pad: u32,
    pub exit_ts: u64,
}

/// An exit whose handling ended: (reason, isa, ns from kvm_exit to the next kvm_entry,
/// which includes any trip to the VMM in userspace, as `perf kvm stat` counts it).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ExitDone {
    pub reason: u32,
    pub isa: u32,
    pub latency_ns: u64,
}

impl VcpuState {
    pub fn mode(&self) -> Mode {
        Mode::from_u32(self.mode)
    }

    /// `ioctl(KVM_RUN)` entered.
    #[inline(always)]
    pub fn on_run_enter(&mut self) {
        self.mode = Mode::KvmRun as u32;
    }

    /// `ioctl(KVM_RUN)` returned to the VMM. A pending exit stays pending: its
    /// latency ends at the next VM entry.
    #[inline(always)]
    pub fn on_run_exit(&mut self) {
        self.mode = Mode::Outside as u32;
    }

    /// `kvm_entry`: the guest runs again; ends the pending exit, if any.
    #[inline(always)]
    pub fn on_entry(&mut self, now: u64) -> Option<ExitDone> {
        self.mode = Mode::Guest as u32;
        if self.exit_ts == 0 {
            return None;
        }
        let done =
            ExitDone { reason: self.exit_reason, isa: self.exit_isa, latency_ns: now.saturating_sub(self.exit_ts) };
        self.exit_ts = 0;
        Some(done)
    }

    /// `kvm_exit`: the guest left to the host kernel.
    #[inline(always)]
    pub fn on_exit(&mut self, now: u64, reason: u32, isa: u32) {
        self.mode = Mode::KvmRun as u32;
        self.exit_reason = reason;
        self.exit_isa = isa;
        self.exit_ts = now;
    }
}

/// For VMX, the basic exit reason (the low 16 bits; bit 31 flags a failed VM entry);
/// SVM exit codes are used as they are.
#[inline(always)]
pub fn basic_exit_reason(isa: u32, exit_reason: u32) -> u32 {
    if isa == 1 { exit_reason & 0xffff } else { exit_reason }
}

/// Log2 bucket of a latency, without loops or ctlz (the BPF target has neither).
#[inline(always)]
pub fn log2_bucket(ns: u64) -> usize {
    let mut v = ns;
    let mut b = 0usize;
    if v >= 1 << 32 {
        v >>= 32;
        b += 32;
    }
    if v >= 1 << 16 {
        v >>= 16;
        b += 16;
    }
    if v >= 1 << 8 {
        v >>= 8;
        b += 8;
    }
    if v >= 1 << 4 {
        v >>= 4;
        b += 4;
    }
    if v >= 1 << 2 {
        v >>= 2;
        b += 2;
    }
    if v >= 1 << 1 {
        v >>= 1;
        b += 1;
    }
    // Here v is 0 or 1; b = floor(log2(ns)) for ns >= 1.
    let bucket = if v == 0 { 0 } else { b + 1 };
    if bucket >= HIST_BUCKETS { HIST_BUCKETS - 1 } else { bucket }
}

/// Exit statistics per (vCPU thread, reason) (value of `VCPU_EXITS`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct ExitStats {
    /// kvm_exit events.
    pub count: u64,
    /// Exits whose handling ended (a later kvm_entry), and their summed latency.
    pub completed: u64,
    pub latency_ns: u64,
    pub hist: [u64; HIST_BUCKETS],
}

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats { count: 0, completed: 0, latency_ns: 0, hist: [0; HIST_BUCKETS] }
    }
}

impl ExitStats {
    #[inline(always)]
    pub fn record_latency(&mut self, ns: u64) {
        self.completed += 1;
        self.latency_ns += ns;
        let b = log2_bucket(ns);
        if b < HIST_BUCKETS {
            self.hist[b] += 1;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: #[repr(C)] integer-only structs with explicit padding; any bit pattern is valid.
    unsafe impl aya::Pod for TidKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for VcpuState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for ExitStats {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CpuState, ThreadCpuStats, Window};

    /// Replays a recorded sequence of (time, event) on one CPU for one vCPU thread,
    /// exactly as the probes do, and returns the thread's counters and exit stats.
    enum Ev {
        RunEnter,
        Entry,
        Exit(u32, u32),
        RunExit,
        SwitchOut,
        SwitchIn,
    }

    fn replay(evs: &[(u64, Ev)]) -> (ThreadCpuStats, std::collections::BTreeMap<u32, ExitStats>) {
        let mut cpu = CpuState::default();
        let mut st = ThreadCpuStats::default();
        let mut v = VcpuState::default();
        let mut exits = std::collections::BTreeMap::new();
        let mut on_cpu = true;
        for (t, e) in evs {
            // Every event is a checkpoint; time is charged to the vCPU thread only
            // while it is on the CPU.
            // Times are shifted so that the window starts at the first event.
            let d = cpu.advance(*t + 1_000, &Window { start_ns: 1_000, stop_ns: 0, flags: 0 });
            if on_cpu {
                st.charge(v.mode(), d);
            }
            match e {
                Ev::RunEnter => v.on_run_enter(),
                Ev::RunExit => v.on_run_exit(),
                Ev::Entry => {
                    if let Some(done) = v.on_entry(*t) {
                        exits.entry(done.reason).or_insert_with(ExitStats::default).record_latency(done.latency_ns);
                    }
                }
                Ev::Exit(r, isa) => {
                    let r = basic_exit_reason(*isa, *r);
                    v.on_exit(*t, r, *isa);
                    exits.entry(r).or_insert_with(ExitStats::default).count += 1;
                }
                Ev::SwitchOut => on_cpu = false,
                Ev::SwitchIn => on_cpu = true,
            }
        }
        (st, exits)
    }

    #[test]
    fn vmx_sequence_splits_guest_and_exit_handling() {
        // VMX: 30 = IO_INSTRUCTION (goes to userspace), 1 = EXTERNAL_INTERRUPT.
        let (st, exits) = replay(&[
            (0, Ev::RunEnter),
            (10, Ev::Entry),
            (110, Ev::Exit(30, 1)),           // 100 ns guest
            (115, Ev::RunExit),               // 5 ns exit handling in the kernel
            (200, Ev::RunEnter),              // 85 ns VMM userspace
            (210, Ev::Entry),                 // 10 ns in kernel; IO exit latency 110 -> 210 = 100
            (1210, Ev::Exit(0x8000_0001, 1)), // failed entry flag stripped -> reason 1
            (1230, Ev::Entry),                // 20 ns handling
            (1330, Ev::Exit(1, 1)),
            (1340, Ev::RunExit),
        ]);
        assert_eq!(st.on_cpu_ns, 1340);
        assert_eq!(st.guest_ns, 100 + 1000 + 100);
        assert_eq!(st.kvm_run_ns, 1340 - 85);
        assert_eq!(exits[&30].count, 1);
        assert_eq!(exits[&30].latency_ns, 100);
        assert_eq!(exits[&1].count, 2);
        assert_eq!(exits[&1].completed, 1); // the last exit is still pending
        assert_eq!(exits[&1].latency_ns, 20);
        assert_eq!(exits[&1].hist[log2_bucket(20)], 1);
    }

    #[test]
    fn svm_reasons_are_kept_whole_and_preemption_stops_the_clock() {
        let (st, exits) = replay(&[
            (0, Ev::RunEnter),
            (0, Ev::Entry),
            (50, Ev::Exit(0x400, 2)), // npf
            (60, Ev::SwitchOut),      // 10 ns handling, then preempted inside KVM_RUN
            (500, Ev::SwitchIn),
            (520, Ev::Entry),         // 20 ns more handling on CPU; latency 470 wall
            (600, Ev::Exit(0x78, 2)), // hlt
            (600, Ev::RunExit),
        ]);
        assert_eq!(st.on_cpu_ns, 50 + 10 + 20 + 80);
        assert_eq!(st.guest_ns, 130);
        assert_eq!(st.kvm_run_ns, st.on_cpu_ns);
        assert_eq!(exits[&0x400].latency_ns, 470);
        assert_eq!(exits[&0x78].count, 1);
    }

    #[test]
    fn pvm_without_entry_exit_counts_all_of_kvm_run_as_kvm_run() {
        let (st, exits) = replay(&[(0, Ev::RunEnter), (1000, Ev::RunExit), (1100, Ev::RunEnter), (1500, Ev::RunExit)]);
        assert_eq!((st.on_cpu_ns, st.kvm_run_ns, st.guest_ns), (1500, 1400, 0));
        assert!(exits.is_empty());
    }

    #[test]
    fn log2_buckets() {
        assert_eq!(log2_bucket(0), 0);
        assert_eq!(log2_bucket(1), 1);
        assert_eq!(log2_bucket(2), 2);
        assert_eq!(log2_bucket(3), 2);
        assert_eq!(log2_bucket(4), 3);
        assert_eq!(log2_bucket(1023), 10);
        assert_eq!(log2_bucket(1024), 11);
        for s in 0..63u32 {
            let ns = 1u64 << s;
            assert_eq!(log2_bucket(ns), core::cmp::min(s as usize + 1, HIST_BUCKETS - 1));
            assert_eq!(log2_bucket(ns + ns / 2), core::cmp::min(s as usize + 1, HIST_BUCKETS - 1));
        }
        assert_eq!(log2_bucket(u64::MAX), HIST_BUCKETS - 1);
    }
}

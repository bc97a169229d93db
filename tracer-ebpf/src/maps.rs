//! Maps and load-time globals shared by the programs, and the accounting step every
//! program takes: advance this CPU's clock and charge the elapsed time to the current
//! thread in its KVM mode.

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::map,
    maps::{Array, HashMap, PerCpuArray, PerCpuHashMap},
};
use tracer_common::{
    CpuState, Mode, ThreadCpuStats, ThreadInfo, Window, counter,
    kvm::{ExitStats, TidKey, VcpuState},
    kvm_btf_off,
    ledger::{CpuHistory, PairCache, PairKey, PairStats, ThreadSched, kfield},
    retire::ExitMark,
    tp_off,
};
use tracer_common::{assert_named, names::map};

/// Set by userspace at load time (see `tracer_common::globals`).
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static GUEST_IRQ_TEXT: [u64; 2 * tracer_common::kvm::GUEST_IRQ_RANGES] = [0; 2 * tracer_common::kvm::GUEST_IRQ_RANGES];
#[unsafe(no_mangle)]
static LEDGER_ON: u32 = 0;
#[unsafe(no_mangle)]
static SCHED_INFO_OFFSETS: [u32; kfield::COUNT] = [0; kfield::COUNT];
#[unsafe(no_mangle)]
static TP_OFFSETS: [u32; tp_off::COUNT] = [0; tp_off::COUNT];
#[unsafe(no_mangle)]
static KVM_BTF_OFFSETS: [u32; kvm_btf_off::COUNT] = [0; kvm_btf_off::COUNT];

/// The trace window; userspace writes it after attaching and at the end.
#[map]
pub static CONFIG: Array<Window> = Array::with_max_entries(1, 0);
assert_named!(CONFIG, map::CONFIG);

#[inline(always)]
pub fn window() -> Window {
    match CONFIG.get(0) {
        Some(w) => *w,
        None => Window::default(),
    }
}

#[inline(always)]
pub fn task_pid_offset() -> usize {
    // SAFETY: reading a global that userspace wrote into .rodata before loading.
    unsafe { core::ptr::read_volatile(&TASK_PID_OFFSET) as usize }
}

/// [start, end) of the i-th kernel function that takes host interrupts arriving
/// during guest execution (0, 0 = none).
#[inline(always)]
pub fn guest_irq_range(i: usize) -> (u64, u64) {
    // SAFETY: reading a global that userspace wrote into .rodata before loading;
    // i < GUEST_IRQ_RANGES at the only call site.
    unsafe { (core::ptr::read_volatile(&GUEST_IRQ_TEXT[2 * i]), core::ptr::read_volatile(&GUEST_IRQ_TEXT[2 * i + 1])) }
}

/// What of the run-queue states and the ledger is kept (`globals::LEDGER_ON`).
#[inline(always)]
fn ledger_level() -> u32 {
    // SAFETY: reading a global that userspace wrote into .rodata before loading.
    unsafe { core::ptr::read_volatile(&LEDGER_ON) }
}

/// Whether the run-queue states are kept.
#[inline(always)]
pub fn ledger_on() -> bool {
    ledger_level() != tracer_common::ledger::level::OFF
}

/// Whether the ledger (thieves) is kept besides the states.
#[inline(always)]
pub fn ledger_full() -> bool {
    ledger_level() == tracer_common::ledger::level::FULL
}

/// The tid (`pid`) of a tp_btf `struct task_struct *` argument: a direct load, which
/// the verifier checks against the kernel's BTF (the offset is a constant of
/// `.rodata`), cheaper than bpf_probe_read_kernel.
#[inline(always)]
pub fn task_tid(task: *const u8) -> u32 {
    // SAFETY: `task` is a trusted BTF pointer and the offset is task_struct.pid's.
    unsafe { core::ptr::read_volatile(task.add(task_pid_offset()) as *const i32) as u32 }
}

/// Byte offset `i` (a constant of [`kfield`]) of the kernel's run-queue bookkeeping.
#[inline(always)]
fn sched_info_offset(i: usize) -> usize {
    // SAFETY: as above; `i` is a constant below kfield::COUNT at every call site.
    unsafe { core::ptr::read_volatile(&SCHED_INFO_OFFSETS[i]) as usize }
}

/// Whether sched_switch infers wakeups from the kernel's own bookkeeping (userspace
/// sets the offsets only where it does, and then attaches no sched_wakeup program).
#[inline(always)]
pub fn wakeless() -> bool {
    sched_info_offset(kfield::RUN_DELAY) != 0
}

/// A u64 at `off` bytes into a tp_btf task pointer (or a pointer loaded from one): a
/// direct load, checked by the verifier against the kernel's BTF like [`task_tid`].
#[inline(always)]
fn load_u64(p: *const u8, off: usize) -> u64 {
    // SAFETY: a BTF pointer and the offset of a u64 (or pointer) member of its type.
    unsafe { core::ptr::read_volatile(p.add(off) as *const u64) }
}

/// The kernel's cumulative `run_delay` of a task (ns).
#[inline(always)]
pub fn task_run_delay(task: *const u8) -> u64 {
    load_u64(task, sched_info_offset(kfield::RUN_DELAY))
}

/// At sched_switch, how long `next` has waited on this CPU's run queue: what
/// `sched_info_arrive` is about to add to its `run_delay` (0 when not queued).
#[inline(always)]
pub fn task_wait_here(next: *const u8) -> u64 {
    let queued = load_u64(next, sched_info_offset(kfield::LAST_QUEUED));
    if queued == 0 {
        return 0;
    }
    let cfs_rq = load_u64(next, sched_info_offset(kfield::SE_CFS_RQ)) as *const u8;
    let rq = load_u64(cfs_rq, sched_info_offset(kfield::CFS_RQ_RQ)) as *const u8;
    load_u64(rq, sched_info_offset(kfield::RQ_CLOCK)).saturating_sub(queued)
}

#[inline(always)]
pub fn tp_offset(i: usize) -> usize {
    // SAFETY: as above; `i` is a constant below tp_off::COUNT at every call site.
    unsafe { core::ptr::read_volatile(&TP_OFFSETS[i]) as usize }
}

/// The `KVM_BTF_OFFSETS` entry `i` (0 = unresolved).
#[inline(always)]
pub fn kvm_btf_offset(i: usize) -> usize {
    // SAFETY: as above; `i` is a constant below kvm_btf_off::COUNT at every call site.
    unsafe { core::ptr::read_volatile(&KVM_BTF_OFFSETS[i]) as usize }
}

/// This CPU's accounting clock.
#[map]
pub static CPU_STATE: PerCpuArray<CpuState> = PerCpuArray::with_max_entries(1, 0);
assert_named!(CPU_STATE, map::CPU_STATE);

/// tid -> counters on this CPU. Max entries is set by userspace at load time.
#[map]
pub static THREAD_STATS: PerCpuHashMap<u32, ThreadCpuStats> = PerCpuHashMap::with_max_entries(16384, 0);
assert_named!(THREAD_STATS, map::THREAD_STATS);

/// tid -> identity, written when the thread is first seen on a CPU.
#[map]
pub static THREAD_INFO: HashMap<u32, ThreadInfo> = HashMap::with_max_entries(32768, 0);
assert_named!(THREAD_INFO, map::THREAD_INFO);

/// Workload tids (the command vmmtrace runs, and every task it forks): tid -> 1.
#[map]
pub static WATCH: HashMap<u32, u32> = HashMap::with_max_entries(16384, 0);
assert_named!(WATCH, map::WATCH);

/// tid -> KVM state, for threads that entered ioctl(KVM_RUN).
#[map]
pub static VCPU_STATE: HashMap<u32, VcpuState> = HashMap::with_max_entries(4096, 0);
assert_named!(VCPU_STATE, map::VCPU_STATE);

/// (tid, exit reason, isa) -> count and latency histogram (kvm_exit/kvm_entry).
#[map]
pub static VCPU_EXITS: HashMap<TidKey, ExitStats> = HashMap::with_max_entries(16384, 0);
assert_named!(VCPU_EXITS, map::VCPU_EXITS);

/// (tid, userspace exit reason) -> count (kvm_userspace_exit).
#[map]
pub static USERSPACE_EXITS: HashMap<TidKey, u64> = HashMap::with_max_entries(8192, 0);
assert_named!(USERSPACE_EXITS, map::USERSPACE_EXITS);

/// (tid, tracepoint id) -> count, for the other in-kernel KVM events.
#[map]
pub static KVM_EVENTS: HashMap<TidKey, u64> = HashMap::with_max_entries(16384, 0);
assert_named!(KVM_EVENTS, map::KVM_EVENTS);

/// (tid, SAMPLE_GUEST or SAMPLE_HOST_KVM) -> cpu-clock samples taken inside KVM_RUN.
#[map]
pub static GUEST_SAMPLES: HashMap<TidKey, u64> = HashMap::with_max_entries(8192, 0);
assert_named!(GUEST_SAMPLES, map::GUEST_SAMPLES);

/// tid -> run-queue state and totals (see `tracer_common::ledger`). Max entries is
/// set by userspace at load time.
#[map]
pub static THREAD_SCHED: HashMap<u32, ThreadSched> = HashMap::with_max_entries(32768, 0);
assert_named!(THREAD_SCHED, map::THREAD_SCHED);

/// tid -> run-queue state, for every tid below its length: an array lookup is a
/// bounds check and an add that the verifier inlines, where a hash lookup hashes the
/// key and walks a bucket (3 lookups per switch and wakeup pair; see docs/results.md).
/// Userspace sizes it to `pid_max` where that is small (else 1: unused), fills it
/// with `ThreadSched::UNSEEN` before attaching and reads it through a shared
/// mapping (`BPF_F_MMAPABLE`). Tids past its end (pid_max raised later) use
/// `THREAD_SCHED`.
#[map]
pub static THREAD_SCHED_BY_TID: Array<ThreadSched> = Array::with_max_entries(1, BPF_F_MMAPABLE);
assert_named!(THREAD_SCHED_BY_TID, map::THREAD_SCHED_BY_TID);

/// `BPF_F_MMAPABLE` (uapi/linux/bpf.h): userspace may mmap the array.
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// CPU id -> its recent on-CPU intervals. Max entries is set by userspace to the
/// number of possible CPUs.
#[map]
pub static CPU_HISTORY: Array<CpuHistory> = Array::with_max_entries(256, 0);
assert_named!(CPU_HISTORY, map::CPU_HISTORY);

/// (victim, thief) -> wait time the thief took from the victim.
#[map]
pub static LEDGER: HashMap<PairKey, PairStats> = HashMap::with_max_entries(65536, 0);
assert_named!(LEDGER, map::LEDGER);

/// This CPU's recent (victim, thief) pairs, on their way to `LEDGER`.
#[map]
pub static PAIR_CACHE: PerCpuArray<PairCache> = PerCpuArray::with_max_entries(1, 0);
assert_named!(PAIR_CACHE, map::PAIR_CACHE);

/// tid -> exit and final switch of a thread that exited, until userspace retires it
/// (see `tracer_common::retire`). Max entries is set by userspace at load time.
#[map]
pub static EXITED: HashMap<u32, ExitMark> = HashMap::with_max_entries(16384, 0);
assert_named!(EXITED, map::EXITED);

/// Event and drop counters, indexed by `tracer_common::counter`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);
assert_named!(COUNTERS, map::COUNTERS);

const BPF_NOEXIST: u64 = 1;
const EEXIST: i64 = 17;

#[inline(always)]
pub fn bump(idx: u32) {
    if let Some(p) = COUNTERS.get_ptr_mut(idx) {
        // SAFETY: per-CPU slot, only this CPU writes it, with preemption disabled.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The value of `key`, inserting `init` first if absent; a full map counts as a drop
/// in `drop_counter` and gives None.
#[inline(always)]
pub fn get_or_insert<K, V>(map: &HashMap<K, V>, key: &K, init: &V, drop_counter: u32) -> Option<*mut V> {
    if let Some(p) = map.get_ptr_mut(key) {
        return Some(p);
    }
    if map.insert(key, init, 0).is_err() {
        bump(drop_counter);
        return None;
    }
    map.get_ptr_mut(key)
}

/// The current task's KVM mode.
#[inline(always)]
pub fn mode_of(tid: u32) -> Mode {
    // SAFETY: the value is read once, by value.
    match unsafe { VCPU_STATE.get(tid) } {
        Some(v) => v.mode(),
        None => Mode::Outside,
    }
}

/// Charges `ns` of on-CPU time in `mode` to `tid` on this CPU, creating its entry
/// (and its identity, from the current task) the first time.
#[inline(always)]
pub fn charge_current(tid: u32, mode: Mode, ns: u64) -> Option<*mut ThreadCpuStats> {
    if let Some(p) = THREAD_STATS.get_ptr_mut(tid) {
        // SAFETY: per-CPU value, this CPU only.
        unsafe { (*p).charge(mode, ns) };
        return Some(p);
    }
    if THREAD_STATS.insert(tid, ThreadCpuStats::with_charge(mode, ns), 0).is_err() {
        bump(counter::DROPPED_THREAD_STATS);
        return None;
    }
    remember_current(tid);
    THREAD_STATS.get_ptr_mut(tid)
}

/// Records the current task's identity if not known yet.
#[inline(always)]
pub fn remember_current(tid: u32) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let comm = bpf_get_current_comm().unwrap_or([0u8; 16]);
    let info = ThreadInfo { tgid, flags: 0, comm };
    if let Err(e) = THREAD_INFO.insert(tid, info, BPF_NOEXIST)
        && e as i64 != -EEXIST
    {
        bump(counter::DROPPED_THREAD_INFO);
    }
}

/// A checkpoint in the current task's own context (a KVM mode change): charges the
/// time since this CPU's last checkpoint to the current task in its old mode.
#[inline(always)]
pub fn checkpoint_current(tid: u32, old_mode: Mode) {
    let Some(cpu) = CPU_STATE.get_ptr_mut(0) else { return };
    // SAFETY: per-CPU slot, this CPU only.
    let d = unsafe { (*cpu).advance(now(), &window()) };
    charge_current(tid, old_mode, d);
}

#[inline(always)]
pub fn current_tid() -> u32 {
    bpf_get_current_pid_tgid() as u32
}

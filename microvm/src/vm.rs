//! KVM setup, vCPU threads and the emulator thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, KVM_MP_STATE_RUNNABLE, Msrs, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_segment,
    kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, VcpuExit, VcpuFd, VmFd};

use crate::error::{exception_name, workload_status};
use crate::layout::*;
use crate::mem::GuestMem;
use crate::workload::{HEAP_BYTES, WlParams};
use crate::{Config, EmulatorTruth, Error, GroundTruth, VcpuTruth};

static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

/// Frequency of the KVM local APIC timer (APIC bus cycle 1 ns).
const APIC_HZ: u64 = 1_000_000_000;
const MSR_STAR: u32 = 0xc000_0081;
/// Bytes the emulator checksums on each of its own timer ticks.
const EMU_TICK_BYTES: u64 = 64 << 10;

pub(crate) fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}

pub(crate) fn pin_current(what: &str, cpus: &[usize]) -> Result<(), Error> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds are checked below.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            if c >= libc::CPU_SETSIZE as usize {
                return Err(Error::Pin {
                    what: what.into(),
                    cpus: cpus.to_vec(),
                    source: std::io::Error::from_raw_os_error(libc::EINVAL),
                });
            }
            libc::CPU_SET(c, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(Error::Pin { what: what.into(), cpus: cpus.to_vec(), source: std::io::Error::last_os_error() });
        }
    }
    Ok(())
}

pub(crate) fn process_comm() -> String {
    std::fs::read_to_string("/proc/self/comm").map(|s| s.trim_end().to_string()).unwrap_or_default()
}

/// Work the vCPU threads hand to the emulator thread.
pub(crate) enum EmuMsg {
    /// A progress exit: checksum this guest buffer (like a device reading a DMA buffer).
    Exit { buf: u64, len: u64 },
    /// This vCPU finished (successfully or not).
    Done,
}

/// State shared by all threads of one VM.
pub(crate) struct Shared {
    // field order: the VM fd is closed before guest memory is unmapped
    pub(crate) vm: VmFd,
    pub(crate) cpuid: CpuId,
    pub(crate) user_entry: u64,
    pub(crate) cfg: Config,
    pub(crate) mem: GuestMem,
    _kvm: Kvm,
}

fn open_kvm() -> Result<Kvm, Error> {
    let kvm = Kvm::new().map_err(|e| match e.errno() {
        libc::ENOENT | libc::ENXIO | libc::ENODEV => Error::NoKvm,
        libc::EACCES | libc::EPERM => Error::KvmPermission,
        n => Error::KvmOpen(std::io::Error::from_raw_os_error(n)),
    })?;
    let v = kvm.get_api_version();
    if v != 12 {
        return Err(Error::KvmApiVersion(v));
    }
    for (cap, name) in [
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(Error::KvmMissingCap(name));
        }
    }
    Ok(kvm)
}

fn rd16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn rd32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn rd64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// Minimal ELF64 loader for the static guest payload. Returns the entry point.
fn load_elf(mem: &GuestMem, elf: &[u8]) -> Result<u64, Error> {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return Err(Error::Payload("guest.elf is not an ELF64 file".into()));
    }
    let (phoff, phentsize, phnum) = (rd64(elf, 0x20) as usize, rd16(elf, 0x36) as usize, rd16(elf, 0x38) as usize);
    for k in 0..phnum {
        let ph = phoff + k * phentsize;
        if rd32(elf, ph) != 1 {
            continue; // not PT_LOAD
        }
        let (off, paddr, filesz, memsz) =
            (rd64(elf, ph + 8) as usize, rd64(elf, ph + 0x18), rd64(elf, ph + 0x20) as usize, rd64(elf, ph + 0x28));
        // allowed: below IDT_BASE (ELF headers, the .cpl0 stub) or 0x400000..ELF_LIMIT
        let end = paddr + memsz;
        let reserved = IDT_BASE..ELF_BASE;
        if end > ELF_LIMIT || (paddr < reserved.end && end > reserved.start) {
            return Err(Error::Payload(format!("segment at {paddr:#x}+{memsz:#x} does not fit the layout")));
        }
        mem.write(paddr, &elf[off..off + filesz])?;
        mem.zero(paddr + filesz as u64, memsz - filesz as u64)?;
    }
    Ok(rd64(elf, 0x18))
}

fn write_tables(mem: &GuestMem, cfg: &Config) -> Result<(), Error> {
    // identity map 0..4 GiB with 2 MiB pages, user-accessible
    mem.write_u64(PML4, PDPT | 7)?;
    for g in 0..IDENTITY_GIB {
        let pd = PD0 + g * 0x1000;
        mem.write_u64(PDPT + g * 8, pd | 7)?;
        for i in 0..512u64 {
            mem.write_u64(pd + i * 8, ((g << 30) | (i << 21)) | 0x87)?; // P RW US PS
        }
    }
    // IDT: exceptions 0..31 and the timer vector, 64-bit interrupt gates, DPL0
    let gate = |handler: u64| -> [u8; 16] {
        let lo = (handler & 0xffff) | ((KERNEL_CS as u64) << 16) | (0x8eu64 << 40) | (((handler >> 16) & 0xffff) << 48);
        let hi = handler >> 32;
        let mut g = [0u8; 16];
        g[..8].copy_from_slice(&lo.to_le_bytes());
        g[8..].copy_from_slice(&hi.to_le_bytes());
        g
    };
    for v in 0..32u64 {
        mem.write(IDT_BASE + v * 16, &gate(STUB_EXC_BASE + 16 * v))?;
    }
    mem.write(IDT_BASE + TIMER_VECTOR as u64 * 16, &gate(STUB_TIMER_ISR))?;
    let mut idtr = [0u8; 10];
    idtr[..2].copy_from_slice(&((256 * 16 - 1) as u16).to_le_bytes());
    idtr[2..].copy_from_slice(&IDT_BASE.to_le_bytes());
    mem.write(IDTR_ADDR, &idtr)?;

    // per-vCPU block: Linux-like GDT, TSS (RSP0 = top of the block), parameter block
    for i in 0..cfg.vcpus {
        let b = vcpu_block(i);
        let tss = b + TSS_OFF;
        let gdt: [u64; 10] = [
            0,
            0x00cf_9b00_0000_ffff, // 0x08 kernel 32-bit code
            0x00af_9b00_0000_ffff, // 0x10 __KERNEL_CS
            0x00cf_9300_0000_ffff, // 0x18 __KERNEL_DS
            0x00cf_fb00_0000_ffff, // 0x20 __USER32_CS
            0x00cf_f300_0000_ffff, // 0x28 __USER_DS
            0x00af_fb00_0000_ffff, // 0x30 __USER_CS
            0,
            TSS_LIMIT | ((tss & 0xff_ffff) << 16) | (0x89u64 << 40) | (((tss >> 24) & 0xff) << 56), // 0x40 TSS
            tss >> 32,
        ];
        for (k, d) in gdt.iter().enumerate() {
            mem.write_u64(b + GDT_OFF + k as u64 * 8, *d)?;
        }
        // I/O permission bitmap (all ports 0..0x3ff allowed). IOPL=3 alone would do on
        // VT-x/AMD-V, but PVM runs CPL3 with hardware IOPL 0 and honours the bitmap.
        mem.zero(tss, TSS_LIMIT)?;
        mem.write_u64(tss + 4, b + VCPU_BLOCK_SZ)?; // RSP0
        mem.write(tss + 0x66, &(TSS_IOPB as u16).to_le_bytes())?;
        mem.write(tss + TSS_LIMIT, &[0xff])?;
        mem.write_u64(b + TIMER_OFF, 0)?;
        let region = user_region(i);
        let p = WlParams {
            workload: cfg.workload.code(),
            vcpu: i,
            work_units: cfg.work,
            exit_every: cfg.exit_every,
            bz_bytes: cfg.bzip2_unit_bytes,
            loop_iters: cfg.loop_unit_iters,
            heap_lo: region,
            heap_hi: region + HEAP_BYTES,
            ..Default::default()
        };
        // SAFETY: WlParams is repr(C) plain data.
        let bytes =
            unsafe { std::slice::from_raw_parts(&p as *const WlParams as *const u8, std::mem::size_of::<WlParams>()) };
        mem.write(b + PARAMS_OFF, bytes)?;
    }
    Ok(())
}

impl Shared {
    pub(crate) fn new(cfg: &Config) -> Result<Arc<Shared>, Error> {
        cfg.validate()?;
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
        let mem = GuestMem::new(mem_size(cfg.vcpus))?;
        let region = kvm_userspace_memory_region {
            slot: 0,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: mem.size(),
            userspace_addr: mem.host_addr(),
        };
        // SAFETY: the region is our mapping, which outlives the VM fd (Shared field order).
        unsafe { vm.set_user_memory_region(region) }.map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
        // Needed on Intel VT-x without unrestricted guest; harmless (or unsupported) elsewhere.
        let _ = vm.set_tss_address(0xfffb_d000);
        vm.create_irq_chip().map_err(|e| Error::kvm("KVM_CREATE_IRQCHIP", e))?;
        let cpuid =
            kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| Error::kvm("KVM_GET_SUPPORTED_CPUID", e))?;
        let user_entry = load_elf(&mem, GUEST_ELF)?;
        write_tables(&mem, cfg)?;
        Ok(Arc::new(Shared { vm, cpuid, user_entry, cfg: cfg.clone(), mem, _kvm: kvm }))
    }
}

fn seg(selector: u16, type_: u8, long: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: 1,
        dpl: 0,
        db: if long { 0 } else { 1 },
        s: 1,
        l: long as u8,
        g: 1,
        ..Default::default()
    }
}

fn setup_vcpu(sh: &Shared, i: u32) -> Result<VcpuFd, Error> {
    let op = |what: &str| format!("vCPU {i}: {what}");
    let vcpu = sh.vm.create_vcpu(i as u64).map_err(|e| Error::kvm(op("KVM_CREATE_VCPU"), e))?;
    let mut cpuid = sh.cpuid.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (i << 24),
            0xb | 0x1f => e.edx = i,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(|e| Error::kvm(op("KVM_SET_CPUID2"), e))?;

    let b = vcpu_block(i);
    let mut s = vcpu.get_sregs().map_err(|e| Error::kvm(op("KVM_GET_SREGS"), e))?;
    s.gdt.base = b + GDT_OFF;
    s.gdt.limit = 10 * 8 - 1;
    s.cs = seg(KERNEL_CS, 0xb, true);
    s.ds = seg(KERNEL_DS, 0x3, false);
    s.es = s.ds;
    s.fs = s.ds;
    s.gs = s.ds;
    s.ss = s.ds;
    s.tr = kvm_segment {
        base: b + TSS_OFF,
        limit: TSS_LIMIT as u32,
        selector: TSS_SEL,
        type_: 0xb,
        present: 1,
        ..Default::default()
    };
    s.cr3 = PML4;
    s.cr4 = 0x20 | 0x200 | 0x400 | 0x1_0000; // PAE OSFXSR OSXMMEXCPT FSGSBASE
    s.cr0 = 0x8005_0033; // PG AM WP NE ET MP PE
    s.efer = 0x501; // SCE LME LMA
    vcpu.set_sregs(&s).map_err(|e| Error::kvm(op("KVM_SET_SREGS"), e))?;

    let msrs =
        Msrs::from_entries(&[kvm_msr_entry { index: MSR_STAR, data: 0x0023_0010_0000_0000, ..Default::default() }])
            .map_err(|e| Error::Thread(format!("Msrs: {e:?}")))?;
    let n = vcpu.set_msrs(&msrs).map_err(|e| Error::kvm(op("KVM_SET_MSRS"), e))?;
    if n != 1 {
        return Err(Error::Kvm { op: op("KVM_SET_MSRS(STAR)"), source: std::io::Error::other("MSR not accepted") });
    }

    let timer_count = if sh.cfg.timer_hz == 0 { 0 } else { (APIC_HZ / sh.cfg.timer_hz as u64).max(1) };
    let regs = kvm_regs {
        rip: STUB_ENTRY,
        rflags: 2,
        rsp: b + VCPU_BLOCK_SZ,
        rdi: b + PARAMS_OFF,
        r10: user_region(i) + USER_REGION - 64,
        r14: sh.user_entry,
        r12: timer_count,
        r13: 0x3002 | if timer_count != 0 { 0x200 } else { 0 }, // IOPL=3, IF if timer
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| Error::kvm(op("KVM_SET_REGS"), e))?;
    // With the in-kernel irqchip, APs (vCPU id != 0) would wait for INIT/SIPI: start
    // every vCPU directly at the stub instead.
    vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE })
        .map_err(|e| Error::kvm(op("KVM_SET_MP_STATE"), e))?;
    Ok(vcpu)
}

fn dump_regs(vcpu: &VcpuFd) -> String {
    let mut out = String::new();
    match vcpu.get_regs() {
        Ok(r) => {
            out += &format!(
                "rip={:#x} rsp={:#x} rflags={:#x}\nrax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}\nr8={:#x} r9={:#x} r10={:#x} r11={:#x} r12={:#x} r13={:#x} r14={:#x} r15={:#x}",
                r.rip,
                r.rsp,
                r.rflags,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rbp,
                r.r8,
                r.r9,
                r.r10,
                r.r11,
                r.r12,
                r.r13,
                r.r14,
                r.r15
            )
        }
        Err(e) => out += &format!("KVM_GET_REGS failed: {e}"),
    }
    match vcpu.get_sregs() {
        Ok(s) => {
            out += &format!(
                "\ncs={:#x} (dpl {}) ss={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}/{:#x} gdt={:#x}/{:#x}",
                s.cs.selector,
                s.cs.dpl,
                s.ss.selector,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.idt.base,
                s.idt.limit,
                s.gdt.base,
                s.gdt.limit
            )
        }
        Err(e) => out += &format!("\nKVM_GET_SREGS failed: {e}"),
    }
    out
}

fn fault(vcpu: &VcpuFd, i: u32, reason: String) -> Error {
    Error::GuestFault { vcpu: i, reason, registers: dump_regs(vcpu) }
}

/// The body of vCPU thread `i` once started: KVM_RUN until the guest reports done.
fn run_vcpu(sh: &Shared, i: u32, mut vcpu: VcpuFd, emu: &Sender<EmuMsg>, tid: u32) -> Result<VcpuTruth, Error> {
    let mut exits: BTreeMap<String, u64> = BTreeMap::new();
    let mut runs = 0u64;
    let mut progress = 0u64;
    let params_addr = vcpu_block(i) + PARAMS_OFF;
    let mono0 = monotonic_ns();
    let t0 = Instant::now();
    let status: i64 = loop {
        runs += 1;
        let exit = vcpu.run();
        let reason: &'static str = match &exit {
            Ok(VcpuExit::IoOut(..)) | Ok(VcpuExit::IoIn(..)) => "io",
            Ok(VcpuExit::Hlt) => "hlt",
            Ok(VcpuExit::Intr) => "intr",
            Ok(VcpuExit::Shutdown) => "shutdown",
            Ok(VcpuExit::InternalError) => "internal_error",
            Ok(VcpuExit::FailEntry(..)) => "fail_entry",
            Ok(VcpuExit::MmioRead(..)) | Ok(VcpuExit::MmioWrite(..)) => "mmio",
            Ok(_) => "other",
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => "intr",
            Err(_) => "error",
        };
        *exits.entry(reason.to_string()).or_default() += 1;
        match exit {
            Ok(VcpuExit::IoOut(PORT_PROGRESS, _)) => {
                progress += 1;
                let p: WlParams = sh.mem.read_obj(params_addr)?;
                let _ = emu.send(EmuMsg::Exit { buf: p.io_buf, len: p.io_len });
            }
            Ok(VcpuExit::IoOut(PORT_DONE, data)) => {
                let mut v = [0u8; 4];
                v[..data.len().min(4)].copy_from_slice(&data[..data.len().min(4)]);
                break i32::from_le_bytes(v) as i64;
            }
            Ok(VcpuExit::IoOut(PORT_BZ_ERROR, data)) => {
                let code = data.first().copied().unwrap_or(0);
                return Err(fault(&vcpu, i, format!("libbz2 bz_internal_error({code}) in the guest")));
            }
            Ok(VcpuExit::IoOut(PORT_FAULT, _)) => {
                let r = vcpu.get_regs().map_err(|e| Error::kvm(format!("vCPU {i}: KVM_GET_REGS"), e))?;
                return Err(Error::GuestException {
                    vcpu: i,
                    vector: r.rax as u32,
                    name: exception_name(r.rax as u32),
                    error_code: r.rbx,
                    rip: r.rcx,
                    rsp: r.rsi,
                    cs: r.r8,
                    cr2: r.rdi,
                    rflags: r.r9,
                });
            }
            Ok(VcpuExit::IoOut(port, _)) => {
                return Err(fault(&vcpu, i, format!("unexpected OUT to port {port:#x}")));
            }
            Ok(VcpuExit::IoIn(port, _)) => {
                return Err(fault(&vcpu, i, format!("unexpected IN from port {port:#x}")));
            }
            Ok(VcpuExit::Hlt) => {
                return Err(fault(&vcpu, i, "guest halted (HLT) before finishing".into()));
            }
            Ok(VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                return Err(fault(&vcpu, i, "KVM_EXIT_SHUTDOWN (triple fault)".into()));
            }
            Ok(VcpuExit::InternalError) => {
                // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so `internal` is the active member.
                let (sub, nd) = unsafe {
                    let run = vcpu.get_kvm_run();
                    (run.__bindgen_anon_1.internal.suberror, run.__bindgen_anon_1.internal.ndata)
                };
                return Err(fault(&vcpu, i, format!("KVM_EXIT_INTERNAL_ERROR suberror {sub} ndata {nd}")));
            }
            Ok(VcpuExit::FailEntry(r, cpu)) => {
                return Err(fault(&vcpu, i, format!("KVM_EXIT_FAIL_ENTRY hardware reason {r:#x} on cpu {cpu}")));
            }
            Ok(other) => {
                let what = format!("unexpected exit {other:?}");
                return Err(fault(&vcpu, i, what));
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
            Err(e) => return Err(Error::kvm(format!("vCPU {i}: KVM_RUN"), e)),
        }
    };
    let elapsed = t0.elapsed();
    let mono1 = monotonic_ns();
    // SAFETY: no preconditions.
    let last_cpu = unsafe { libc::sched_getcpu() };
    // Closing the vCPU tears it down in the kernel (milliseconds under PVM); count
    // that too, as a tracer of this thread does.
    drop(vcpu);
    // The kernel's sum_exec_runtime brought up to date (task_sched_runtime): reading
    // /proc/thread-self/schedstat from the running thread would miss the time since
    // the scheduler last updated it.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    let sum_exec_runtime_ns = ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64;
    let p: WlParams = sh.mem.read_obj(params_addr)?;
    let timer: u64 = sh.mem.read_obj(vcpu_block(i) + TIMER_OFF)?;
    if status != 0 {
        return Err(Error::Workload { vcpu: i, status, what: workload_status(status) });
    }
    Ok(VcpuTruth {
        index: i,
        tid,
        name: format!("CPU {i}/KVM"),
        exits,
        kvm_run_calls: runs,
        progress_exits: progress,
        timer_interrupts: timer,
        work_units: p.units_done,
        checksum: p.checksum,
        elapsed_ns: elapsed.as_nanos() as u64,
        start_monotonic_ns: mono0,
        end_monotonic_ns: mono1,
        last_cpu: last_cpu.max(0) as u32,
        sum_exec_runtime_ns,
    })
}

/// CLOCK_MONOTONIC in ns (the clock of bpf_ktime_get_ns and perf timestamps).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn spawn_vcpu(
    sh: Arc<Shared>,
    i: u32,
    ready: Sender<(u32, Result<u32, Error>)>,
    start: Receiver<bool>,
    emu: Sender<EmuMsg>,
) -> Result<JoinHandle<Result<VcpuTruth, Error>>, Error> {
    std::thread::Builder::new()
        .name(format!("CPU {i}/KVM"))
        .spawn(move || {
            let tid = gettid();
            let prep = (|| {
                if let Some(cpus) = &sh.cfg.pin_vcpus {
                    let c = cpus[i as usize % cpus.len()];
                    pin_current(&format!("vCPU {i}"), &[c])?;
                }
                setup_vcpu(&sh, i)
            })();
            let vcpu = match prep {
                Ok(v) => {
                    let _ = ready.send((i, Ok(tid)));
                    v
                }
                Err(e) => {
                    let _ = ready.send((i, Err(Error::Thread(e.to_string()))));
                    let _ = emu.send(EmuMsg::Done);
                    return Err(e);
                }
            };
            drop(ready);
            if start.recv() != Ok(true) {
                let _ = emu.send(EmuMsg::Done);
                return Err(Error::Thread(format!("vCPU {i}: VM not started")));
            }
            let r = run_vcpu(&sh, i, vcpu, &emu, tid);
            let _ = emu.send(EmuMsg::Done);
            r
        })
        .map_err(|e| Error::Thread(format!("spawn vCPU thread {i}: {e}")))
}

/// The emulator (QEMU main loop) body: device-model work for every exit handed over
/// by the vCPUs, plus periodic work on its own timer, until every vCPU is done.
pub(crate) fn emulator_loop(sh: &Shared, rx: Receiver<EmuMsg>, tid: u32, name: String) -> EmulatorTruth {
    let n = sh.cfg.vcpus;
    let period = (sh.cfg.emulator_hz > 0).then(|| Duration::from_nanos(1_000_000_000 / sh.cfg.emulator_hz as u64));
    let mut t = EmulatorTruth { tid, name, ..Default::default() };
    let mut done = 0u32;
    let mut next = period.map(|p| Instant::now() + p);
    let mut cursor = 0u64;
    while done < n {
        let msg = match next {
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline { Err(RecvTimeoutError::Timeout) } else { rx.recv_timeout(deadline - now) }
            }
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(EmuMsg::Exit { buf, len }) => {
                let h = sh.mem.checksum(buf, len).unwrap_or(0);
                t.digest = t.digest.rotate_left(5) ^ h;
                t.exit_work_items += 1;
                t.bytes_checksummed += len;
            }
            Ok(EmuMsg::Done) => done += 1,
            Err(RecvTimeoutError::Timeout) => {
                // own timer: scan a window of guest RAM (like a display/dirty-log refresh)
                let region = user_region((t.timer_work_items % n as u64) as u32);
                let off = cursor % (HEAP_BYTES - EMU_TICK_BYTES);
                cursor = cursor.wrapping_add(EMU_TICK_BYTES);
                let h = sh.mem.checksum(region + off, EMU_TICK_BYTES).unwrap_or(0);
                t.digest = t.digest.rotate_left(5) ^ h;
                t.timer_work_items += 1;
                t.bytes_checksummed += EMU_TICK_BYTES;
                next = period.map(|p| next.unwrap() + p);
                if let (Some(nx), Some(p)) = (next, period)
                    && nx + p < Instant::now()
                {
                    next = Some(Instant::now() + p); // fell far behind: do not burst
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    t.work_items = t.exit_work_items + t.timer_work_items;
    t
}

pub(crate) fn assemble(
    sh: &Shared,
    vcpus: Vec<Result<VcpuTruth, Error>>,
    emulator: EmulatorTruth,
    elapsed: Duration,
) -> Result<GroundTruth, Error> {
    let mut out = Vec::new();
    for v in vcpus {
        out.push(v?);
    }
    Ok(GroundTruth {
        pid: std::process::id(),
        config: sh.cfg.clone(),
        vcpus: out,
        emulator,
        elapsed_ns: elapsed.as_nanos() as u64,
    })
}

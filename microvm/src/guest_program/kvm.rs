//! The KVM platform for guest programs: one vCPU thread ("CPU 0/KVM") runs the program
//! at CPL3 and serves each of its system calls at the exit, as QEMU's vCPU threads
//! serve port I/O; the calling thread is the emulator (main loop) with its periodic
//! device-model work.
//!
//! The guest has no kernel: the CPL0 stub only enters CPL3 once (IRETQ) and reports CPU
//! exceptions. SYSCALL goes to a two-instruction entry, `out` to PORT_SYSCALL and back;
//! see guest/stub.S and docs/microvm.md for PVM versus VT-x/SVM.

use std::sync::mpsc::{self, Receiver};
use std::time::Instant;

use kvm_bindings::kvm_regs;
use kvm_ioctls::{Cap, SyncReg, VcpuExit, VcpuFd};
use serde::{Deserialize, Serialize};

use super::loader::{Loaded, ProgramSpec, load};
use super::server::{Outcome, Policy, Syscall, SyscallServer, SyscallStats};
use super::space::Layout;
use crate::boot::{write_idt, write_page_tables, write_vcpu_block};
use crate::emulator::{EmuMsg, ScanArea, emulator_loop};
use crate::layout::*;
use crate::mem::GuestMem;
use crate::vcpu::{MSR_STAR, STAR_LINUX, Unhandled, create_vcpu, exit_reason, pin_current};
use crate::vm::{create_vm, load_builtin_stub, open_kvm};
use crate::{EmulatorTruth, Error, KvmRunTruth, VcpuTruth, sys};

const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;

/// The VM around a guest program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramConfig {
    /// Guest RAM in bytes: a multiple of 2 MiB, 64 MiB..=16 GiB.
    pub mem_bytes: u64,
    pub pin_vcpu: Option<Vec<usize>>,
    pub pin_emulator: Option<Vec<usize>>,
    /// Emulator thread's own timer frequency (device-model work per tick); 0 = none.
    pub emulator_hz: u32,
}

impl Default for ProgramConfig {
    fn default() -> Self {
        ProgramConfig { mem_bytes: 1 << 30, pin_vcpu: None, pin_emulator: None, emulator_hz: 100 }
    }
}

impl ProgramConfig {
    pub fn validate(&self) -> Result<(), Error> {
        if !self.mem_bytes.is_multiple_of(2 << 20) || !(64 << 20..=16 << 30).contains(&self.mem_bytes) {
            return Err(Error::Config(format!(
                "--mem {} MiB: give a multiple of 2 MiB between 64 MiB and 16 GiB",
                self.mem_bytes >> 20
            )));
        }
        if self.emulator_hz > 100_000 {
            return Err(Error::Config(format!("emulator timer {} Hz too high (max 100000)", self.emulator_hz)));
        }
        Ok(())
    }
}

/// Ground truth of a guest-program run: what `GroundTruth` holds for a workload, plus
/// the program's system calls, bytes and exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTruth {
    pub pid: u32,
    pub config: ProgramConfig,
    pub program: String,
    pub argv: Vec<String>,
    /// One vCPU: `exits["io"]` counts the system-call exits.
    pub vcpus: Vec<VcpuTruth>,
    pub emulator: EmulatorTruth,
    pub elapsed_ns: u64,
    pub exit_status: i32,
    /// 3 where SYSCALL stayed at CPL3 (PVM), 0 where it entered CPL0 (VT-x, SVM).
    pub syscall_entry_cpl: u8,
    pub syscalls: SyscallStats,
}

/// Guest RAM as a slice for the loader and the server.
struct Ram {
    ptr: *mut u8,
    len: usize,
}
// SAFETY: the pointer is into GuestMem, which outlives the vCPU thread (joined before
// the VM is dropped); only the vCPU thread writes through it, while the guest is stopped.
unsafe impl Send for Ram {}

impl Ram {
    fn of(mem: &GuestMem) -> Ram {
        Ram { ptr: mem.host_addr() as *mut u8, len: mem.size() as usize }
    }
    /// SAFETY: the guest must not run while the slice is used; the emulator thread
    /// only reads guest RAM with volatile loads (a checksum), as for the workloads.
    unsafe fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: see above; ptr/len describe the live guest RAM mapping.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

/// What the vCPU thread hands back.
struct VcpuEnd {
    truth: VcpuTruth,
    exit_status: i32,
    stats: SyscallStats,
    cpl: u8,
}

/// Runs `spec` as the guest of a new VM until it exits. The emulator loop runs on the
/// calling thread. Errors are one-line reasons (load failure, guest fault, an unknown
/// system call, KVM refusing).
pub fn run(spec: &ProgramSpec, cfg: &ProgramConfig, policy: Policy) -> Result<ProgramTruth, Error> {
    cfg.validate()?;
    let kvm = open_kvm()?;
    let mem = GuestMem::new(cfg.mem_bytes)?;
    let (vm, cpuid) = create_vm(&kvm, &mem)?;
    let sync_regs = kvm.check_extension(Cap::SyncRegs);
    load_builtin_stub(&mem)?;
    write_page_tables(&mem, cfg.mem_bytes)?;
    write_idt(&mem)?;
    write_vcpu_block(&mem, 0)?;
    let layout = Layout::new(cfg.mem_bytes);
    let mut ram = Ram::of(&mem);
    // SAFETY: no vCPU exists yet.
    let loaded = load(unsafe { ram.bytes() }, layout, spec).map_err(Error::Program)?;
    let server = SyscallServer::new(&loaded, policy).map_err(Error::Program)?;
    let vcpu =
        create_vcpu(&vm, &cpuid, 0, &[(MSR_STAR, STAR_LINUX), (MSR_LSTAR, STUB_SYSCALL), (MSR_SYSCALL_MASK, 0)])?;
    set_entry_regs(&vcpu, &loaded)?;

    // pin the emulator (this thread) before the vCPU thread exists: once it runs, this
    // function must not return before joining it (it uses guest RAM)
    if let Some(c) = &cfg.pin_emulator {
        pin_current("emulator thread", c)?;
    }
    let (emu_tx, emu_rx) = mpsc::channel();
    let pin = cfg.pin_vcpu.clone();
    let started = Instant::now();
    let handle = std::thread::Builder::new()
        .name("CPU 0/KVM".into())
        .spawn(move || {
            let r = (|| {
                if let Some(c) = pin.as_ref().and_then(|c| c.first()) {
                    pin_current("vCPU 0", &[*c])?;
                }
                run_vcpu(vcpu, ram, server, sync_regs)
            })();
            let _ = emu_tx.send(EmuMsg::Done);
            r
        })
        .map_err(|e| Error::Thread(format!("spawn vCPU thread: {e}")))?;
    let emu = run_emulator(&mem, cfg, layout, emu_rx);
    let end = handle.join().map_err(|_| Error::Thread("vCPU thread panicked".into()))??;
    let elapsed_ns = started.elapsed().as_nanos() as u64;
    drop(vm);
    Ok(ProgramTruth {
        pid: std::process::id(),
        config: cfg.clone(),
        program: loaded.exe.display().to_string(),
        argv: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        vcpus: vec![end.truth],
        emulator: emu,
        elapsed_ns,
        exit_status: end.exit_status,
        syscall_entry_cpl: end.cpl,
        syscalls: end.stats,
    })
}

/// The emulator (main loop) on this thread: its timer scans the program's memory.
fn run_emulator(mem: &GuestMem, cfg: &ProgramConfig, layout: Layout, rx: Receiver<EmuMsg>) -> EmulatorTruth {
    let tid = sys::gettid();
    let scan =
        ScanArea { base: layout.program_base, regions: 1, stride: 0, window: layout.ram_size - layout.program_base };
    emulator_loop(mem, 1, cfg.emulator_hz, scan, rx, tid, sys::thread_comm(tid))
}

/// The vCPU starts at the stub, which IRETQs to `entry` at CPL3 with RSP = the initial
/// stack. RDX = 0 at entry (no exit handler for a static program's _start).
fn set_entry_regs(vcpu: &VcpuFd, l: &Loaded) -> Result<(), Error> {
    let regs = kvm_regs {
        rip: STUB_ENTRY,
        rflags: 2,
        rsp: vcpu_block(0) + VCPU_BLOCK_SZ,
        r10: l.stack_pointer,
        r14: l.entry,
        r12: 0,     // no guest timer
        r13: 0x202, // user RFLAGS: IF, IOPL 0
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(|e| Error::kvm("vCPU 0: KVM_SET_REGS", e))
}

/// Reads the registers at a system-call exit (through the kvm_run page if SYNC_REGS).
fn get_regs(vcpu: &VcpuFd, sync: bool) -> Result<kvm_regs, Error> {
    if sync { Ok(vcpu.sync_regs().regs) } else { vcpu.get_regs().map_err(|e| Error::kvm("vCPU 0: KVM_GET_REGS", e)) }
}

fn set_regs(vcpu: &mut VcpuFd, r: &kvm_regs, sync: bool) -> Result<(), Error> {
    if sync {
        vcpu.sync_regs_mut().regs = *r;
        vcpu.set_sync_dirty_reg(SyncReg::Register);
        Ok(())
    } else {
        vcpu.set_regs(r).map_err(|e| Error::kvm("vCPU 0: KVM_SET_REGS", e))
    }
}

/// The CPL SYSCALL left the vCPU in (asked once, at the first call).
fn current_cpl(vcpu: &VcpuFd) -> Result<u8, Error> {
    let s = vcpu.get_sregs().map_err(|e| Error::kvm("vCPU 0: KVM_GET_SREGS", e))?;
    Ok((s.cs.selector & 3) as u8)
}

fn set_fs_base(vcpu: &VcpuFd, base: u64) -> Result<(), Error> {
    let mut s = vcpu.get_sregs().map_err(|e| Error::kvm("vCPU 0: KVM_GET_SREGS", e))?;
    s.fs.base = base;
    vcpu.set_sregs(&s).map_err(|e| Error::kvm("vCPU 0: KVM_SET_SREGS", e))
}

/// The vCPU thread: KVM_RUN until the program exits, serving each system call.
fn run_vcpu(mut vcpu: VcpuFd, mut ram: Ram, mut server: SyscallServer, sync: bool) -> Result<VcpuEnd, Error> {
    let tid = sys::gettid();
    if sync {
        vcpu.set_sync_valid_reg(SyncReg::Register);
    }
    let mut exits = std::collections::BTreeMap::<String, u64>::new();
    let (mut runs, mut cpl) = (0u64, None);
    let mono0 = sys::monotonic_ns();
    let t0 = Instant::now();
    let exit_status = loop {
        runs += 1;
        let exit = vcpu.run();
        *exits.entry(exit_reason(&exit).to_string()).or_default() += 1;
        let unhandled = match exit {
            Ok(VcpuExit::IoOut(PORT_SYSCALL, _)) => None,
            other => Some(Unhandled::from(other)),
        };
        if let Some(u) = unhandled {
            match u.into_error(&mut vcpu, 0) {
                Some(e) => return Err(e),
                None => continue,
            }
        }
        let cpl0 = match cpl {
            Some(c) => c == 0,
            None => *cpl.insert(current_cpl(&vcpu)?) == 0,
        };
        let mut r = get_regs(&vcpu, sync)?;
        let call = Syscall { nr: r.rax, args: [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9] };
        // SAFETY: the vCPU is stopped in this exit.
        match server.serve(unsafe { ram.bytes() }, call).map_err(Error::Program)? {
            Outcome::Return(v) => r.rax = v as u64,
            Outcome::SetFsBase(b) => {
                set_fs_base(&vcpu, b)?;
                r.rax = 0;
            }
            Outcome::Exit(code) => break code,
        }
        if cpl0 {
            r.rip = STUB_SYSRET_CPL0;
        }
        set_regs(&mut vcpu, &r, sync)?;
    };
    let elapsed = t0.elapsed();
    let mono1 = sys::monotonic_ns();
    let last_cpu = sys::current_cpu();
    drop(vcpu);
    let truth = VcpuTruth {
        index: 0,
        tid,
        name: "CPU 0/KVM".into(),
        exits,
        progress_exits: 0,
        timer_interrupts: 0,
        work_units: 0,
        checksum: 0,
        elapsed_ns: elapsed.as_nanos() as u64,
        start_monotonic_ns: mono0,
        end_monotonic_ns: mono1,
        sum_exec_runtime_ns: sys::thread_cputime_ns(),
        vmm: KvmRunTruth { kvm_run_calls: runs, last_cpu },
    };
    Ok(VcpuEnd { truth, exit_status, stats: server.stats().clone(), cpl: cpl.unwrap_or(3) })
}

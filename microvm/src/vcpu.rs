//! vCPU threads of the built-in workloads: create and configure each vCPU, run it
//! (KVM_RUN until the guest reports done), and describe guest faults.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{KVM_MP_STATE_RUNNABLE, Msrs, kvm_mp_state, kvm_msr_entry, kvm_regs};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use crate::boot::long_mode_sregs;
use crate::emulator::EmuMsg;
use crate::error::{CpuException, workload_status};
use crate::layout::*;
use crate::sys;
use crate::vm::Shared;
use crate::workload::WlParams;
use crate::{Error, KvmRunTruth, VcpuTruth};

/// Frequency of the KVM local APIC timer (APIC bus cycle 1 ns).
const APIC_HZ: u64 = 1_000_000_000;
pub(crate) const MSR_STAR: u32 = 0xc000_0081;
/// SYSRET to CS 0x33 / SS 0x2b, SYSCALL to CS 0x10 / SS 0x18 (Linux's values).
pub(crate) const STAR_LINUX: u64 = 0x0023_0010_0000_0000;

/// Creates vCPU `i` with the host's CPUID (APIC ids set to `i`), long-mode special
/// registers and the MSRs in `msrs`.
pub(crate) fn create_vcpu(
    vm: &VmFd,
    cpuid: &kvm_bindings::CpuId,
    i: u32,
    msrs: &[(u32, u64)],
) -> Result<VcpuFd, Error> {
    let op = |what: &str| format!("vCPU {i}: {what}");
    let vcpu = vm.create_vcpu(i as u64).map_err(|e| Error::kvm(op("KVM_CREATE_VCPU"), e))?;
    let mut cpuid = cpuid.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => e.ebx = (e.ebx & 0x00ff_ffff) | (i << 24),
            0xb | 0x1f => e.edx = i,
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(|e| Error::kvm(op("KVM_SET_CPUID2"), e))?;
    let s = vcpu.get_sregs().map_err(|e| Error::kvm(op("KVM_GET_SREGS"), e))?;
    vcpu.set_sregs(&long_mode_sregs(s, i)).map_err(|e| Error::kvm(op("KVM_SET_SREGS"), e))?;
    let entries: Vec<kvm_msr_entry> =
        msrs.iter().map(|&(index, data)| kvm_msr_entry { index, data, ..Default::default() }).collect();
    let msrs = Msrs::from_entries(&entries).map_err(|e| Error::Thread(format!("Msrs: {e:?}")))?;
    let n = vcpu.set_msrs(&msrs).map_err(|e| Error::kvm(op("KVM_SET_MSRS"), e))?;
    if n != entries.len() {
        let which = entries.get(n).map(|e| e.index).unwrap_or(0);
        return Err(Error::Kvm {
            op: op(&format!("KVM_SET_MSRS({which:#x})")),
            source: std::io::Error::other("MSR not accepted"),
        });
    }
    // With the in-kernel irqchip, APs (vCPU id != 0) would wait for INIT/SIPI: start
    // every vCPU directly at the stub instead.
    vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE })
        .map_err(|e| Error::kvm(op("KVM_SET_MP_STATE"), e))?;
    Ok(vcpu)
}

fn setup_vcpu(sh: &Shared, i: u32) -> Result<VcpuFd, Error> {
    let vcpu = create_vcpu(&sh.vm, &sh.cpuid, i, &[(MSR_STAR, STAR_LINUX)])?;
    let timer_count = if sh.cfg.timer_hz == 0 { 0 } else { (APIC_HZ / sh.cfg.timer_hz as u64).max(1) };
    let b = vcpu_block(i);
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
    vcpu.set_regs(&regs).map_err(|e| Error::kvm(format!("vCPU {i}: KVM_SET_REGS"), e))?;
    Ok(vcpu)
}

/// The registers of a stopped vCPU, for an error message.
pub(crate) fn dump_regs(vcpu: &VcpuFd) -> String {
    let mut out = match vcpu.get_regs() {
        Ok(r) => format!(
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
        ),
        Err(e) => format!("KVM_GET_REGS failed: {e}"),
    };
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

pub(crate) fn fault(vcpu: &VcpuFd, i: u32, reason: String) -> Error {
    Error::GuestFault { vcpu: i, reason, registers: dump_regs(vcpu) }
}

/// The reason name of one KVM_RUN return, as counted in `VcpuTruth::exits`.
pub(crate) fn exit_reason(exit: &Result<VcpuExit, kvm_ioctls::Error>) -> &'static str {
    match exit {
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
    }
}

/// The guest's CPU exception as reported by the stub (OUT to PORT_FAULT).
pub(crate) fn guest_exception(vcpu: &VcpuFd, i: u32) -> Error {
    match vcpu.get_regs() {
        Ok(r) => Error::GuestException {
            vcpu: i,
            exception: CpuException {
                vector: r.rax,
                error_code: r.rbx,
                rip: r.rcx,
                rsp: r.rsi,
                cs: r.r8,
                cr2: r.rdi,
                rflags: r.r9,
            },
        },
        Err(e) => Error::kvm(format!("vCPU {i}: KVM_GET_REGS"), e),
    }
}

/// An exit the caller's loop did not handle, detached from the borrow of the vCPU.
pub(crate) enum Unhandled {
    /// Interrupted by a signal: run again.
    Retry,
    /// The stub reported a CPU exception (OUT to PORT_FAULT).
    Exception,
    InternalError,
    Fault(String),
    KvmRun(kvm_ioctls::Error),
}

impl From<Result<VcpuExit<'_>, kvm_ioctls::Error>> for Unhandled {
    fn from(exit: Result<VcpuExit<'_>, kvm_ioctls::Error>) -> Self {
        Unhandled::Fault(match exit {
            Ok(VcpuExit::IoOut(PORT_FAULT, _)) => return Unhandled::Exception,
            Ok(VcpuExit::IoOut(port, _)) => format!("unexpected OUT to port {port:#x}"),
            Ok(VcpuExit::IoIn(port, _)) => format!("unexpected IN from port {port:#x}"),
            Ok(VcpuExit::Hlt) => "guest halted (HLT) before finishing".into(),
            Ok(VcpuExit::Intr) => return Unhandled::Retry,
            Ok(VcpuExit::Shutdown) => "KVM_EXIT_SHUTDOWN (triple fault)".into(),
            Ok(VcpuExit::InternalError) => return Unhandled::InternalError,
            Ok(VcpuExit::FailEntry(r, cpu)) => format!("KVM_EXIT_FAIL_ENTRY hardware reason {r:#x} on cpu {cpu}"),
            Ok(other) => format!("unexpected exit {other:?}"),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => return Unhandled::Retry,
            Err(e) => return Unhandled::KvmRun(e),
        })
    }
}

impl Unhandled {
    /// The error that ends the run, or `None` when the vCPU should simply run again.
    pub(crate) fn into_error(self, vcpu: &mut VcpuFd, i: u32) -> Option<Error> {
        let reason = match self {
            Unhandled::Retry => return None,
            Unhandled::Exception => return Some(guest_exception(vcpu, i)),
            Unhandled::KvmRun(e) => return Some(Error::kvm(format!("vCPU {i}: KVM_RUN"), e)),
            Unhandled::InternalError => {
                // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, so `internal` is the
                // active member.
                let (sub, nd) = unsafe {
                    let run = vcpu.get_kvm_run();
                    (run.__bindgen_anon_1.internal.suberror, run.__bindgen_anon_1.internal.ndata)
                };
                format!("KVM_EXIT_INTERNAL_ERROR suberror {sub} ndata {nd}")
            }
            Unhandled::Fault(r) => r,
        };
        Some(fault(vcpu, i, reason))
    }
}

/// The body of vCPU thread `i` once started: KVM_RUN until the guest reports done.
fn run_vcpu(sh: &Shared, i: u32, mut vcpu: VcpuFd, emu: &Sender<EmuMsg>, tid: u32) -> Result<VcpuTruth, Error> {
    let mut exits: BTreeMap<String, u64> = BTreeMap::new();
    let mut runs = 0u64;
    let mut progress = 0u64;
    let params_addr = vcpu_block(i) + PARAMS_OFF;
    let mono0 = sys::monotonic_ns();
    let t0 = Instant::now();
    let status: i64 = loop {
        runs += 1;
        let exit = vcpu.run();
        *exits.entry(exit_reason(&exit).to_string()).or_default() += 1;
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
            other => {
                let u = Unhandled::from(other);
                if let Some(e) = u.into_error(&mut vcpu, i) {
                    return Err(e);
                }
            }
        }
    };
    let elapsed = t0.elapsed();
    let mono1 = sys::monotonic_ns();
    let last_cpu = sys::current_cpu();
    // Closing the vCPU tears it down in the kernel (milliseconds under PVM); count
    // that too, as a tracer of this thread does.
    drop(vcpu);
    let sum_exec_runtime_ns = sys::thread_cputime_ns();
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
        progress_exits: progress,
        timer_interrupts: timer,
        work_units: p.units_done,
        checksum: p.checksum,
        elapsed_ns: elapsed.as_nanos() as u64,
        start_monotonic_ns: mono0,
        end_monotonic_ns: mono1,
        sum_exec_runtime_ns,
        vmm: KvmRunTruth { kvm_run_calls: runs, last_cpu },
    })
}

/// Starts vCPU thread `i` ("CPU i/KVM"): it pins itself, sets up its vCPU, reports its
/// tid on `ready`, waits for `start`, runs the guest and tells the emulator it is done.
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
            let tid = sys::gettid();
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

/// Pins the calling thread; the error names `what` was being pinned.
pub(crate) fn pin_current(what: &str, cpus: &[usize]) -> Result<(), Error> {
    sys::set_affinity(0, cpus).map_err(|source| Error::Pin { what: what.into(), cpus: cpus.to_vec(), source })
}

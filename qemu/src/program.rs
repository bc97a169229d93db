//! Unmodified Linux programs under real QEMU (issue 10, part 2), with the micro-VM's
//! program loader and system-call server (`microvm::guest_program`), run as an external
//! device model the way a vhost-user backend is: vmmtrace maps the guest RAM (a shared
//! memory backend), loads the program into it, and serves its system calls. The guest's
//! SYSCALL entry posts the call in the mailbox and writes one byte to a UART whose
//! chardev is vmmtrace's socket; vmmtrace serves the call, puts the answer in the
//! mailbox and writes one byte back, which QEMU's main loop receives into the UART,
//! where the guest polls for it. Every port access is a userspace exit QEMU serves,
//! counted by the guest.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use microvm::guest_program::{Layout, Outcome, Policy, ProgramSpec, Syscall, SyscallServer, SyscallStats, load};
use serde::{Deserialize, Serialize};

use crate::layout::{self, slot, syscall};
use crate::vm::{RunningVm, stamp};
use crate::{Accel, Config, Error, ThreadRole, ThreadTruth, Vm};

/// How to run a program. `Default`: 1 GiB of guest RAM, accel auto, no pinning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramOptions {
    /// Guest RAM in MiB (64..=2048, even): the program, its libraries, heap, mmaps and 8 MiB stack.
    pub mem_mib: u64,
    pub pin_vcpus: Option<Vec<usize>>,
    pub pin_vmm: Option<Vec<usize>>,
    pub accel: Accel,
    pub qemu: Option<PathBuf>,
    pub name: Option<String>,
}

impl Default for ProgramOptions {
    fn default() -> Self {
        ProgramOptions { mem_mib: 1024, pin_vcpus: None, pin_vmm: None, accel: Accel::Auto, qemu: None, name: None }
    }
}

/// The program's vCPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramVcpuTruth {
    pub tid: u32,
    pub name: String,
    /// Port exits counted by the guest from "go": per system call, the byte out, the
    /// line-status polls until the answer is there, the byte in; then the final
    /// isa-debug-exit.
    pub exits: BTreeMap<String, u64>,
    /// System calls the guest's entry counted (equals `syscalls.total`).
    pub syscalls: u64,
    pub sum_exec_runtime_ns: u64,
    pub affinity: Vec<usize>,
}

/// Ground truth of a program run under QEMU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramTruth {
    pub pid: u32,
    pub name: String,
    pub accel: Accel,
    pub qemu: PathBuf,
    pub command: Vec<String>,
    pub program: String,
    pub argv: Vec<String>,
    pub mem_mib: u64,
    pub qmp_ready_ns: u64,
    pub boot_ns: u64,
    pub guest_boot_ns: u64,
    /// From "go" to the program's exit.
    pub elapsed_ns: u64,
    pub exit_status: i32,
    pub vcpu: ProgramVcpuTruth,
    /// Served by vmmtrace: calls by name with the time spent serving them, bytes.
    pub syscalls: SyscallStats,
    pub threads: Vec<ThreadTruth>,
}

/// Boots QEMU, loads the program into its RAM, runs it and serves its system calls
/// until it exits. The program's stdin, stdout and stderr are `policy.stdio`.
pub fn run(spec: &ProgramSpec, policy: Policy, opts: &ProgramOptions) -> Result<ProgramTruth, Error> {
    boot(spec, policy, opts)?.run()
}

/// A program loaded into a booted QEMU whose vCPU waits at its gate: attach probes,
/// then [`BootedProgram::run`].
pub struct BootedProgram {
    vm: Vm,
    server: SyscallServer,
    spec: ProgramSpec,
    mem_mib: u64,
}

/// Boots QEMU in program mode and loads the program (its vCPU waits for "go").
pub fn boot(spec: &ProgramSpec, policy: Policy, opts: &ProgramOptions) -> Result<BootedProgram, Error> {
    let cfg = Config {
        name: opts.name.clone(),
        vcpus: 1,
        pin_vcpus: opts.pin_vcpus.clone(),
        pin_vmm: opts.pin_vmm.clone(),
        accel: opts.accel,
        qemu: opts.qemu.clone(),
        program_mem_mib: Some(opts.mem_mib),
        ..Config::default()
    };
    let mut vm = Vm::boot(&cfg)?;
    // SAFETY: the guest waits at its gate, reading only the mailbox.
    let ram = unsafe { vm.ram.bytes() };
    let loaded = load(ram, Layout::new(opts.mem_mib << 20), spec).map_err(Error::Program)?;
    vm.ram.write_u64(syscall::ENTRY, loaded.entry);
    vm.ram.write_u64(syscall::SP, loaded.stack_pointer);
    let server = SyscallServer::new(&loaded, policy).map_err(Error::Program)?;
    Ok(BootedProgram { vm, server, spec: spec.clone(), mem_mib: opts.mem_mib })
}

impl BootedProgram {
    pub fn pid(&self) -> u32 {
        self.vm.pid()
    }
    pub fn vcpu_tids(&self) -> Vec<u32> {
        self.vm.vcpu_tids()
    }
    pub fn vmm_tids(&self) -> Vec<u32> {
        self.vm.vmm_tids()
    }
    /// Starts the program and serves its system calls until it exits.
    pub fn run(self) -> Result<ProgramTruth, Error> {
        serve(self.vm.start(), self.server, &self.spec, self.mem_mib)
    }
}

/// Serves system calls until the program exits; then the truth.
fn serve(
    mut running: RunningVm,
    mut server: SyscallServer,
    spec: &ProgramSpec,
    mem_mib: u64,
) -> Result<ProgramTruth, Error> {
    let go = running.go;
    let vm = &mut running.vm;
    let mut socket = vm.syscalls.take().expect("booted in program mode");
    let mut byte = [0u8; 1];
    let (exit_status, done) = loop {
        if !matches!(socket.read(&mut byte), Ok(1)) {
            return Err(vm.failure("while the program ran"));
        }
        let nr = vm.ram.read_u64(syscall::NR);
        let args = std::array::from_fn(|i| vm.ram.read_u64(syscall::ARGS + 8 * i as u64));
        // SAFETY: the guest spins in its system-call entry, reading only the mailbox.
        let outcome = server.serve(unsafe { vm.ram.bytes() }, Syscall { nr, args }).map_err(Error::Program)?;
        let (result, action) = match outcome {
            Outcome::Return(v) => (v as u64, syscall::RETURN),
            Outcome::SetFsBase(base) => (base, syscall::SET_FS),
            Outcome::Exit(status) => break (status, stamp()),
        };
        vm.ram.write_u64(syscall::RESULT, result);
        vm.ram.write_u64(syscall::ACTION, action);
        if socket.write_all(&[1]).is_err() {
            return Err(vm.failure("while the program ran"));
        }
    };
    let mut answer_exit = Ok(());
    let threads = vm.end(|ram| {
        ram.write_u64(syscall::ACTION, syscall::EXIT);
        answer_exit = socket.write_all(&[1]);
    })?;
    answer_exit.map_err(|e| Error::Qmp(format!("answer the program's exit: {e}")))?;
    let tid = vm.vcpus[0].tid;
    let thread = threads.iter().find(|t| t.tid == tid && t.role == ThreadRole::Vcpu);
    let exits = vm.ram.read_u64(layout::slot_addr(0) + slot::EXITS);
    Ok(ProgramTruth {
        pid: vm.pid(),
        name: vm.name.clone(),
        accel: vm.accel,
        qemu: vm.qemu.clone(),
        command: vm.command.clone(),
        program: spec.path.display().to_string(),
        argv: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
        mem_mib,
        qmp_ready_ns: vm.qmp_ready_ns,
        boot_ns: vm.boot_ns,
        guest_boot_ns: vm.guest_boot_ns,
        elapsed_ns: done.mono_ns - go.mono_ns,
        exit_status,
        vcpu: ProgramVcpuTruth {
            tid,
            name: thread.map(|t| t.comm.clone()).unwrap_or_default(),
            exits: BTreeMap::from([("io".to_string(), exits)]),
            syscalls: vm.ram.read_u64(syscall::COUNT),
            sum_exec_runtime_ns: thread.map_or(0, |t| t.on_cpu_ns),
            affinity: thread.map(|t| t.affinity.clone()).unwrap_or_default(),
        },
        syscalls: server.stats().clone(),
        threads,
    })
}

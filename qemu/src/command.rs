//! The QEMU command line: pure, so that it is unit-tested and documented in one place.

use std::path::PathBuf;

use crate::{Accel, Config, layout};

/// Files and sockets of one QEMU run.
pub(crate) struct RunPaths {
    pub kernel: PathBuf,
    pub guest_ram: PathBuf,
    pub qmp_socket: PathBuf,
    pub progress: PathBuf,
    /// Guest programs: the socket QEMU forwards the system-call port to.
    pub syscall_socket: Option<PathBuf>,
}

/// Guest RAM in MiB.
pub(crate) fn ram_mib(cfg: &Config) -> u64 {
    cfg.program_mem_mib.unwrap_or_else(|| layout::ram_mib(cfg.vcpus))
}

/// The guest's kernel command line: its whole configuration.
pub fn guest_cmdline(cfg: &Config) -> String {
    if cfg.program_mem_mib.is_some() {
        return "vcpus=1 program=1".into();
    }
    format!(
        "vcpus={} workload={} work={} exit_every={} unit_bytes={} unit_iters={} timer_hz={}",
        cfg.vcpus,
        workload_code(cfg.workload),
        cfg.work,
        cfg.exit_every,
        cfg.bzip2_unit_bytes,
        cfg.loop_unit_iters,
        cfg.timer_hz
    )
}

/// WL_LOOP / WL_BZIP2 of microvm/guest/workload.h.
fn workload_code(w: microvm::Workload) -> u32 {
    match w {
        microvm::Workload::Loop => 0,
        microvm::Workload::Bzip2 => 1,
        microvm::Workload::FaultTest => 2,
    }
}

/// QEMU's arguments (without argv[0]) for `accel` (already resolved: Kvm or Tcg).
pub(crate) fn qemu_args(cfg: &Config, name: &str, accel: Accel, paths: &RunPaths) -> Vec<String> {
    let program = paths.syscall_socket.as_ref();
    let ram_mib = ram_mib(cfg);
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    match accel {
        // Debian's QEMU 7.2 copies the host's IA32_ARCH_CAPABILITIES (MSR 0x10a) into
        // the guest with plain `-cpu host`; KVM on a PVM host refuses the write and QEMU
        // aborts ("failed to set MSR 0x10a"). The guest does not need the MSR.
        Accel::Kvm | Accel::Auto => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
    }
    // microvm boots a PVH kernel through qboot in tens of ms (`-M pc` with SeaBIOS takes
    // seconds of emulated CPL0 on PVM); the legacy devices are off: nothing uses them.
    let machine = "microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=off,memory-backend=ram";
    let ram = format!("memory-backend-file,id=ram,size={ram_mib}M,mem-path={},share=on", paths.guest_ram.display());
    let smp = cfg.vcpus.to_string();
    let mem = format!("{ram_mib}M");
    push(&["-M", machine, "-m", &mem, "-smp", &smp, "-object", &ram]);
    push(&["-name", &format!("guest={},debug-threads=on", name.replace(',', ",,"))]);
    // Stopped until vmmtrace has found and pinned the threads (as libvirt starts QEMU).
    push(&["-S", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot"]);
    for i in 0..cfg.iothreads {
        push(&["-object", &format!("iothread,id=iothread{i}")]);
    }
    push(&["-chardev", &format!("socket,id=qmp,path={}", paths.qmp_socket.display())]);
    push(&["-mon", "chardev=qmp,mode=control"]);
    push(&["-chardev", "stdio,id=console,signal=off"]);
    push(&["-device", &format!("isa-debugcon,iobase={:#x},chardev=console", layout::PORT_CONSOLE)]);
    push(&["-chardev", &format!("file,id=progress,path={}", paths.progress.display())]);
    push(&["-device", &format!("isa-debugcon,iobase={:#x},chardev=progress", layout::PORT_PROGRESS)]);
    if let Some(socket) = program {
        push(&["-chardev", &format!("socket,id=syscalls,path={}", socket.display())]);
        // A UART, not a debugcon: the answer comes back through it, so QEMU's main loop
        // receives a byte per system call, as it serves a real guest's device.
        push(&["-device", &format!("isa-serial,chardev=syscalls,iobase={:#x},irq=4", layout::PORT_SERIAL)]);
    }
    push(&["-device", &format!("isa-debug-exit,iobase={:#x},iosize=4", layout::PORT_EXIT)]);
    push(&["-kernel", &paths.kernel.display().to_string(), "-append", &guest_cmdline(cfg)]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> RunPaths {
        RunPaths {
            kernel: "/run/k.elf".into(),
            guest_ram: "/dev/shm/ram".into(),
            qmp_socket: "/run/qmp.sock".into(),
            progress: "/run/progress".into(),
            syscall_socket: None,
        }
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2).filter(|w| w[0] == flag).map(|w| w[1].as_str()).collect()
    }

    #[test]
    fn kvm_command_line() {
        let cfg = Config { vcpus: 2, iothreads: 1, ..Default::default() };
        let a = qemu_args(&cfg, "web,1", Accel::Kvm, &paths());
        assert_eq!(value_of(&a, "-cpu"), ["host,-arch-capabilities"]);
        assert_eq!(value_of(&a, "-accel"), ["kvm"]);
        assert_eq!(value_of(&a, "-smp"), ["2"]);
        assert_eq!(value_of(&a, "-m"), ["80M"]);
        assert_eq!(value_of(&a, "-name"), ["guest=web,,1,debug-threads=on"]);
        assert!(a.contains(&"-S".to_string()));
        let objects = value_of(&a, "-object");
        assert!(objects.contains(&"memory-backend-file,id=ram,size=80M,mem-path=/dev/shm/ram,share=on"));
        assert!(objects.contains(&"iothread,id=iothread0"));
        let devices = value_of(&a, "-device");
        assert!(devices.contains(&"isa-debug-exit,iobase=0xf4,iosize=4"), "{devices:?}");
        assert!(devices.contains(&"isa-debugcon,iobase=0xe9,chardev=console"), "{devices:?}");
        assert_eq!(value_of(&a, "-kernel"), ["/run/k.elf"]);
    }

    #[test]
    fn tcg_and_guest_cmdline() {
        let cfg = Config { workload: microvm::Workload::Loop, work: 7, timer_hz: 250, ..Default::default() };
        let a = qemu_args(&cfg, "t", Accel::Tcg, &paths());
        assert_eq!(value_of(&a, "-cpu"), ["max"]);
        assert_eq!(
            value_of(&a, "-append"),
            ["vcpus=1 workload=0 work=7 exit_every=1 unit_bytes=262144 unit_iters=65536 timer_hz=250"]
        );
    }
}

//! One VM's shared state: /dev/kvm, the VM fd, guest RAM with the payload and boot
//! tables loaded; and the ground truth assembled at the end.

use std::sync::Arc;
use std::time::Duration;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, kvm_userspace_memory_region};
use kvm_ioctls::{Cap, Kvm, VmFd};

use crate::boot::{write_idt, write_page_tables, write_vcpu_block};
use crate::elf::Elf;
use crate::layout::*;
use crate::mem::GuestMem;
use crate::workload::write_params;
use crate::{Config, EmulatorTruth, Error, GroundTruth, VcpuTruth};

static GUEST_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest.elf"));

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

/// Opens /dev/kvm and checks the API version and the capabilities every micro-VM needs.
pub(crate) fn open_kvm() -> Result<Kvm, Error> {
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

/// Creates a VM with `mem` as slot 0 at guest-physical 0 and an in-kernel irqchip;
/// returns it with the host's supported CPUID.
pub(crate) fn create_vm(kvm: &Kvm, mem: &GuestMem) -> Result<(VmFd, CpuId), Error> {
    let vm = kvm.create_vm().map_err(|e| Error::kvm("KVM_CREATE_VM", e))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        flags: 0,
        guest_phys_addr: 0,
        memory_size: mem.size(),
        userspace_addr: mem.host_addr(),
    };
    // SAFETY: the region is the caller's mapping, which it keeps alive longer than the
    // VM fd (see the field order of Shared and of the guest-program VM).
    unsafe { vm.set_user_memory_region(region) }.map_err(|e| Error::kvm("KVM_SET_USER_MEMORY_REGION", e))?;
    // Needed on Intel VT-x without unrestricted guest; harmless (or unsupported) elsewhere.
    let _ = vm.set_tss_address(0xfffb_d000);
    vm.create_irq_chip().map_err(|e| Error::kvm("KVM_CREATE_IRQCHIP", e))?;
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).map_err(|e| Error::kvm("KVM_GET_SUPPORTED_CPUID", e))?;
    Ok((vm, cpuid))
}

/// Loads the built-in static payload (the .cpl0 stub and the CPL3 workload). Returns
/// the CPL3 entry point.
fn load_payload(mem: &GuestMem, elf: &[u8]) -> Result<u64, Error> {
    let hdr = Elf::parse(elf).map_err(|e| Error::Payload(format!("guest.elf: {e}")))?;
    for ph in hdr.loads() {
        // allowed: below IDT_BASE (ELF headers, the .cpl0 stub) or 0x400000..ELF_LIMIT
        let (paddr, memsz) = (ph.vaddr, ph.memsz);
        let end = paddr + memsz;
        let reserved = IDT_BASE..ELF_BASE;
        if end > ELF_LIMIT || (paddr < reserved.end && end > reserved.start) {
            return Err(Error::Payload(format!("segment at {paddr:#x}+{memsz:#x} does not fit the layout")));
        }
        let (off, filesz) = (ph.offset as usize, ph.filesz as usize);
        mem.write(paddr, &elf[off..off + filesz])?;
        mem.zero(paddr + ph.filesz, memsz - ph.filesz)?;
    }
    Ok(hdr.entry)
}

/// Loads the built-in payload (CPL0 stub + CPL3 workload) at its link addresses.
pub(crate) fn load_builtin_payload(mem: &GuestMem) -> Result<u64, Error> {
    load_payload(mem, GUEST_ELF)
}

/// Loads only the CPL0 stub of the built-in payload (the segments below IDT_BASE), for
/// guest programs, which own the memory the workload would take.
pub(crate) fn load_builtin_stub(mem: &GuestMem) -> Result<(), Error> {
    let hdr = Elf::parse(GUEST_ELF).map_err(|e| Error::Payload(format!("guest.elf: {e}")))?;
    for ph in hdr.loads().filter(|p| p.vaddr + p.memsz <= IDT_BASE) {
        let (off, filesz) = (ph.offset as usize, ph.filesz as usize);
        mem.write(ph.vaddr, &GUEST_ELF[off..off + filesz])?;
        mem.zero(ph.vaddr + ph.filesz, ph.memsz - ph.filesz)?;
    }
    Ok(())
}

impl Shared {
    pub(crate) fn new(cfg: &Config) -> Result<Arc<Shared>, Error> {
        cfg.validate()?;
        let kvm = open_kvm()?;
        let mem = GuestMem::new(mem_size(cfg.vcpus))?;
        let (vm, cpuid) = create_vm(&kvm, &mem)?;
        let user_entry = load_builtin_payload(&mem)?;
        write_page_tables(&mem, IDENTITY_GIB << 30)?;
        write_idt(&mem)?;
        for i in 0..cfg.vcpus {
            write_vcpu_block(&mem, i)?;
            write_params(&mem, cfg, i)?;
        }
        Ok(Arc::new(Shared { vm, cpuid, user_entry, cfg: cfg.clone(), mem, _kvm: kvm }))
    }
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

//! Builds the QEMU guest image from source with the system gcc (GNU as and ld through
//! the driver): `guest/boot.S` (CPL0: PVH entry, long mode, tables, APIC services),
//! `guest/user.c` (the CPL3 runtime), the micro-VM's workload (`../microvm/guest/
//! workload.c`, so guest and host twin run the same C code) and libbz2, linked with
//! `guest/guest.ld` into `$OUT_DIR/guest.elf`, which the crate embeds.
//!
//! libbz2's sources and the compiler flags shared with the micro-VM's guest come from
//! the `guest-build` crate; `VMM_QEMU_BZIP2_SRC=/path/to/bzip2-1.0.8` overrides the
//! sources, `VMM_QEMU_GUEST_CC` the compiler.

use std::{
    env,
    path::{Path, PathBuf},
};

use guest_build::BZ_FILES;

/// The micro-VM's guest sources: its workload, the freestanding C runtime and the
/// exception entry stubs (one home for each: see microvm/guest/).
const MICROVM_GUEST_DIR: &str = "../microvm/guest";

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let guest = manifest_dir.join("guest");
    let workload = manifest_dir.join(MICROVM_GUEST_DIR);
    for f in ["boot.S", "user.c", "layout.h", "guest.ld"] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    for f in ["workload.c", "workload.h", "freestanding.h", "exception_stubs.inc"] {
        println!("cargo:rerun-if-changed={}", Path::new(MICROVM_GUEST_DIR).join(f).display());
    }
    let bz = guest_build::bzip2_src("VMM_QEMU_BZIP2_SRC");
    let cc = guest_build::guest_cc("VMM_QEMU_GUEST_CC");

    let mut cmd = guest_build::freestanding_gcc(&cc);
    cmd.args(["-mno-red-zone", "-Wl,--no-warn-rwx-segments"])
        .arg(format!("-Wl,-T,{}", guest.join("guest.ld").display()))
        .arg("-I")
        .arg(&bz)
        .arg("-I")
        .arg(&guest)
        .arg("-I")
        .arg(&workload)
        .arg("-o")
        .arg(out.join("guest.elf"))
        .arg(guest.join("boot.S"))
        .arg(guest.join("user.c"))
        .arg(workload.join("workload.c"));
    cmd.args(BZ_FILES.iter().map(|f| bz.join(f)));
    guest_build::run(cmd, "the QEMU guest");
}

//! Builds the guest payload and its native twin from C/assembly with the system C
//! compiler (gcc/cc, GNU as via the driver). Nothing prebuilt is committed.
//!
//! * `$OUT_DIR/guest.elf`: static freestanding ELF: the CPL0 stub (`.cpl0` at 0x1000)
//!   plus the CPL3 runtime, the workload and libbz2, linked at 0x400000.
//! * `libmicrovm_native.a`: the same workload + libbz2 compiled for the host, so tests
//!   and the benchmark can run the identical computation natively.
//!
//! libbz2's sources and the guest compiler flags shared with the QEMU guest come from
//! the `guest-build` crate; `MICROVM_BZIP2_SRC=/path/to/bzip2-1.0.8` overrides the
//! sources, `MICROVM_GUEST_CC` the compiler.

use std::{env, path::PathBuf};

use guest_build::BZ_FILES;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let guest = manifest_dir.join("guest");
    let bz = guest_build::bzip2_src("MICROVM_BZIP2_SRC");
    for f in [
        "stub.S",
        "exception_stubs.inc",
        "guest_rt.c",
        "freestanding.h",
        "workload.c",
        "workload.h",
        "layout.h",
        "host_rt.c",
    ] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    // ---- guest payload: linked at 0x400000, the CPL0 stub at 0x1000
    let cc = guest_build::guest_cc("MICROVM_GUEST_CC");
    let mut cmd = guest_build::freestanding_gcc(&cc);
    cmd.args(["-Wl,-Ttext-segment=0x400000", "-Wl,--section-start=.cpl0=0x1000", "-Wl,-e,_start"])
        .arg("-I")
        .arg(&bz)
        .arg("-I")
        .arg(&guest)
        .arg("-o")
        .arg(out.join("guest.elf"))
        .arg(guest.join("stub.S"))
        .arg(guest.join("guest_rt.c"))
        .arg(guest.join("workload.c"));
    cmd.args(BZ_FILES.iter().map(|f| bz.join(f)));
    guest_build::run(cmd, "the guest payload");

    // ---- native twin: the same workload sources for the host, same -O2
    let mut b = cc::Build::new();
    b.opt_level(2)
        .warnings(false)
        .define("BZ_NO_STDIO", None)
        .include(&bz)
        .include(&guest)
        .file(guest.join("workload.c"))
        .file(guest.join("host_rt.c"));
    for f in BZ_FILES {
        b.file(bz.join(f));
    }
    b.compile("microvm_native");
}

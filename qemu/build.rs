//! Builds the QEMU guest image from source with the system gcc (GNU as and ld through
//! the driver): `guest/boot.S` (CPL0: PVH entry, long mode, tables, APIC services),
//! `guest/user.c` (the CPL3 runtime), the micro-VM's workload (`../microvm/guest/
//! workload.c`, so guest and host twin run the same C code) and libbz2, linked with
//! `guest/guest.ld` into `$OUT_DIR/guest.elf`, which the crate embeds.
//!
//! libbz2's sources come from the bzip2-sys crate (a build-dependency, so cargo has
//! unpacked it into its registry); `VMM_QEMU_BZIP2_SRC=/path/to/bzip2-1.0.8` overrides.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BZ_FILES: &[&str] =
    &["blocksort.c", "bzlib.c", "compress.c", "crctable.c", "decompress.c", "huffman.c", "randtable.c"];

/// The micro-VM's workload sources (one home for the workload: see microvm/guest/).
const WORKLOAD_DIR: &str = "../microvm/guest";

/// `bzip2-1.0.8/` inside the newest unpacked bzip2-sys 0.1.x in cargo's registry.
fn bzip2_src() -> PathBuf {
    println!("cargo:rerun-if-env-changed=VMM_QEMU_BZIP2_SRC");
    if let Some(p) = env::var_os("VMM_QEMU_BZIP2_SRC") {
        return PathBuf::from(p);
    }
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .expect("neither CARGO_HOME nor HOME is set");
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    for registry in std::fs::read_dir(cargo_home.join("registry/src")).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let src = entry.path().join("bzip2-1.0.8");
            if let Some(version) = name.strip_prefix("bzip2-sys-0.1.")
                && src.join("bzlib.c").exists()
            {
                let key = version.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
                found.push((key, src));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, src)| src).unwrap_or_else(|| {
        panic!("libbz2 sources (bzip2-sys 0.1.x) not found in cargo's registry; set VMM_QEMU_BZIP2_SRC to a bzip2-1.0.8 source dir")
    })
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let guest = manifest_dir.join("guest");
    let workload = manifest_dir.join(WORKLOAD_DIR);
    for f in ["boot.S", "user.c", "layout.h", "guest.ld"] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    for f in ["workload.c", "workload.h"] {
        println!("cargo:rerun-if-changed={}", Path::new(WORKLOAD_DIR).join(f).display());
    }
    let bz = bzip2_src();
    let cc = env::var("VMM_QEMU_GUEST_CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=VMM_QEMU_GUEST_CC");

    let elf = out.join("guest.elf");
    let mut cmd = Command::new(&cc);
    cmd.args([
        "-O2",
        "-ffreestanding",
        "-fno-pic",
        "-fno-pie",
        "-no-pie",
        "-fno-stack-protector",
        "-fno-builtin",
        "-fcf-protection=none",
        "-mno-avx",
        "-mno-red-zone",
        "-nostdlib",
        "-static",
        "-DBZ_NO_STDIO",
        "-w",
        "-Wl,--build-id=none",
        "-Wl,--no-warn-rwx-segments",
    ])
    .arg(format!("-Wl,-T,{}", guest.join("guest.ld").display()))
    .arg("-I")
    .arg(&bz)
    .arg("-I")
    .arg(&guest)
    .arg("-I")
    .arg(&workload)
    .arg("-o")
    .arg(&elf)
    .arg(guest.join("boot.S"))
    .arg(guest.join("user.c"))
    .arg(workload.join("workload.c"));
    for f in BZ_FILES {
        cmd.arg(bz.join(f));
    }
    let status = cmd.status().unwrap_or_else(|e| panic!("run {cc} to build the QEMU guest (install gcc): {e}"));
    assert!(status.success(), "building the QEMU guest with {cc} failed: {cmd:?}");
}

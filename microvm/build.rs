//! Builds the guest payload and its native twin from C/assembly with the system C
//! compiler (gcc/cc, GNU as via the driver). Nothing prebuilt is committed.
//!
//! * `$OUT_DIR/guest.elf`: static freestanding ELF: the CPL0 stub (`.cpl0` at 0x1000)
//!   plus the CPL3 runtime, the workload and libbz2, linked at 0x400000.
//! * `libmicrovm_native.a`: the same workload + libbz2 compiled for the host, so tests
//!   and the benchmark can run the identical computation natively.
//!
//! libbz2's sources come from the bzip2-sys crate (a build-dependency, so cargo has
//! downloaded and unpacked it), found in `$CARGO_HOME/registry/src` or else with
//! `cargo metadata`; `MICROVM_BZIP2_SRC=/path/to/bzip2-1.0.8` overrides.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const BZ_FILES: &[&str] =
    &["blocksort.c", "bzlib.c", "compress.c", "crctable.c", "decompress.c", "huffman.c", "randtable.c"];

/// The directory holding bzlib.c & co. inside an unpacked bzip2-sys crate, if any.
fn sources_in(crate_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(crate_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("bzlib.c").exists() && p.join("bzlib.h").exists())
}

fn bzip2_src() -> PathBuf {
    println!("cargo:rerun-if-env-changed=MICROVM_BZIP2_SRC");
    if let Some(p) = env::var_os("MICROVM_BZIP2_SRC") {
        return PathBuf::from(p);
    }
    // 1. The unpacked bzip2-sys crate in Cargo's registry cache (cargo has unpacked it
    //    because it is our build-dependency). Highest 0.1.x version wins.
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    if let Some(home) = cargo_home {
        let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
        for reg in std::fs::read_dir(home.join("registry/src")).into_iter().flatten().flatten() {
            for e in std::fs::read_dir(reg.path()).into_iter().flatten().flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(ver) = name.strip_prefix("bzip2-sys-0.1.")
                    && let Some(src) = sources_in(&e.path())
                {
                    let key = ver.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
                    found.push((key, src));
                }
            }
        }
        found.sort();
        if let Some((_, src)) = found.pop() {
            return src;
        }
    }
    // 2. Ask cargo (works with vendored or git sources; needs every package of the
    //    workspace to be available offline).
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("Cargo.toml");
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run `cargo metadata` to locate the bzip2-sys sources");
    if !out.status.success() {
        panic!(
            "bzip2 sources not found in the cargo registry and `cargo metadata` failed \
             (set MICROVM_BZIP2_SRC to a bzip2-1.0.8 source dir): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    for pkg in meta["packages"].as_array().expect("packages") {
        if pkg["name"] == "bzip2-sys" {
            let mp = PathBuf::from(pkg["manifest_path"].as_str().unwrap());
            if let Some(src) = sources_in(mp.parent().unwrap()) {
                return src;
            }
        }
    }
    panic!("bzip2-sys sources not found; set MICROVM_BZIP2_SRC to a bzip2-1.0.8 source dir");
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let guest = manifest_dir.join("guest");
    let bz = bzip2_src();
    for f in ["stub.S", "guest_rt.c", "workload.c", "workload.h", "layout.h", "host_rt.c"] {
        println!("cargo:rerun-if-changed=guest/{f}");
    }
    println!("cargo:rerun-if-changed=build.rs");

    // ---- guest payload: freestanding, static, non-PIC, linked at 0x400000 (stub at 0x1000)
    let cc = env::var("MICROVM_GUEST_CC").unwrap_or_else(|_| "gcc".into());
    println!("cargo:rerun-if-env-changed=MICROVM_GUEST_CC");
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
        "-nostdlib",
        "-static",
        "-DBZ_NO_STDIO",
        "-w",
        "-Wl,-Ttext-segment=0x400000",
        "-Wl,--section-start=.cpl0=0x1000",
        "-Wl,-e,_start",
        "-Wl,--build-id=none",
    ])
    .arg("-I")
    .arg(&bz)
    .arg("-I")
    .arg(&guest)
    .arg("-o")
    .arg(&elf)
    .arg(guest.join("stub.S"))
    .arg(guest.join("guest_rt.c"))
    .arg(guest.join("workload.c"));
    for f in BZ_FILES {
        cmd.arg(bz.join(f));
    }
    let st = cmd.status().unwrap_or_else(|e| panic!("run {cc} to build the guest (install gcc): {e}"));
    assert!(st.success(), "building the guest payload with {cc} failed: {cmd:?}");

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

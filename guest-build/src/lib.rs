//! What the build scripts of `microvm` and `vmm-qemu` share: both compile a
//! freestanding x86-64 guest (CPL3 runtime, the micro-VM's workload and libbz2) with
//! the system gcc. One home for finding libbz2's sources and for the compiler flags
//! every guest needs, so the two guests cannot drift apart.
//!
//! A build-dependency only: it panics with what to do, as a build script must.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

/// libbz2's sources, compiled into every guest (and into the micro-VM's native twin).
pub const BZ_FILES: &[&str] =
    &["blocksort.c", "bzlib.c", "compress.c", "crctable.c", "decompress.c", "huffman.c", "randtable.c"];

/// The directory holding bzlib.c & co. inside an unpacked bzip2-sys crate, if any.
fn sources_in(crate_dir: &Path) -> Option<PathBuf> {
    std::fs::read_dir(crate_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_dir() && p.join("bzlib.c").exists() && p.join("bzlib.h").exists())
}

/// libbz2's source directory: `$override_var` if set, else the newest unpacked
/// bzip2-sys 0.1.x in cargo's registry (the calling crate has it as a
/// build-dependency, so cargo has unpacked it), else what `cargo metadata` says
/// (vendored or git sources).
pub fn bzip2_src(override_var: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={override_var}");
    if let Some(p) = env::var_os(override_var) {
        return PathBuf::from(p);
    }
    bzip2_in_registry().or_else(bzip2_from_metadata).unwrap_or_else(|| {
        panic!("libbz2 sources (bzip2-sys 0.1.x) not found; set {override_var} to a bzip2-1.0.8 source dir")
    })
}

/// The newest bzip2-sys 0.1.x in `$CARGO_HOME/registry/src` (default ~/.cargo).
fn bzip2_in_registry() -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut found: Vec<(Vec<u64>, PathBuf)> = Vec::new();
    for registry in std::fs::read_dir(cargo_home.join("registry/src")).into_iter().flatten().flatten() {
        for entry in std::fs::read_dir(registry.path()).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(version) = name.strip_prefix("bzip2-sys-0.1.")
                && let Some(src) = sources_in(&entry.path())
            {
                let key = version.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse().ok()).collect();
                found.push((key, src));
            }
        }
    }
    found.sort();
    found.pop().map(|(_, src)| src)
}

/// bzip2-sys as `cargo metadata` finds it (needs every package of the workspace
/// available offline).
fn bzip2_from_metadata() -> Option<PathBuf> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("run from a build script")).join("Cargo.toml");
    let out = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(&manifest)
        .output()
        .expect("run `cargo metadata` to locate the bzip2-sys sources");
    if !out.status.success() {
        panic!(
            "bzip2 sources not found in the cargo registry and `cargo metadata` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let packages = meta["packages"].as_array().expect("packages in cargo metadata");
    packages.iter().filter(|pkg| pkg["name"] == "bzip2-sys").find_map(|pkg| {
        let manifest_path = PathBuf::from(pkg["manifest_path"].as_str()?);
        sources_in(manifest_path.parent()?)
    })
}

/// The guest's C compiler: `$override_var` if set, else gcc.
pub fn guest_cc(override_var: &str) -> String {
    println!("cargo:rerun-if-env-changed={override_var}");
    env::var(override_var).unwrap_or_else(|_| "gcc".into())
}

/// `cc` with what every guest is compiled with: freestanding, static, not
/// position-independent, no stack protector, no CET instrumentation, no AVX (neither
/// guest sets CR4.OSXSAVE, so an AVX instruction would fault), libbz2 without stdio,
/// and no build id (the same sources give the same bytes). The caller adds its own
/// flags, link layout and sources.
pub fn freestanding_gcc(cc: &str) -> Command {
    let mut cmd = Command::new(cc);
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
        "-Wl,--build-id=none",
    ]);
    cmd
}

/// Runs `cmd` (a guest build); panics with the command and what to install.
pub fn run(mut cmd: Command, what: &str) {
    let cc = cmd.get_program().to_string_lossy().into_owned();
    let status = cmd.status().unwrap_or_else(|e| panic!("run {cc} to build {what} (install gcc): {e}"));
    assert!(status.success(), "building {what} with {cc} failed: {cmd:?}");
}

//! Loads a Linux x86-64 ELF program into guest memory the way the kernel's execve
//! does: the executable (at its link address, or at `pie_base` if position
//! independent), its interpreter (ld-linux, placed like an mmap), the program break
//! after the executable, and the initial stack (argc, argv, envp, auxv). No vDSO: the
//! program's clock calls become system calls.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::space::{AddressSpace, GuestMemory, Layout, PAGE, page_down, page_up};
use crate::elf::{ET_DYN, Elf, PT_INTERP, PT_PHDR};

const AT_NULL: u64 = 0;
const AT_PHDR: u64 = 3;
const AT_PHENT: u64 = 4;
const AT_PHNUM: u64 = 5;
const AT_PAGESZ: u64 = 6;
const AT_BASE: u64 = 7;
const AT_FLAGS: u64 = 8;
const AT_ENTRY: u64 = 9;
const AT_UID: u64 = 11;
const AT_EUID: u64 = 12;
const AT_GID: u64 = 13;
const AT_EGID: u64 = 14;
const AT_PLATFORM: u64 = 15;
const AT_HWCAP: u64 = 16;
const AT_CLKTCK: u64 = 17;
const AT_SECURE: u64 = 23;
const AT_RANDOM: u64 = 25;
const AT_HWCAP2: u64 = 26;
const AT_EXECFN: u64 = 31;
const AT_MINSIGSTKSZ: u64 = 51;

/// What to run: the program file, its argv (argv[0] included) and environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramSpec {
    pub path: PathBuf,
    pub argv: Vec<OsString>,
    pub envp: Vec<OsString>,
}

impl ProgramSpec {
    /// `program` found like execvp does (through $PATH when it has no '/'), argv[0] =
    /// `program` as given, and the VMM's own environment.
    pub fn from_command(program: &Path, args: &[OsString]) -> Result<ProgramSpec, String> {
        let path = resolve(program)?;
        let mut argv = vec![program.as_os_str().to_owned()];
        argv.extend(args.iter().cloned());
        let envp = std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect();
        Ok(ProgramSpec { path, argv, envp })
    }
}

fn resolve(program: &Path) -> Result<PathBuf, String> {
    if program.as_os_str().as_bytes().contains(&b'/') {
        return std::fs::canonicalize(program).map_err(|e| format!("program {}: {e}", program.display()));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    for dir in std::env::split_paths(&path) {
        let p = dir.join(program);
        if p.is_file() {
            return std::fs::canonicalize(&p).map_err(|e| format!("program {}: {e}", p.display()));
        }
    }
    Err(format!("program {}: not found in $PATH", program.display()))
}

/// The loaded program: where the vCPU starts and the address space the system-call
/// server takes over.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// First instruction: the interpreter's entry, or the executable's if static.
    pub entry: u64,
    /// Initial stack pointer (points at argc).
    pub stack_pointer: u64,
    pub space: AddressSpace,
    /// The executable's absolute path (for /proc/self/exe).
    pub exe: PathBuf,
    pub interpreter: Option<PathBuf>,
}

/// One ELF image placed in guest memory.
struct Image {
    bias: u64,
    elf: Elf,
    /// One past its highest byte.
    end: u64,
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Copies the PT_LOAD segments of `file` into guest memory at `bias` and marks them used.
fn place(mem: &mut GuestMemory, space: &mut AddressSpace, file: &[u8], elf: Elf, bias: u64) -> Result<Image, String> {
    let mut end = 0;
    for ph in elf.loads() {
        let start = ph.vaddr.wrapping_add(bias);
        let (lo, hi) = (page_down(start), page_up(start.saturating_add(ph.memsz)));
        if lo < space.layout.program_base || hi > space.layout.stack_bottom() {
            return Err(format!(
                "segment at {start:#x}+{:#x} does not fit guest memory ({:#x}..{:#x}; use --mem for more)",
                ph.memsz, space.layout.program_base, space.layout.ram_size
            ));
        }
        let beyond = || "an ELF segment lies beyond the end of the file".to_string();
        let file_end = ph.offset.checked_add(ph.filesz).ok_or_else(beyond)?;
        let data = file.get(ph.offset as usize..file_end as usize).ok_or_else(beyond)?;
        mem.write(start, data).map_err(|_| format!("segment at {start:#x} is outside guest memory"))?;
        space.insert(lo, hi);
        end = end.max(hi);
    }
    Ok(Image { bias, elf, end })
}

/// The span [lowest page, highest page end) of an image's segments, before bias.
fn span(elf: &Elf) -> (u64, u64) {
    let lo = elf.loads().map(|p| page_down(p.vaddr)).min().unwrap_or(0);
    let hi = elf.loads().map(|p| page_up(p.vaddr.saturating_add(p.memsz))).max().unwrap_or(0);
    (lo, hi)
}

/// Loads `spec` into `ram` (guest RAM from guest-physical 0) laid out by `layout`.
/// The error is a one-line reason (not an ELF, wrong machine, missing interpreter,
/// does not fit guest memory).
pub fn load(ram: &mut [u8], layout: Layout, spec: &ProgramSpec) -> Result<Loaded, String> {
    let mut mem = GuestMemory::new(ram, layout.program_base);
    let mut space = AddressSpace::new(layout);
    let file = read_file(&spec.path, "program")?;
    let elf = Elf::parse(&file).map_err(|e| format!("program {}: {e}", spec.path.display()))?;
    let interp_path = match elf.phdrs.iter().find(|p| p.kind == PT_INTERP) {
        Some(p) => {
            let end = p.offset.saturating_add(p.filesz) as usize;
            let raw = file.get(p.offset as usize..end).ok_or("the ELF interpreter path lies beyond the file")?;
            let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
            Some(PathBuf::from(OsString::from_vec(raw.to_vec())))
        }
        None => None,
    };
    // wrapping: a PIE linked above pie_base gets a "negative" bias, added back wrapping
    let bias = if elf.kind == ET_DYN { layout.pie_base.wrapping_sub(span(&elf).0) } else { 0 };
    let exe =
        place(&mut mem, &mut space, &file, elf, bias).map_err(|e| format!("program {}: {e}", spec.path.display()))?;
    space.brk_start = exe.end;
    space.brk = exe.end;
    let interp = match &interp_path {
        Some(p) => {
            let f = read_file(p, "interpreter").map_err(|e| format!("{e} (needed by {})", spec.path.display()))?;
            let ie = Elf::parse(&f).map_err(|e| format!("interpreter {}: {e}", p.display()))?;
            let (lo, hi) = span(&ie);
            let at = space
                .find_free(hi.saturating_sub(lo))
                .ok_or("no room for the interpreter in guest memory (use --mem)")?;
            Some(
                place(&mut mem, &mut space, &f, ie, at.wrapping_sub(lo))
                    .map_err(|e| format!("interpreter {}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let entry = match &interp {
        Some(i) => i.bias.wrapping_add(i.elf.entry),
        None => exe.bias.wrapping_add(exe.elf.entry),
    };
    let stack_pointer = build_stack(&mut mem, &layout, spec, &exe, interp.as_ref())?;
    Ok(Loaded { entry, stack_pointer, space, exe: spec.path.clone(), interpreter: interp_path })
}

/// The address of the executable's program headers in guest memory.
fn phdr_addr(img: &Image) -> u64 {
    if let Some(p) = img.elf.phdrs.iter().find(|p| p.kind == PT_PHDR) {
        return p.vaddr.wrapping_add(img.bias);
    }
    // the first PT_LOAD maps file offset 0 in practice: headers are at its start + phoff
    let first = img.elf.loads().next().map(|p| p.vaddr.wrapping_sub(p.offset)).unwrap_or(0);
    first.wrapping_add(img.elf.phoff).wrapping_add(img.bias)
}

fn getauxval(t: u64) -> u64 {
    // SAFETY: getauxval has no preconditions.
    unsafe { libc::getauxval(t) }
}

/// Writes strings, then auxv/envp/argv/argc, at the top of the stack as the kernel
/// lays them out. Returns the initial RSP (16-byte aligned, pointing at argc).
fn build_stack(
    mem: &mut GuestMemory,
    layout: &Layout,
    spec: &ProgramSpec,
    exe: &Image,
    interp: Option<&Image>,
) -> Result<u64, String> {
    let full = || "the program's arguments and environment do not fit its stack".to_string();
    let mut top = layout.stack_top() - PAGE; // a spare page at the very top, as Linux leaves some
    let mut push_bytes = |mem: &mut GuestMemory, b: &[u8]| -> Result<u64, String> {
        top = top.checked_sub(b.len() as u64).ok_or_else(full)?;
        if top < layout.stack_bottom() + (64 << 10) {
            return Err(full());
        }
        mem.write(top, b).map_err(|_| full())?;
        Ok(top)
    };
    let mut cstr = |mem: &mut GuestMemory, s: &[u8]| -> Result<u64, String> {
        let mut v = s.to_vec();
        v.push(0);
        push_bytes(mem, &v)
    };
    let execfn = cstr(mem, spec.path.as_os_str().as_bytes())?;
    let platform = cstr(mem, b"x86_64")?;
    let mut envs = Vec::new();
    for e in spec.envp.iter().rev() {
        envs.push(cstr(mem, e.as_bytes())?);
    }
    envs.reverse();
    let mut args = Vec::new();
    for a in spec.argv.iter().rev() {
        args.push(cstr(mem, a.as_bytes())?);
    }
    args.reverse();
    let mut random = [0u8; 16];
    getrandom(&mut random);
    let random_at = cstr(mem, &random)?; // 17 bytes, the trailing NUL is harmless
    let auxv: Vec<(u64, u64)> = vec![
        (AT_PHDR, phdr_addr(exe)),
        (AT_PHENT, exe.elf.phentsize as u64),
        (AT_PHNUM, exe.elf.phdrs.len() as u64),
        (AT_PAGESZ, PAGE),
        (AT_BASE, interp.map(|i| i.bias).unwrap_or(0)),
        (AT_FLAGS, 0),
        (AT_ENTRY, exe.bias.wrapping_add(exe.elf.entry)),
        (AT_UID, getauxval(AT_UID)),
        (AT_EUID, getauxval(AT_EUID)),
        (AT_GID, getauxval(AT_GID)),
        (AT_EGID, getauxval(AT_EGID)),
        (AT_SECURE, 0),
        (AT_RANDOM, random_at),
        (AT_HWCAP, getauxval(AT_HWCAP)),
        (AT_HWCAP2, getauxval(AT_HWCAP2)),
        (AT_CLKTCK, 100),
        (AT_PLATFORM, platform),
        (AT_EXECFN, execfn),
        (AT_MINSIGSTKSZ, getauxval(AT_MINSIGSTKSZ)),
        (AT_NULL, 0),
    ];
    let mut words: Vec<u64> = vec![args.len() as u64];
    words.extend(&args);
    words.push(0);
    words.extend(&envs);
    words.push(0);
    for (k, v) in auxv {
        words.push(k);
        words.push(v);
    }
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut sp = (top - bytes.len() as u64) & !15;
    if sp < layout.stack_bottom() + (64 << 10) {
        return Err(full());
    }
    mem.write(sp, &bytes).map_err(|_| full())?;
    sp &= !15;
    Ok(sp)
}

/// Fills `buf` from the host's getrandom (AT_RANDOM seeds the stack protector).
pub(crate) fn getrandom(buf: &mut [u8]) {
    // SAFETY: writes at most buf.len() bytes into buf.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
    if n != buf.len() as isize {
        // getrandom on a booted host does not fail for 16 bytes; fall back to the clock
        let t = crate::sys::monotonic_ns().to_le_bytes();
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= t[i % 8];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_bzip2_with_its_interpreter_and_a_valid_stack() {
        let spec = ProgramSpec::from_command(Path::new("bzip2"), &["-h".into()]).unwrap();
        let layout = Layout::new(128 << 20);
        let mut ram = vec![0u8; layout.ram_size as usize];
        let l = load(&mut ram, layout, &spec).unwrap();
        assert_eq!(l.interpreter.as_deref(), Some(Path::new("/lib64/ld-linux-x86-64.so.2")));
        let m = GuestMemory::new(&mut ram, layout.program_base);
        assert_eq!(l.stack_pointer % 16, 0);
        assert_eq!(m.read_u64(l.stack_pointer).unwrap(), 2, "argc");
        let argv0 = m.read_u64(l.stack_pointer + 8).unwrap();
        assert_eq!(m.c_str(argv0, 100).unwrap(), b"bzip2");
        assert!(l.entry > layout.pie_base && l.entry < layout.ram_size, "entry in the interpreter");
        assert_eq!(m.slice(layout.pie_base, 4).unwrap(), b"\x7fELF", "PIE at pie_base, headers mapped");
    }

    #[test]
    fn refuses_a_script_and_a_missing_program() {
        let layout = Layout::new(64 << 20);
        let mut ram = vec![0u8; layout.ram_size as usize];
        let sh = ProgramSpec { path: "/etc/passwd".into(), argv: vec![], envp: vec![] };
        assert!(load(&mut ram, layout, &sh).unwrap_err().contains("not an ELF"));
        assert!(ProgramSpec::from_command(Path::new("no-such-program-xyz"), &[]).unwrap_err().contains("not found"));
    }
}

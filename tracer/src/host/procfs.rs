//! The I/O half of discovery: read /proc and /sys into [`ProcessSample`]s.
//! Tasks that exit while being read are skipped, never reported as errors.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::parse::{parse_cmdline, parse_cpu_list, parse_stat, parse_status};
use super::{Error, ProcessSample, ThreadSample};

/// True for errors that mean "this task is gone" (or is a kernel thread without the
/// file): skip it.
fn vanished(err: &io::Error) -> bool {
    matches!(err.kind(), io::ErrorKind::NotFound)
        || err.raw_os_error() == Some(libc::ESRCH)
        || err.raw_os_error() == Some(libc::ENOENT)
}

fn io_error(path: &Path, source: io::Error) -> Error {
    Error::Io { path: path.to_path_buf(), source }
}

/// Reads a file; `Ok(None)` if the task vanished meanwhile.
fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if vanished(&err) => Ok(None),
        Err(err) => Err(io_error(path, err)),
    }
}

/// The online CPUs, from `/sys/devices/system/cpu/online` (or the given file).
pub(crate) fn read_online_cpus(path: &Path) -> Result<Vec<u32>, Error> {
    let text = fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    parse_cpu_list(&text).map_err(|e| Error::Parse { path: path.to_path_buf(), reason: e.to_string() })
}

/// Every process under `proc_root` with its threads.
pub(crate) fn read_processes(proc_root: &Path) -> Result<Vec<ProcessSample>, Error> {
    let entries = fs::read_dir(proc_root).map_err(|e| io_error(proc_root, e))?;
    let mut processes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error(proc_root, e))?;
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(process) = read_process(&entry.path(), pid)? {
            processes.push(process);
        }
    }
    processes.sort_by_key(|p| p.pid);
    Ok(processes)
}

/// One process; `Ok(None)` if it exited while being read.
fn read_process(dir: &Path, pid: u32) -> Result<Option<ProcessSample>, Error> {
    let task_dir = dir.join("task");
    let entries = match fs::read_dir(&task_dir) {
        Ok(entries) => entries,
        Err(err) if vanished(&err) => return Ok(None),
        Err(err) => return Err(io_error(&task_dir, err)),
    };
    let mut threads = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(err) if vanished(&err) => return Ok(None),
            Err(err) => return Err(io_error(&task_dir, err)),
        };
        let Some(tid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(thread) = read_thread(&entry.path(), tid)? {
            threads.push(thread);
        }
    }
    if threads.is_empty() {
        return Ok(None);
    }
    threads.sort_by_key(|t| t.tid);
    // Kernel threads have no exe; zombies neither: both are fine.
    let exe = fs::read_link(dir.join("exe")).ok().map(|p| p.to_string_lossy().into_owned());
    let cmdline = fs::read(dir.join("cmdline")).map(|b| parse_cmdline(&b)).unwrap_or_default();
    Ok(Some(ProcessSample { pid, exe, cmdline, threads }))
}

/// One thread; `Ok(None)` if it exited while being read.
fn read_thread(dir: &Path, tid: u32) -> Result<Option<ThreadSample>, Error> {
    let stat_path = dir.join("stat");
    let Some(stat_text) = read_optional(&stat_path)? else {
        return Ok(None);
    };
    let stat = parse_stat(&stat_text).map_err(|reason| Error::Parse { path: stat_path, reason })?;
    let status_path = dir.join("status");
    let Some(status_text) = read_optional(&status_path)? else {
        return Ok(None);
    };
    let status = parse_status(&status_text).map_err(|reason| Error::Parse { path: status_path.clone(), reason })?;
    let cpus_allowed = status
        .cpus_allowed
        .ok_or_else(|| Error::Parse { path: status_path, reason: "no Cpus_allowed_list line".to_string() })?;
    let kernel_thread = stat.is_kernel_thread();
    Ok(Some(ThreadSample { tid, comm: stat.comm, kernel_thread, cpus_allowed }))
}

/// Where discovery reads from: the real /proc and /sys, or a fake tree in tests.
#[derive(Clone, Debug)]
pub struct HostPaths {
    /// Usually `/proc`.
    pub proc_root: PathBuf,
    /// Usually `/sys/devices/system/cpu/online`.
    pub cpu_online: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths { proc_root: PathBuf::from("/proc"), cpu_online: PathBuf::from("/sys/devices/system/cpu/online") }
    }
}

/// Guest time of a thread as the kernel accounts it (field 43 of stat), in ticks;
/// None once the thread is gone.
pub(crate) fn read_gtime_ticks(pid: u32, tid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    parse_stat(&stat).ok()?.guest_time_ticks
}

/// `/proc/<pid>/task/<tid>/syscall`; None once the thread is gone.
pub(crate) fn read_syscall(pid: u32, tid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()
}

/// The scheduler tick (the unit of stat's time fields), in ns.
pub fn clock_tick_ns() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { 1_000_000_000 / hz as u64 } else { 10_000_000 }
}

/// `/proc/sys/kernel/<name>` (hostname, osrelease), trimmed; empty if unreadable.
pub fn kernel_string(name: &str) -> String {
    fs::read_to_string(format!("/proc/sys/kernel/{name}")).map(|s| s.trim().to_string()).unwrap_or_default()
}

//! The `THREAD_SCHED_BY_TID` array: tid -> run-queue state, for the tids below its
//! length. The probes find a thread's entry there with an inlined bounds check
//! instead of a hash lookup; userspace fills and reads it through a shared mapping
//! (`BPF_F_MMAPABLE`), so that reading 32768 entries every second costs no syscall.

use std::os::fd::{AsFd as _, AsRawFd as _};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};
use tracer_common::{ledger::ThreadSched, names::map};

use super::ProbeError;

/// Largest `pid_max` the array covers (32 MiB of entries); above it, tids go to the
/// `THREAD_SCHED` hash. Linux's default is 32768 below 32 CPUs (systemd raises it to
/// 4194304 on many distributions: then the hash is used).
const MAX_TIDS: u32 = 1 << 17;

/// Capacity of the `THREAD_SCHED` hash beside the array, for tids past its end
/// (`pid_max` raised while tracing).
pub(super) const HASH_BESIDE_ARRAY: u32 = 1024;

/// Length of the array for this host: `pid_max` where it is at most [`MAX_TIDS`],
/// else 1 (the array is not used).
pub(super) fn array_len() -> u32 {
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse::<u32>().ok());
    array_len_for(pid_max)
}

fn array_len_for(pid_max: Option<u32>) -> u32 {
    match pid_max {
        Some(n) if n > 0 && n <= MAX_TIDS => n,
        _ => 1,
    }
}

/// A shared mapping of the array's entries.
struct Mapping {
    ptr: *mut ThreadSched,
    len: usize,
    bytes: usize,
}

impl Mapping {
    fn new(data: &MapData, writable: bool) -> Result<Mapping, ProbeError> {
        let err = |source| ProbeError::Map { name: map::THREAD_SCHED_BY_TID, source };
        let len = data.info().map_err(err)?.max_entries() as usize;
        let bytes = len * size_of::<ThreadSched>();
        let prot = if writable { libc::PROT_READ | libc::PROT_WRITE } else { libc::PROT_READ };
        let fd = data.fd().as_fd().as_raw_fd();
        // SAFETY: maps `bytes` of the array's values (BPF_F_MMAPABLE), fd alive here;
        // the result is checked before use.
        let ptr = unsafe { libc::mmap(std::ptr::null_mut(), bytes, prot, libc::MAP_SHARED, fd, 0) };
        if ptr == libc::MAP_FAILED {
            let io_error = std::io::Error::last_os_error();
            return Err(err(MapError::SyscallError(aya::sys::SyscallError { call: "mmap", io_error })));
        }
        Ok(Mapping { ptr: ptr.cast(), len, bytes })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.ptr.cast(), self.bytes) };
    }
}

fn array_data(m: &Map) -> Result<&MapData, ProbeError> {
    match m {
        Map::Array(d) => Ok(d),
        _ => Err(ProbeError::Map { name: map::THREAD_SCHED_BY_TID, source: MapError::InvalidMapType { map_type: 0 } }),
    }
}

/// Fills every slot with `ThreadSched::UNSEEN` (the array starts zeroed, and zero
/// is not "unseen": its CPU would read as CPU 0). Call before attaching anything.
pub(super) fn fill_unseen(ebpf: &mut Ebpf) -> Result<(), ProbeError> {
    let m = ebpf.map_mut(map::THREAD_SCHED_BY_TID).ok_or(ProbeError::MissingMap(map::THREAD_SCHED_BY_TID))?;
    let mapping = Mapping::new(array_data(m)?, true)?;
    for i in 0..mapping.len {
        // SAFETY: i < len, inside the mapping; no program is attached yet.
        unsafe { mapping.ptr.add(i).write(ThreadSched::UNSEEN) };
    }
    Ok(())
}

/// The array, mapped for reading, and for forgetting a retired thread's slot.
pub(super) struct SchedByTid {
    mapping: Mapping,
    /// Keeps the map's fd open while mapped.
    _map: Map,
}

impl SchedByTid {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<SchedByTid, ProbeError> {
        let m = ebpf.take_map(map::THREAD_SCHED_BY_TID).ok_or(ProbeError::MissingMap(map::THREAD_SCHED_BY_TID))?;
        let mapping = Mapping::new(array_data(&m)?, true)?;
        Ok(SchedByTid { mapping, _map: m })
    }

    /// (tid, entry) of every thread the probes have seen.
    pub(super) fn entries(&self) -> impl Iterator<Item = (u32, ThreadSched)> + '_ {
        (0..self.mapping.len).filter_map(|i| {
            // SAFETY: i < len, inside the mapping. The probes may be writing the entry
            // (as they may while a hash lookup copies one): a volatile copy, as of now.
            let t = unsafe { self.mapping.ptr.add(i).read_volatile() };
            (t != ThreadSched::UNSEEN).then_some((i as u32, t))
        })
    }

    /// The entry of `tid`, if the array covers it and the probes have seen it.
    pub(super) fn get(&self, tid: u32) -> Option<ThreadSched> {
        let i = tid as usize;
        if i >= self.mapping.len {
            return None;
        }
        // SAFETY: i < len, inside the mapping; a volatile copy as in `entries`.
        let t = unsafe { self.mapping.ptr.add(i).read_volatile() };
        (t != ThreadSched::UNSEEN).then_some(t)
    }

    /// Forgets a retired thread (an array slot cannot be deleted): its slot reads as
    /// unseen again, so that a later thread with its tid starts afresh.
    pub(super) fn forget(&self, tid: u32) {
        let i = tid as usize;
        if i < self.mapping.len {
            // SAFETY: i < len, inside the writable mapping. The thread's final switch
            // was seen, so no probe writes its slot any more (a reborn tid is handled
            // by the retirement protocol, as for the hash).
            unsafe { self.mapping.ptr.add(i).write_volatile(ThreadSched::UNSEEN) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_array_covers_a_small_pid_max_and_is_unused_otherwise() {
        assert_eq!(array_len_for(Some(32768)), 32768);
        assert_eq!(array_len_for(Some(MAX_TIDS)), MAX_TIDS);
        assert_eq!(array_len_for(Some(4_194_304)), 1);
        assert_eq!(array_len_for(Some(0)), 1);
        assert_eq!(array_len_for(None), 1);
    }
}

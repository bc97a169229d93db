//! Guest RAM as a file that QEMU maps with `memory-backend-file,share=on` and vmmtrace
//! maps too: the host reads and writes the guest's mailbox while the guest runs, the way
//! a vhost-user backend shares guest memory.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};

use crate::Error;

/// A shared mapping of the whole guest RAM file. On microvm, guest-physical address A
/// (below 3 GiB) is at file offset A.
pub(crate) struct GuestRam {
    path: PathBuf,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all accesses are volatile, aligned u64
// loads and stores, as the guest does on its side.
unsafe impl Send for GuestRam {}

impl GuestRam {
    /// Creates a zeroed file of `len` bytes at `path` and maps it shared.
    pub(crate) fn create(path: &Path, len: u64) -> Result<GuestRam, Error> {
        let io = |source| Error::Io { what: "create guest RAM file", path: path.to_path_buf(), source };
        let file: File = OpenOptions::new().read(true).write(true).create_new(true).open(path).map_err(io)?;
        file.set_len(len).map_err(io)?;
        let ptr = microvm::sys::map_shared(file.as_fd(), len as usize).map_err(|source| {
            let _ = std::fs::remove_file(path);
            io(source)
        })?;
        Ok(GuestRam { path: path.to_path_buf(), ptr, len: len as usize })
    }

    /// The whole RAM as bytes, for the program loader and the system-call server.
    ///
    /// # Safety
    /// The guest must not touch the memory the caller reads or writes meanwhile: the
    /// guest waits at its gate (loading) or spins on the mailbox in its system-call
    /// entry (serving), reading only the mailbox.
    pub(crate) unsafe fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: our live mapping of `len` bytes; exclusivity as the caller promises.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn at(&self, addr: u64) -> *mut u64 {
        assert!(addr.is_multiple_of(8) && (addr as usize) + 8 <= self.len, "guest address {addr:#x} outside RAM");
        // SAFETY: in bounds (checked above) of our live mapping.
        unsafe { self.ptr.add(addr as usize).cast() }
    }

    pub(crate) fn read_u64(&self, addr: u64) -> u64 {
        // SAFETY: aligned and in bounds; the guest writes it concurrently, hence volatile.
        unsafe { self.at(addr).read_volatile() }
    }

    pub(crate) fn write_u64(&self, addr: u64, value: u64) {
        // SAFETY: as read_u64.
        unsafe { self.at(addr).write_volatile(value) }
    }
}

impl Drop for GuestRam {
    fn drop(&mut self) {
        // SAFETY: unmapping the mapping made in create; nothing refers to it any more.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
        let _ = std::fs::remove_file(&self.path);
    }
}

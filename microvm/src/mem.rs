//! Guest RAM: one anonymous shared mapping, registered as KVM memory slot 0.

use crate::Error;

pub(crate) struct GuestMem {
    ptr: *mut u8,
    size: usize,
}

// SAFETY: the mapping lives as long as the GuestMem; concurrent access from vCPU
// threads, the emulator and the guest goes through raw volatile reads/writes only.
unsafe impl Send for GuestMem {}
// SAFETY: as for Send: shared access is only through raw volatile reads and writes.
unsafe impl Sync for GuestMem {}

impl GuestMem {
    pub(crate) fn new(size: u64) -> Result<Self, Error> {
        // SAFETY: anonymous mapping, no file descriptor involved.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::Memory(format!("mmap {} MiB: {}", size >> 20, std::io::Error::last_os_error())));
        }
        Ok(GuestMem { ptr: ptr as *mut u8, size: size as usize })
    }

    pub(crate) fn host_addr(&self) -> u64 {
        self.ptr as u64
    }

    pub(crate) fn size(&self) -> u64 {
        self.size as u64
    }

    fn check(&self, addr: u64, len: u64) -> Result<(), Error> {
        if addr.checked_add(len).is_none_or(|end| end > self.size as u64) {
            return Err(Error::Memory(format!("guest range {addr:#x}+{len:#x} outside RAM of {:#x} bytes", self.size)));
        }
        Ok(())
    }

    pub(crate) fn write(&self, addr: u64, data: &[u8]) -> Result<(), Error> {
        self.check(addr, data.len() as u64)?;
        // SAFETY: bounds checked above; the guest is not running during setup.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(addr as usize), data.len()) };
        Ok(())
    }

    pub(crate) fn write_u64(&self, addr: u64, v: u64) -> Result<(), Error> {
        self.write(addr, &v.to_le_bytes())
    }

    pub(crate) fn zero(&self, addr: u64, len: u64) -> Result<(), Error> {
        self.check(addr, len)?;
        // SAFETY: bounds checked.
        unsafe { std::ptr::write_bytes(self.ptr.add(addr as usize), 0, len as usize) };
        Ok(())
    }

    /// Reads a plain-old-data value the guest may be writing concurrently.
    pub(crate) fn read_obj<T: Copy>(&self, addr: u64) -> Result<T, Error> {
        self.check(addr, size_of::<T>() as u64)?;
        // SAFETY: bounds checked; T is Copy plain data (only used with integers and WlParams).
        Ok(unsafe { std::ptr::read_volatile(self.ptr.add(addr as usize) as *const T) })
    }

    /// Device-model work: FNV-1a over a guest buffer, read 8 bytes at a time with
    /// volatile loads (the guest may be running on it). Returns None if out of range.
    pub(crate) fn checksum(&self, addr: u64, len: u64) -> Option<u64> {
        self.check(addr, len).ok()?;
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let base = self.ptr as usize + addr as usize;
        let words = len / 8;
        for k in 0..words as usize {
            // SAFETY: in bounds; unaligned-safe read.
            let w = unsafe { std::ptr::read_volatile((base + k * 8) as *const [u8; 8]) };
            h = (h ^ u64::from_le_bytes(w)).wrapping_mul(0x100_0000_01b3);
        }
        for k in (words * 8) as usize..len as usize {
            // SAFETY: in bounds.
            let b = unsafe { std::ptr::read_volatile((base + k) as *const u8) };
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        Some(h)
    }
}

impl Drop for GuestMem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping; the VM fd holding the slot is dropped first
        // (see field order in vm.rs), or KVM simply keeps no reference to freed pages.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size) };
    }
}

//! The guest program's address space: which page ranges of guest RAM are in use, and
//! bounds-checked access to guest memory.
//!
//! Guest virtual addresses equal guest-physical ones (the VM identity-maps its RAM),
//! so guest memory is one byte slice from guest-physical 0. The program may use
//! [`Layout::program_base`]..`ram_size`; below that lie the VM's own tables and stub.
//! Invariant: memory not in any range is zero, so a fresh anonymous mapping needs no
//! clearing (ranges are zeroed when they are unmapped).

use std::collections::BTreeMap;

pub const PAGE: u64 = 4096;

pub fn page_down(a: u64) -> u64 {
    a & !(PAGE - 1)
}
pub fn page_up(a: u64) -> u64 {
    a.saturating_add(PAGE - 1) & !(PAGE - 1)
}

/// Where things go in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Guest RAM size in bytes (multiple of 2 MiB).
    pub ram_size: u64,
    /// Lowest address the program may use (non-PIE executables are linked at 0x400000).
    pub program_base: u64,
    /// Where a position-independent executable is loaded.
    pub pie_base: u64,
    /// Bytes reserved for the main stack at the top of RAM.
    pub stack_size: u64,
}

impl Layout {
    /// The layout for `ram_size` bytes of guest RAM (>= 64 MiB).
    pub fn new(ram_size: u64) -> Layout {
        Layout { ram_size, program_base: 0x40_0000, pie_base: 0x100_0000, stack_size: 8 << 20 }
    }
    /// One past the highest stack byte (the initial stack is built below it).
    pub fn stack_top(&self) -> u64 {
        self.ram_size
    }
    pub fn stack_bottom(&self) -> u64 {
        self.ram_size - self.stack_size
    }
}

/// Errors of guest memory access, as the errno a system call returns.
pub const EFAULT: i64 = 14;

/// Checked views of guest memory (a slice from guest-physical 0) for the system-call
/// server: every address the program passes goes through these.
pub struct GuestMemory<'a> {
    bytes: &'a mut [u8],
    floor: u64,
}

impl<'a> GuestMemory<'a> {
    /// `bytes` is guest RAM from guest-physical 0; addresses below `floor` (the VM's own
    /// tables) are refused as if unmapped.
    pub fn new(bytes: &'a mut [u8], floor: u64) -> Self {
        GuestMemory { bytes, floor }
    }

    fn range(&self, addr: u64, len: u64) -> Result<std::ops::Range<usize>, i64> {
        let end = addr.checked_add(len).ok_or(EFAULT)?;
        if addr < self.floor || end > self.bytes.len() as u64 {
            return Err(EFAULT);
        }
        Ok(addr as usize..end as usize)
    }

    pub fn slice(&self, addr: u64, len: u64) -> Result<&[u8], i64> {
        let r = self.range(addr, len)?;
        Ok(&self.bytes[r])
    }

    pub fn slice_mut(&mut self, addr: u64, len: u64) -> Result<&mut [u8], i64> {
        let r = self.range(addr, len)?;
        Ok(&mut self.bytes[r])
    }

    pub fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), i64> {
        self.slice_mut(addr, data.len() as u64)?.copy_from_slice(data);
        Ok(())
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, i64> {
        Ok(u64::from_le_bytes(self.slice(addr, 8)?.try_into().unwrap()))
    }

    pub fn write_u64(&mut self, addr: u64, v: u64) -> Result<(), i64> {
        self.write(addr, &v.to_le_bytes())
    }

    /// A NUL-terminated string of at most `max` bytes (without the NUL).
    pub fn c_str(&self, addr: u64, max: usize) -> Result<Vec<u8>, i64> {
        let avail = (self.bytes.len() as u64).saturating_sub(addr).min(max as u64 + 1);
        let s = self.slice(addr, avail)?;
        match s.iter().position(|&b| b == 0) {
            Some(n) => Ok(s[..n].to_vec()),
            None => Err(36), // ENAMETOOLONG
        }
    }

    pub fn zero(&mut self, addr: u64, len: u64) -> Result<(), i64> {
        self.slice_mut(addr, len)?.fill(0);
        Ok(())
    }

    /// Copies `len` bytes from `from` to `to` (ranges may overlap).
    pub fn copy_within(&mut self, from: u64, to: u64, len: u64) -> Result<(), i64> {
        let src = self.range(from, len)?;
        self.range(to, len)?;
        self.bytes.copy_within(src, to as usize);
        Ok(())
    }
}

/// Mapped page ranges (start -> end, page-aligned, disjoint) and the program break.
#[derive(Debug, Clone)]
pub struct AddressSpace {
    pub layout: Layout,
    maps: BTreeMap<u64, u64>,
    pub brk_start: u64,
    pub brk: u64,
}

impl AddressSpace {
    pub fn new(layout: Layout) -> Self {
        let mut s = AddressSpace { layout, maps: BTreeMap::new(), brk_start: 0, brk: 0 };
        s.insert(layout.stack_bottom(), layout.stack_top());
        s
    }

    /// True if no mapping overlaps [start, end) and it lies in program memory.
    pub fn is_free(&self, start: u64, end: u64) -> bool {
        if start < self.layout.program_base || end > self.layout.ram_size || start >= end {
            return false;
        }
        if self.maps.range(..end).next_back().is_some_and(|(_, &e)| e > start) {
            return false;
        }
        !(start < page_up(self.brk) && self.brk_start < end)
    }

    pub fn insert(&mut self, start: u64, end: u64) {
        self.remove(start, end);
        self.maps.insert(start, end);
    }

    /// Removes [start, end) from every mapping it overlaps; returns the pieces removed.
    pub fn remove(&mut self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let overlapping: Vec<(u64, u64)> =
            self.maps.range(..end).filter(|(_, e)| **e > start).map(|(&s, &e)| (s, e)).collect();
        let mut removed = Vec::new();
        for (s, e) in overlapping {
            self.maps.remove(&s);
            if s < start {
                self.maps.insert(s, start);
            }
            if e > end {
                self.maps.insert(end, e);
            }
            removed.push((s.max(start), e.min(end)));
        }
        removed
    }

    /// True if all of [start, end) is mapped.
    pub fn is_mapped(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        for (&s, &e) in self.maps.range(..end) {
            if e <= at {
                continue;
            }
            if s > at {
                return false;
            }
            at = e;
            if at >= end {
                return true;
            }
        }
        at >= end
    }

    /// The highest free range of `len` bytes below the stack (top-down, as Linux does).
    pub fn find_free(&self, len: u64) -> Option<u64> {
        let floor = page_up(self.brk).max(self.layout.program_base);
        let mut top = self.layout.stack_bottom() - PAGE; // one guard page under the stack
        for (&s, &e) in self.maps.range(..top).rev() {
            if e <= top && top - e >= len {
                return top.checked_sub(len).filter(|&a| a >= floor);
            }
            top = top.min(s);
        }
        top.checked_sub(len).filter(|&a| a >= floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> AddressSpace {
        let mut s = AddressSpace::new(Layout::new(64 << 20));
        s.brk_start = 0x50_0000;
        s.brk = 0x58_0000;
        s
    }

    #[test]
    fn find_free_goes_top_down_below_the_stack_and_skips_mappings() {
        let mut s = space();
        let top = s.layout.stack_bottom() - PAGE;
        let a = s.find_free(0x2000).unwrap();
        assert_eq!(a, top - 0x2000);
        s.insert(a, a + 0x2000);
        let b = s.find_free(0x1000).unwrap();
        assert_eq!(b, a - 0x1000);
        assert!(s.find_free(1 << 40).is_none());
    }

    #[test]
    fn remove_splits_and_is_mapped_sees_holes() {
        let mut s = space();
        s.insert(0x100_0000, 0x100_4000);
        assert!(s.is_mapped(0x100_0000, 0x100_4000));
        assert_eq!(s.remove(0x100_1000, 0x100_2000), vec![(0x100_1000, 0x100_2000)]);
        assert!(!s.is_mapped(0x100_0000, 0x100_4000));
        assert!(s.is_mapped(0x100_2000, 0x100_4000));
        assert!(s.is_free(0x100_1000, 0x100_2000));
        assert!(!s.is_free(0x50_0000, 0x60_0000), "overlaps the break");
        assert!(!s.is_free(0x1000, 0x2000), "below program memory");
    }

    #[test]
    fn guest_memory_refuses_the_vm_area_and_out_of_range() {
        let mut ram = vec![0u8; 0x10000];
        let mut m = GuestMemory::new(&mut ram, 0x1000);
        assert_eq!(m.slice(0x800, 4), Err(EFAULT));
        assert_eq!(m.slice(0xfffe, 4), Err(EFAULT));
        m.write(0x2000, b"abc\0").unwrap();
        assert_eq!(m.c_str(0x2000, 100).unwrap(), b"abc");
    }
}

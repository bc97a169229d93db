//! ELF64 x86-64 headers: just what the two loaders need (the built-in payload in
//! `vm.rs` and Linux programs in `guest_program`).

pub const PT_LOAD: u32 = 1;
pub const PT_INTERP: u32 = 3;
pub const PT_PHDR: u32 = 6;
pub const PT_GNU_STACK: u32 = 0x6474_e551;
pub const ET_EXEC: u16 = 2;
pub const ET_DYN: u16 = 3;
pub const PF_X: u32 = 1;
pub const PF_W: u32 = 2;
pub const PF_R: u32 = 4;

/// One program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phdr {
    pub kind: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

/// The ELF header fields the loaders use, and the program headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elf {
    pub kind: u16,
    pub entry: u64,
    pub phoff: u64,
    pub phentsize: u16,
    pub phdrs: Vec<Phdr>,
}

fn rd16(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn rd32(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn rd64(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

impl Elf {
    /// Parses the ELF header and program headers of an x86-64 ELF64 little-endian file
    /// (only the first bytes are needed: headers must lie within `head`). The error
    /// says what is wrong, for a one-line message.
    pub fn parse(head: &[u8]) -> Result<Elf, String> {
        if head.len() < 64 || &head[..4] != b"\x7fELF" {
            return Err("not an ELF file".into());
        }
        if head[4] != 2 || head[5] != 1 {
            return Err("not a 64-bit little-endian ELF file".into());
        }
        let machine = rd16(head, 0x12).unwrap_or(0);
        if machine != 62 {
            return Err(format!("ELF machine {machine} is not x86-64 (62)"));
        }
        let kind = rd16(head, 0x10).unwrap_or(0);
        if kind != ET_EXEC && kind != ET_DYN {
            return Err(format!("ELF type {kind} is neither an executable nor a shared object"));
        }
        let short = || "ELF program headers are truncated".to_string();
        let (entry, phoff) = (rd64(head, 0x18).ok_or_else(short)?, rd64(head, 0x20).ok_or_else(short)?);
        let (phentsize, phnum) = (rd16(head, 0x36).ok_or_else(short)?, rd16(head, 0x38).ok_or_else(short)?);
        if phentsize < 56 {
            return Err(format!("ELF program header size {phentsize} < 56"));
        }
        let mut phdrs = Vec::with_capacity(phnum as usize);
        for k in 0..phnum as usize {
            let p =
                usize::try_from(phoff).ok().and_then(|o| o.checked_add(k * phentsize as usize)).ok_or_else(short)?;
            phdrs.push(Phdr {
                kind: rd32(head, p).ok_or_else(short)?,
                flags: rd32(head, p + 4).ok_or_else(short)?,
                offset: rd64(head, p + 8).ok_or_else(short)?,
                vaddr: rd64(head, p + 0x10).ok_or_else(short)?,
                filesz: rd64(head, p + 0x20).ok_or_else(short)?,
                memsz: rd64(head, p + 0x28).ok_or_else(short)?,
                align: rd64(head, p + 0x30).ok_or_else(short)?,
            });
        }
        Ok(Elf { kind, entry, phoff, phentsize, phdrs })
    }

    /// The PT_LOAD segments.
    pub fn loads(&self) -> impl Iterator<Item = &Phdr> {
        self.phdrs.iter().filter(|p| p.kind == PT_LOAD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_wrong_machine() {
        assert!(Elf::parse(b"#!/bin/sh\n").unwrap_err().contains("not an ELF"));
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x12] = 40; // ARM
        assert!(Elf::parse(&h).unwrap_err().contains("not x86-64"));
    }

    #[test]
    fn truncated_or_hostile_headers_are_errors_not_panics() {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        (h[4], h[5], h[0x10], h[0x12]) = (2, 1, 3, 62);
        h[0x36] = 56;
        h[0x38] = 1; // one program header...
        h[0x20..0x28].copy_from_slice(&(u64::MAX - 8).to_le_bytes()); // ...at an absurd offset
        assert!(Elf::parse(&h).unwrap_err().contains("truncated"));
        h[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // right after the header, but cut off
        assert!(Elf::parse(&h).unwrap_err().contains("truncated"));
    }

    #[test]
    fn parses_this_test_binary() {
        let exe = std::fs::read("/proc/self/exe").unwrap();
        let e = Elf::parse(&exe).unwrap();
        assert!(e.loads().count() >= 2);
        assert!(e.loads().any(|p| p.flags & PF_X != 0));
    }
}

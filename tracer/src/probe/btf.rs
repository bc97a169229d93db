//! Just enough of a BTF reader to find what the probes need from the running kernel's
//! types (/sys/kernel/btf/vmlinux): a struct member's byte offset (`task_struct.pid`)
//! and the number of arguments of a tracepoint's prototype (`btf_trace_sched_switch`).

use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("BTF data is malformed: {0}")]
    Malformed(&'static str),
    #[error("type {0} not found in the kernel's BTF")]
    NoType(String),
    #[error("struct {0} has no member {1}")]
    NoMember(String, String),
    #[error("cannot read /sys/kernel/btf/vmlinux (kernel without CONFIG_DEBUG_INFO_BTF?)")]
    Read(#[source] std::io::Error),
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Clone)]
struct Type {
    name_off: u32,
    kind: u32,
    kind_flag: bool,
    vlen: u32,
    /// size or referenced type id
    size_or_type: u32,
    /// start of the kind-specific data in the type section
    extra: usize,
}

/// A parsed BTF blob: types by id, plus a name index of structs and typedefs.
pub struct Btf {
    data: Vec<u8>,
    strings_start: usize,
    strings_len: usize,
    types: Vec<Type>,
    by_name: HashMap<(String, u32), u32>,
}

fn u32_at(d: &[u8], off: usize) -> Result<u32, BtfError> {
    d.get(off..off + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])).ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Btf, BtfError> {
        Btf::parse(std::fs::read("/sys/kernel/btf/vmlinux").map_err(BtfError::Read)?)
    }

    pub fn parse(data: Vec<u8>) -> Result<Btf, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let type_off = u32_at(&data, 8)? as usize;
        let type_len = u32_at(&data, 12)? as usize;
        let str_off = u32_at(&data, 16)? as usize;
        let str_len = u32_at(&data, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings_start = hdr_len + str_off;
        if types_end > data.len() || strings_start + str_len > data.len() {
            return Err(BtfError::Malformed("sections out of bounds"));
        }
        // Type id 0 is void.
        let mut types = vec![Type { name_off: 0, kind: 0, kind_flag: false, vlen: 0, size_or_type: 0, extra: 0 }];
        let mut off = types_start;
        while off < types_end {
            let name_off = u32_at(&data, off)?;
            let info = u32_at(&data, off + 4)?;
            let size_or_type = u32_at(&data, off + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let extra = off + 12;
            let extra_len = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                0..=19 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(Type { name_off, kind, kind_flag: info >> 31 == 1, vlen, size_or_type, extra });
            off = extra + extra_len;
        }
        let mut btf = Btf { data, strings_start, strings_len: str_len, types, by_name: HashMap::new() };
        for id in 1..btf.types.len() {
            let t = &btf.types[id];
            if matches!(t.kind, KIND_STRUCT | KIND_TYPEDEF) && t.name_off != 0 {
                let name = btf.string(t.name_off)?.to_string();
                btf.by_name.entry((name, t.kind)).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let start = self.strings_start + off as usize;
        let end_max = self.strings_start + self.strings_len;
        let s = self.data.get(start..end_max).ok_or(BtfError::Malformed("string offset"))?;
        let n = s.iter().position(|&b| b == 0).ok_or(BtfError::Malformed("unterminated string"))?;
        std::str::from_utf8(&s[..n]).map_err(|_| BtfError::Malformed("string not UTF-8"))
    }

    /// Byte offset of `member` in `struct name` (searching anonymous nested
    /// structs/unions too).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(&(name.to_string(), KIND_STRUCT))
            .ok_or_else(|| BtfError::NoType(format!("struct {name}")))?;
        self.find_member(id, member, 0, 0)?
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember(name.into(), member.into()))
    }

    /// Type `id`; an error for an id past the last type (BTF from outside may say anything).
    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types.get(id as usize).ok_or(BtfError::Malformed("type id"))
    }

    /// `depth` bounds the nesting of anonymous members: a struct that contains itself
    /// would otherwise recurse without end.
    fn find_member(&self, id: u32, member: &str, base_bits: u32, depth: u32) -> Result<Option<u32>, BtfError> {
        if depth > 32 {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let t = self.ty(id)?;
        for i in 0..t.vlen as usize {
            let m = t.extra + 12 * i;
            let name_off = u32_at(&self.data, m)?;
            let mtype = u32_at(&self.data, m + 4)?;
            let raw = u32_at(&self.data, m + 8)?;
            let bits = base_bits.saturating_add(if t.kind_flag { raw & 0xff_ffff } else { raw });
            if name_off == 0 {
                let inner = self.skip_modifiers(mtype)?;
                if matches!(self.ty(inner)?.kind, KIND_STRUCT | KIND_UNION)
                    && let Some(b) = self.find_member(inner, member, bits, depth + 1)?
                {
                    return Ok(Some(b));
                }
            } else if self.string(name_off)? == member {
                return Ok(Some(bits));
            }
        }
        Ok(None)
    }

    fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..32 {
            let t = self.ty(id)?;
            match t.kind {
                8..=11 | 18 => id = t.size_or_type, // typedef, volatile, const, restrict, type_tag
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("modifier loop"))
    }

    /// Number of parameters of the function prototype a typedef points to, e.g.
    /// `btf_trace_sched_switch` (its first parameter is the `void *` context).
    pub fn typedef_proto_params(&self, typedef: &str) -> Result<u32, BtfError> {
        Ok(self.typedef_proto(typedef)?.vlen)
    }

    fn typedef_proto(&self, typedef: &str) -> Result<&Type, BtfError> {
        let id = *self
            .by_name
            .get(&(typedef.to_string(), KIND_TYPEDEF))
            .ok_or_else(|| BtfError::NoType(format!("typedef {typedef}")))?;
        let mut t = self.ty(id)?;
        for _ in 0..8 {
            match t.kind {
                KIND_TYPEDEF | KIND_PTR => t = self.ty(t.size_or_type)?,
                KIND_FUNC_PROTO => return Ok(t),
                _ => break,
            }
        }
        Err(BtfError::NoType(format!("function prototype behind {typedef}")))
    }

    /// The parameter types of the prototype a typedef points to, spelled as C does
    /// without spaces before `*`: `btf_trace_kvm_exit` gives
    /// `["void*", "struct kvm_vcpu*", "u32"]` (typedef names are kept, not resolved).
    pub fn typedef_proto_param_types(&self, typedef: &str) -> Result<Vec<String>, BtfError> {
        let proto = self.typedef_proto(typedef)?;
        (0..proto.vlen as usize).map(|i| self.type_name(u32_at(&self.data, proto.extra + 8 * i + 4)?, 0)).collect()
    }

    /// `id` spelled as in C; `depth` bounds pointer and modifier chains.
    fn type_name(&self, id: u32, depth: u32) -> Result<String, BtfError> {
        if depth > 16 {
            return Err(BtfError::Malformed("type chain too long"));
        }
        if id == 0 {
            return Ok("void".into());
        }
        let t = self.ty(id)?;
        let name = if t.name_off == 0 { "" } else { self.string(t.name_off)? };
        Ok(match t.kind {
            KIND_PTR => format!("{}*", self.type_name(t.size_or_type, depth + 1)?),
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            9..=11 | 18 => self.type_name(t.size_or_type, depth + 1)?, // volatile, const, restrict, type_tag
            _ => name.to_string(),
        })
    }

    /// Whether the kernel's BTF has `struct name` (a KVM backend's vCPU struct is
    /// there only when that backend is built into the kernel).
    pub fn has_struct(&self, name: &str) -> bool {
        self.by_name.contains_key(&(name.to_string(), KIND_STRUCT))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: int, struct s { int a; struct { int pid; }; },
    /// and typedef t -> ptr -> proto(int, int, int).
    fn blob() -> Vec<u8> {
        let (s_int, s_s, s_a, s_pid, s_t) = (1u32, 5, 7, 9, 13);
        let mut ty: Vec<u32> = Vec::new();
        let mut push = |v: &[u32]| ty.extend_from_slice(v);
        push(&[s_int, KIND_INT << 24, 4, 32]); // 1: int
        push(&[0, (KIND_STRUCT << 24) | 1, 4, s_pid, 1, 0]); // 2: anon struct { int pid @0 }
        push(&[s_s, (KIND_STRUCT << 24) | 2, 8, s_a, 1, 0, 0, 2, 32]); // 3: struct s { a @0; anon @32 bits }
        push(&[0, (KIND_FUNC_PROTO << 24) | 3, 1, 0, 1, 0, 1, 0, 1]); // 4: proto(int,int,int)
        push(&[0, KIND_PTR << 24, 4]); // 5: ptr -> proto
        push(&[s_t, KIND_TYPEDEF << 24, 5]); // 6: typedef t
        blob_with(&ty)
    }

    #[test]
    fn finds_members_in_nested_anonymous_structs() {
        let b = Btf::parse(blob()).unwrap();
        assert_eq!(b.member_offset("s", "a").unwrap(), 0);
        assert_eq!(b.member_offset("s", "pid").unwrap(), 4);
        assert!(matches!(b.member_offset("s", "nope"), Err(BtfError::NoMember(..))));
        assert!(matches!(b.member_offset("nope", "a"), Err(BtfError::NoType(..))));
        assert_eq!(b.typedef_proto_params("t").unwrap(), 3);
        assert_eq!(b.typedef_proto_param_types("t").unwrap(), ["int", "int", "int"]);
        assert!(b.has_struct("s"));
        assert!(!b.has_struct("t"));
    }

    /// typedef t -> ptr -> proto(void *, struct s *, int): pointers and structs are
    /// spelled as the prototype checks expect them.
    #[test]
    fn spells_pointer_and_struct_parameters() {
        let b = Btf::parse(blob_with(&[
            1,
            KIND_INT << 24,
            4,
            32, // 1: int
            5,
            (KIND_STRUCT << 24) | 1,
            4,
            7,
            1,
            0, // 2: struct s { int a }
            0,
            KIND_PTR << 24,
            2, // 3: struct s *
            0,
            KIND_PTR << 24,
            0, // 4: void *
            0,
            (KIND_FUNC_PROTO << 24) | 3,
            1,
            0,
            4,
            0,
            3,
            0,
            1, // 5: proto(void *, struct s *, int)
            0,
            KIND_PTR << 24,
            5, // 6: ptr -> proto
            13,
            KIND_TYPEDEF << 24,
            6, // 7: typedef t
        ]))
        .unwrap();
        assert_eq!(b.typedef_proto_param_types("t").unwrap(), ["void*", "struct s*", "int"]);
    }

    /// BTF built from `types` (u32 words) and the strings of `blob`.
    fn blob_with(types: &[u32]) -> Vec<u8> {
        let strings = b"\0int\0s\0a\0pid\0t\0";
        let ty: Vec<u8> = types.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut d = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, ty.len() as u32, ty.len() as u32, strings.len() as u32] {
            d.extend_from_slice(&v.to_le_bytes());
        }
        d.extend_from_slice(&ty);
        d.extend_from_slice(strings);
        d
    }

    /// Found by cargo-fuzz (btf target): a pointer to a type id past the last type.
    #[test]
    fn a_type_id_past_the_end_is_an_error() {
        let b = Btf::parse(blob_with(&[13, KIND_TYPEDEF << 24, 2, 0, KIND_PTR << 24, 63229])).unwrap();
        assert!(matches!(b.typedef_proto_params("t"), Err(BtfError::Malformed("type id"))));
        let b = Btf::parse(blob_with(&[5, (KIND_STRUCT << 24) | 1, 4, 0, 77, 0])).unwrap();
        assert!(matches!(b.member_offset("s", "pid"), Err(BtfError::Malformed("type id"))));
    }

    /// A struct whose anonymous member is itself does not recurse without end.
    #[test]
    fn a_struct_that_contains_itself_is_an_error() {
        let b = Btf::parse(blob_with(&[5, (KIND_STRUCT << 24) | 1, 4, 0, 1, 0])).unwrap();
        assert!(matches!(b.member_offset("s", "pid"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(vec![1, 2, 3]).is_err());
        let mut d = blob();
        d.truncate(40);
        assert!(Btf::parse(d).is_err());
    }
}

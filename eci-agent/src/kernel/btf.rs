//! Member offsets of kernel structs, read from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the programs that have to walk kernel structs.
//!
//! Why a reader of our own: aya emits no CO-RE relocations, so offsets compiled into the BPF
//! object would be those of one kernel; they must be found at load time instead. aya-obj parses
//! BTF but keeps struct members private, and its public API only maps names to type ids. This
//! reader does only what the loader needs: the type section, the string section, and a walk from
//! a struct through (possibly anonymous) members to the member asked for, whose type is checked
//! against what the program expects. Anything it cannot find exactly is an error: the loader then
//! refuses to load rather than guess.

use std::{fmt, path::Path};

use eci_common::KernelOffsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

const MAGIC: u16 = 0xeb9f;
const HEADER_LEN: usize = 24;

// BTF kinds (include/uapi/linux/btf.h).
const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Why offsets could not be found.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BtfError {
    /// The file could not be read (the io error's text: this type stays comparable in tests).
    #[error("{0}")]
    Read(String),
    #[error("BTF data is truncated or malformed ({0})")]
    Malformed(&'static str),
    #[error("not BTF data, or not little-endian (magic {0:#06x})")]
    BadMagic(u16),
    #[error("BTF type {id} has an unknown kind {kind}")]
    UnknownKind { id: u32, kind: u8 },
    #[error("struct {0} is not in the kernel's BTF")]
    NoStruct(String),
    #[error("struct {0} has several definitions with different layouts")]
    Ambiguous(String),
    #[error("struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error("{path} is a bit field")]
    BitField { path: String },
    #[error("{path} is {found}, expected {expected}")]
    WrongType {
        path: String,
        found: String,
        expected: Expected,
    },
}

/// The type a member must have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// A pointer to the named struct.
    PtrToStruct(&'static str),
    /// A pointer to a one-byte integer (`char *`).
    PtrToChar,
    /// An integer of this many bytes.
    Int(u32),
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PtrToStruct(name) => write!(f, "struct {name} *"),
            Self::PtrToChar => f.write_str("char *"),
            Self::Int(bytes) => write!(f, "a {bytes}-byte integer"),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Type {
    kind: u8,
    name: u32,
    /// Size for INT/STRUCT/UNION/ENUM/FLOAT, the referenced type id for the others.
    size_or_type: u32,
    kflag: bool,
    /// Index of the first member in `Btf::members` (STRUCT/UNION), and how many.
    first_member: usize,
    vlen: usize,
}

#[derive(Clone, Copy, Debug)]
struct Member {
    name: u32,
    type_id: u32,
    /// Raw `offset` field: the bit offset, or with `kflag` (bitfield size << 24 | bit offset).
    offset: u32,
}

/// The parsed type and string sections of a BTF blob.
pub struct Btf {
    /// Index 0 is the implicit `void`.
    types: Vec<Type>,
    members: Vec<Member>,
    strings: Vec<u8>,
}

/// A member found by [`Btf::member`]: its byte offset from the start of the outer struct and its
/// type id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub offset: u64,
    pub type_id: u32,
}

fn u16_at(data: &[u8], at: usize) -> Result<u16, BtfError> {
    let bytes = data
        .get(at..at + 2)
        .ok_or(BtfError::Malformed("short read"))?;
    Ok(u16::from_le_bytes([bytes[0], bytes[1]]))
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    let bytes = data
        .get(at..at + 4)
        .ok_or(BtfError::Malformed("short read"))?;
    Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path)
            .map_err(|err| BtfError::Read(format!("reading {}: {err}", path.display())))?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let magic = u16_at(data, 0)?;
        if magic != MAGIC {
            return Err(BtfError::BadMagic(magic));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        if hdr_len < HEADER_LEN {
            return Err(BtfError::Malformed("header too short"));
        }
        let section = |off_at: usize| -> Result<&[u8], BtfError> {
            let off = u32_at(data, off_at)? as usize;
            let len = u32_at(data, off_at + 4)? as usize;
            let start = hdr_len
                .checked_add(off)
                .ok_or(BtfError::Malformed("section offset"))?;
            let end = start
                .checked_add(len)
                .ok_or(BtfError::Malformed("section length"))?;
            data.get(start..end)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_section = section(8)?;
        let strings = section(16)?.to_vec();

        let mut types = vec![Type {
            kind: 0,
            name: 0,
            size_or_type: 0,
            kflag: false,
            first_member: 0,
            vlen: 0,
        }];
        let mut members = Vec::new();
        let mut at = 0;
        while at < type_section.len() {
            let id = types.len() as u32;
            let name = u32_at(type_section, at)?;
            let info = u32_at(type_section, at + 4)?;
            let size_or_type = u32_at(type_section, at + 8)?;
            at += 12;
            let kind = ((info >> 24) & 0x1f) as u8;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let first_member = members.len();
            let extra = match kind {
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        members.push(Member {
                            name: u32_at(type_section, m)?,
                            type_id: u32_at(type_section, m + 4)?,
                            offset: u32_at(type_section, m + 8)?,
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => return Err(BtfError::UnknownKind { id, kind }),
            };
            at += extra;
            if at > type_section.len() {
                return Err(BtfError::Malformed("type runs past its section"));
            }
            types.push(Type {
                kind,
                name,
                size_or_type,
                kflag,
                first_member,
                vlen: if matches!(kind, KIND_STRUCT | KIND_UNION) {
                    vlen
                } else {
                    0
                },
            });
        }
        Ok(Self {
            types,
            members,
            strings,
        })
    }

    fn name(&self, offset: u32) -> &str {
        let rest = self.strings.get(offset as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Result<&Type, BtfError> {
        self.types
            .get(id as usize)
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type tags) to the type itself.
    fn resolve(&self, mut id: u32) -> Result<u32, BtfError> {
        // A chain longer than the number of types would be a cycle.
        for _ in 0..self.types.len() {
            let ty = self.ty(id)?;
            match ty.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = ty.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("type reference cycle"))
    }

    /// The id of the kernel function `name` (a BTF `FUNC`): what a program loaded for that
    /// function's hook by hand names as its `attach_btf_id` (the kernel bench's floor program).
    pub fn function(&self, name: &str) -> Option<u32> {
        self.types
            .iter()
            .position(|t| t.kind == KIND_FUNC && self.name(t.name) == name)
            .map(|id| id as u32)
    }

    /// The complete (non-forward) definitions of `struct name`.
    fn structs_named(&self, name: &str) -> Vec<u32> {
        self.types
            .iter()
            .enumerate()
            .filter(|(_, t)| t.kind == KIND_STRUCT && self.name(t.name) == name)
            .map(|(id, _)| id as u32)
            .collect()
    }

    /// Finds the member `name` of the struct or union `id`, looking into anonymous members;
    /// returns its bit offset from the start of `id` and the member.
    fn find_member(
        &self,
        id: u32,
        name: &str,
        depth: u32,
    ) -> Result<Option<(u64, Member, bool)>, BtfError> {
        if depth > 16 {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let ty = *self.ty(id)?;
        let members = self
            .members
            .get(ty.first_member..ty.first_member + ty.vlen)
            .ok_or(BtfError::Malformed("members out of range"))?;
        for member in members {
            let (bit_offset, bitfield) = if ty.kflag {
                (
                    u64::from(member.offset & 0x00ff_ffff),
                    member.offset >> 24 != 0,
                )
            } else {
                (u64::from(member.offset), false)
            };
            if member.name != 0 {
                if self.name(member.name) == name {
                    return Ok(Some((bit_offset, *member, bitfield)));
                }
                continue;
            }
            let inner = self.resolve(member.type_id)?;
            if matches!(self.ty(inner)?.kind, KIND_STRUCT | KIND_UNION)
                && let Some((offset, found, bitfield)) = self.find_member(inner, name, depth + 1)?
            {
                return Ok(Some((bit_offset + offset, found, bitfield)));
            }
        }
        Ok(None)
    }

    /// The byte offset of `path` (member names, outermost first: `["path", "dentry"]`) in
    /// `struct strukt`. Every definition of the struct in the BTF must agree.
    pub fn member(&self, strukt: &str, path: &[&str]) -> Result<Found, BtfError> {
        let ids = self.structs_named(strukt);
        let mut found: Option<Found> = None;
        for id in ids {
            let this = self.member_in(id, strukt, path)?;
            match found {
                None => found = Some(this),
                Some(prev) if prev == this => {}
                Some(_) => return Err(BtfError::Ambiguous(strukt.to_owned())),
            }
        }
        found.ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))
    }

    fn member_in(&self, id: u32, strukt: &str, path: &[&str]) -> Result<Found, BtfError> {
        let mut outer = id;
        let mut outer_name = strukt.to_owned();
        let mut bits = 0u64;
        let mut type_id = id;
        for (i, name) in path.iter().enumerate() {
            let (offset, member, bitfield) =
                self.find_member(outer, name, 0)?
                    .ok_or_else(|| BtfError::NoMember {
                        strukt: outer_name.clone(),
                        member: (*name).to_owned(),
                    })?;
            let dotted = format!("{strukt}.{}", path[..=i].join("."));
            if bitfield || offset % 8 != 0 {
                return Err(BtfError::BitField { path: dotted });
            }
            bits += offset;
            type_id = member.type_id;
            if i + 1 < path.len() {
                outer = self.resolve(type_id)?;
                let ty = self.ty(outer)?;
                if !matches!(ty.kind, KIND_STRUCT | KIND_UNION) {
                    return Err(BtfError::WrongType {
                        path: dotted,
                        found: self.describe(type_id),
                        expected: Expected::PtrToStruct("(a struct to look into)"),
                    });
                }
                outer_name = self.name(ty.name).to_owned();
            }
        }
        Ok(Found {
            offset: bits / 8,
            type_id,
        })
    }

    /// Whether type `id` is what `expected` says.
    pub fn is(&self, id: u32, expected: Expected) -> Result<bool, BtfError> {
        let ty = self.ty(self.resolve(id)?)?;
        Ok(match expected {
            Expected::Int(bytes) => ty.kind == KIND_INT && ty.size_or_type == bytes,
            Expected::PtrToStruct(name) => {
                ty.kind == KIND_PTR && {
                    let target = self.ty(self.resolve(ty.size_or_type)?)?;
                    target.kind == KIND_STRUCT && self.name(target.name) == name
                }
            }
            Expected::PtrToChar => {
                ty.kind == KIND_PTR && {
                    let target = self.ty(self.resolve(ty.size_or_type)?)?;
                    target.kind == KIND_INT && target.size_or_type == 1
                }
            }
        })
    }

    /// A short C-like description of type `id`, for errors.
    fn describe(&self, id: u32) -> String {
        let Ok(resolved) = self.resolve(id) else {
            return "(unresolvable)".to_owned();
        };
        let Ok(ty) = self.ty(resolved) else {
            return "(unknown)".to_owned();
        };
        match ty.kind {
            0 => "void".to_owned(),
            KIND_PTR => format!("{} *", self.describe(ty.size_or_type)),
            KIND_STRUCT => format!("struct {}", self.name(ty.name)),
            KIND_UNION => format!("union {}", self.name(ty.name)),
            KIND_INT => format!("{} ({} bytes)", self.name(ty.name), ty.size_or_type),
            KIND_ARRAY => "an array".to_owned(),
            kind => format!("a type of BTF kind {kind}"),
        }
    }

    /// The offset of `strukt.path`, checked to be of type `expected`.
    pub fn typed_member(
        &self,
        strukt: &str,
        path: &[&str],
        expected: Expected,
    ) -> Result<u64, BtfError> {
        let found = self.member(strukt, path)?;
        if self.is(found.type_id, expected)? {
            Ok(found.offset)
        } else {
            Err(BtfError::WrongType {
                path: format!("{strukt}.{}", path.join(".")),
                found: self.describe(found.type_id),
                expected,
            })
        }
    }
}

/// Every offset the programs need, from `btf`; the first one missing or of an unexpected type is
/// the error.
pub fn kernel_offsets(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    use Expected::{Int, PtrToChar, PtrToStruct};
    Ok(KernelOffsets {
        file_f_inode: btf.typed_member("file", &["f_inode"], PtrToStruct("inode"))?,
        sock_sk_socket: btf.typed_member("sock", &["sk_socket"], PtrToStruct("socket"))?,
        socket_file: btf.typed_member("socket", &["file"], PtrToStruct("file"))?,
        socket_sk: btf.typed_member("socket", &["sk"], PtrToStruct("sock"))?,
        unix_sock_path_dentry: btf.typed_member(
            "unix_sock",
            &["path", "dentry"],
            PtrToStruct("dentry"),
        )?,
        dentry_d_inode: btf.typed_member("dentry", &["d_inode"], PtrToStruct("inode"))?,
        cgroup_kn: btf.typed_member("cgroup", &["kn"], PtrToStruct("kernfs_node"))?,
        kernfs_node_id: btf.typed_member("kernfs_node", &["id"], Int(8))?,
        // Linux 6.15 renamed it `__parent` (now RCU-managed; same member, same meaning), so
        // that C code goes through accessors. Both names are known; nothing else is tried.
        kernfs_node_parent: btf
            .typed_member("kernfs_node", &["parent"], PtrToStruct("kernfs_node"))
            .or_else(|err| match err {
                BtfError::NoMember { .. } => {
                    btf.typed_member("kernfs_node", &["__parent"], PtrToStruct("kernfs_node"))
                }
                other => Err(other),
            })?,
        kernfs_node_name: btf.typed_member("kernfs_node", &["name"], PtrToChar)?,
        dentry_d_parent: btf.typed_member("dentry", &["d_parent"], PtrToStruct("dentry"))?,
        dentry_d_name_len: btf.typed_member("dentry", &["d_name", "len"], Int(4))?,
        dentry_d_name_name: btf.typed_member("dentry", &["d_name", "name"], PtrToChar)?,
        inode_i_ino: btf.typed_member("inode", &["i_ino"], Int(8))?,
        bpf_map_id: btf.typed_member("bpf_map", &["id"], Int(4))?,
        bpf_prog_aux: btf.typed_member("bpf_prog", &["aux"], PtrToStruct("bpf_prog_aux"))?,
        bpf_prog_aux_id: btf.typed_member("bpf_prog_aux", &["id"], Int(4))?,
        file_f_mode: btf.typed_member("file", &["f_mode"], Int(4))?,
        file_f_path_dentry: btf.typed_member(
            "file",
            &["f_path", "dentry"],
            PtrToStruct("dentry"),
        )?,
        inode_i_sb: btf.typed_member("inode", &["i_sb"], PtrToStruct("super_block"))?,
        super_block_s_magic: btf.typed_member("super_block", &["s_magic"], Int(8))?,
        task_struct_nsproxy: btf.typed_member(
            "task_struct",
            &["nsproxy"],
            PtrToStruct("nsproxy"),
        )?,
        nsproxy_cgroup_ns: btf.typed_member(
            "nsproxy",
            &["cgroup_ns"],
            PtrToStruct("cgroup_namespace"),
        )?,
        cgroup_namespace_root_cset: btf.typed_member(
            "cgroup_namespace",
            &["root_cset"],
            PtrToStruct("css_set"),
        )?,
        css_set_dfl_cgrp: btf.typed_member("css_set", &["dfl_cgrp"], PtrToStruct("cgroup"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF blobs for the tests: types are added in order (ids from 1).
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let at = self.strings.len() as u32;
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            at
        }

        fn push(&mut self, name: &str, kind: u8, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
            let name = self.string(name);
            let info = (u32::from(kflag) << 31) | (u32::from(kind) << 24) | vlen;
            for word in [name, info, size_or_type] {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        fn int(&mut self, name: &str, bytes: u32) -> u32 {
            let id = self.push(name, KIND_INT, 0, false, bytes);
            self.types.extend_from_slice(&(bytes * 8).to_le_bytes());
            id
        }

        fn reference(&mut self, kind: u8, name: &str, target: u32) -> u32 {
            self.push(name, kind, 0, false, target)
        }

        /// Members are (name, type id, bit offset or kflag-encoded offset).
        fn compound(
            &mut self,
            kind: u8,
            name: &str,
            size: u32,
            kflag: bool,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.push(name, kind, members.len() as u32, kflag, size);
            for &(name, ty, offset) in members {
                let name = self.string(name);
                for word in [name, ty, offset] {
                    self.types.extend_from_slice(&word.to_le_bytes());
                }
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.push(1);
            out.push(0);
            for word in [
                HEADER_LEN as u32,
                0,
                self.types.len() as u32,
                self.types.len() as u32,
                self.strings.len() as u32,
            ] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature kernel: every struct the programs walk, with anonymous unions, typedefs,
    /// qualifiers, a bit field and a forward declaration on the way.
    fn mini_kernel() -> Vec<u8> {
        let mut b = Builder::new();
        let char_ = b.int("char", 1);
        let u64_ = b.int("unsigned long long", 8);
        let uint = b.int("unsigned int", 4);
        let u64_t = b.reference(KIND_TYPEDEF, "u64", u64_);
        let fwd_inode = b.reference(KIND_FWD, "inode", 0);
        let _ = fwd_inode;
        let ulong = b.int("long unsigned int", 8);
        let super_block = b.compound(
            KIND_STRUCT,
            "super_block",
            1000,
            false,
            &[("s_dev", uint, 0), ("s_magic", ulong, 768)],
        );
        let sb_ptr = b.reference(KIND_PTR, "", super_block);
        let inode = b.compound(
            KIND_STRUCT,
            "inode",
            600,
            false,
            &[
                ("i_mode", uint, 0),
                ("i_sb", sb_ptr, 192),
                ("i_ino", ulong, 320),
            ],
        );
        let inode_ptr = b.reference(KIND_PTR, "", inode);
        let const_inode_ptr = b.reference(KIND_CONST, "", inode_ptr);
        let dentry_fwd = b.reference(KIND_FWD, "dentry", 0);
        let _ = dentry_fwd;
        // struct qstr { union { struct { u32 hash; u32 len; }; u64 hash_len; }; const unsigned
        // char *name; }
        let u32_t = b.reference(KIND_TYPEDEF, "u32", uint);
        let hash_len = b.compound(
            KIND_STRUCT,
            "",
            8,
            false,
            &[("hash", u32_t, 0), ("len", u32_t, 32)],
        );
        let qstr_union = b.compound(
            KIND_UNION,
            "",
            8,
            false,
            &[("", hash_len, 0), ("hash_len", u64_t, 0)],
        );
        let uchar = b.int("unsigned char", 1);
        let const_uchar = b.reference(KIND_CONST, "", uchar);
        let uchar_ptr = b.reference(KIND_PTR, "", const_uchar);
        let qstr = b.compound(
            KIND_STRUCT,
            "qstr",
            16,
            false,
            &[("", qstr_union, 0), ("name", uchar_ptr, 64)],
        );
        // A pointer to the struct defined right after it (dentry.d_parent).
        let dentry_ptr = b.reference(KIND_PTR, "", b.next_id + 1);
        let dentry = b.compound(
            KIND_STRUCT,
            "dentry",
            192,
            false,
            &[
                ("d_flags", uint, 0),
                ("d_parent", dentry_ptr, 192),
                ("d_name", qstr, 256),
                ("d_inode", inode_ptr, 384),
            ],
        );
        assert_eq!(dentry, dentry_ptr + 1);
        let path = b.compound(
            KIND_STRUCT,
            "path",
            16,
            false,
            &[("mnt", u64_t, 0), ("dentry", dentry_ptr, 64)],
        );
        // struct file { union { u64 a; u64 b; }; unsigned int flags:3; fmode_t f_mode;
        // struct inode *const f_inode @ 32; struct path f_path @ 40 }
        let anon = b.compound(
            KIND_UNION,
            "",
            8,
            false,
            &[("fu_a", u64_t, 0), ("fu_b", u64_t, 0)],
        );
        let fmode_t = b.reference(KIND_TYPEDEF, "fmode_t", uint);
        let file = b.compound(
            KIND_STRUCT,
            "file",
            200,
            true,
            &[
                ("", anon, 0),
                ("f_bits", uint, (3 << 24) | 64),
                ("f_mode", fmode_t, 128),
                ("f_inode", const_inode_ptr, 256),
                ("f_path", path, 320),
            ],
        );
        let file_ptr = b.reference(KIND_PTR, "", file);
        // socket.sk points at the struct defined three types later (after socket and its
        // pointer).
        let sock_ptr = b.reference(KIND_PTR, "", b.next_id + 3);
        let socket = b.compound(
            KIND_STRUCT,
            "socket",
            128,
            false,
            &[
                ("state", uint, 0),
                ("file", file_ptr, 128),
                ("sk", sock_ptr, 192),
            ],
        );
        let socket_ptr = b.reference(KIND_PTR, "", socket);
        let sock = b.compound(
            KIND_STRUCT,
            "sock",
            700,
            false,
            &[("sk_socket", socket_ptr, 4096)],
        );
        assert_eq!(sock, sock_ptr + 3);
        let unix_sock = b.compound(
            KIND_STRUCT,
            "unix_sock",
            1000,
            false,
            &[("sk", sock, 0), ("addr", u64_t, 5600), ("path", path, 5664)],
        );
        let _ = unix_sock;
        let kn_fwd = b.reference(KIND_FWD, "kernfs_node", 0);
        let kn_fwd_ptr = b.reference(KIND_PTR, "", kn_fwd);
        let _ = b.compound(KIND_STRUCT, "holder", 8, false, &[("p", kn_fwd_ptr, 0)]);
        let const_char = b.reference(KIND_CONST, "", char_);
        let char_ptr = b.reference(KIND_PTR, "", const_char);
        // A pointer to the struct defined right after it, as BTF allows.
        let kn_ptr = b.reference(KIND_PTR, "", b.next_id + 1);
        let kn = b.compound(
            KIND_STRUCT,
            "kernfs_node",
            128,
            false,
            &[
                ("parent", kn_ptr, 64),
                ("name", char_ptr, 128),
                ("id", u64_t, 512),
            ],
        );
        assert_eq!(kn, kn_ptr + 1);
        let cgroup = b.compound(KIND_STRUCT, "cgroup", 2000, false, &[("kn", kn_ptr, 320)]);
        // current->nsproxy->cgroup_ns->root_cset->dfl_cgrp
        let cgroup_ptr = b.reference(KIND_PTR, "", cgroup);
        let css_set = b.compound(
            KIND_STRUCT,
            "css_set",
            512,
            false,
            &[("dfl_cgrp", cgroup_ptr, 1024)],
        );
        let css_set_ptr = b.reference(KIND_PTR, "", css_set);
        let cgroup_ns = b.compound(
            KIND_STRUCT,
            "cgroup_namespace",
            64,
            false,
            &[("root_cset", css_set_ptr, 256)],
        );
        let cgroup_ns_ptr = b.reference(KIND_PTR, "", cgroup_ns);
        let nsproxy = b.compound(
            KIND_STRUCT,
            "nsproxy",
            64,
            false,
            &[("cgroup_ns", cgroup_ns_ptr, 448)],
        );
        let nsproxy_ptr = b.reference(KIND_PTR, "", nsproxy);
        let _ = b.compound(
            KIND_STRUCT,
            "task_struct",
            4096,
            false,
            &[("nsproxy", nsproxy_ptr, 24000)],
        );
        let _ = b.compound(KIND_STRUCT, "bpf_map", 256, false, &[("id", u32_t, 640)]);
        let aux_ptr = b.reference(KIND_PTR, "", b.next_id + 1);
        let aux = b.compound(
            KIND_STRUCT,
            "bpf_prog_aux",
            512,
            false,
            &[("id", u32_t, 96)],
        );
        assert_eq!(aux, aux_ptr + 1);
        let _ = b.compound(KIND_STRUCT, "bpf_prog", 72, false, &[("aux", aux_ptr, 256)]);
        b.build()
    }

    #[test]
    fn mini_kernel_offsets() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        assert_eq!(
            kernel_offsets(&btf),
            Ok(KernelOffsets {
                file_f_inode: 32,
                sock_sk_socket: 512,
                socket_file: 16,
                socket_sk: 24,
                unix_sock_path_dentry: 5664 / 8 + 8,
                dentry_d_inode: 48,
                cgroup_kn: 40,
                kernfs_node_id: 64,
                kernfs_node_parent: 8,
                kernfs_node_name: 16,
                dentry_d_parent: 24,
                dentry_d_name_len: 36,
                dentry_d_name_name: 40,
                inode_i_ino: 40,
                bpf_map_id: 80,
                bpf_prog_aux: 32,
                bpf_prog_aux_id: 12,
                file_f_mode: 16,
                file_f_path_dentry: 48,
                inode_i_sb: 24,
                super_block_s_magic: 96,
                task_struct_nsproxy: 3000,
                nsproxy_cgroup_ns: 56,
                cgroup_namespace_root_cset: 32,
                css_set_dfl_cgrp: 128,
            })
        );
        assert_eq!(
            btf.typed_member("file", &["f_inode"], Expected::PtrToStruct("inode")),
            Ok(32)
        );
        assert_eq!(
            btf.typed_member(
                "unix_sock",
                &["path", "dentry"],
                Expected::PtrToStruct("dentry")
            ),
            Ok(5664 / 8 + 8)
        );
        assert_eq!(
            btf.typed_member("kernfs_node", &["id"], Expected::Int(8)),
            Ok(64)
        );
        assert_eq!(
            btf.typed_member("kernfs_node", &["name"], Expected::PtrToChar),
            Ok(16)
        );
        assert_eq!(
            btf.typed_member("cgroup", &["kn"], Expected::PtrToStruct("kernfs_node")),
            Ok(40)
        );
        // Members of anonymous unions are found through them.
        assert_eq!(btf.member("file", &["fu_b"]).map(|f| f.offset), Ok(0));
    }

    #[test]
    fn refuses_what_it_cannot_vouch_for() {
        let btf = Btf::parse(&mini_kernel()).unwrap();
        assert_eq!(
            btf.typed_member("file", &["f_bits"], Expected::Int(4)),
            Err(BtfError::BitField {
                path: "file.f_bits".into()
            })
        );
        assert_eq!(
            btf.member("file", &["f_owner"]),
            Err(BtfError::NoMember {
                strukt: "file".into(),
                member: "f_owner".into()
            })
        );
        assert_eq!(
            btf.member("mm_struct", &["pgd"]),
            Err(BtfError::NoStruct("mm_struct".into()))
        );
        assert!(matches!(
            btf.typed_member("socket", &["file"], Expected::PtrToStruct("inode")),
            Err(BtfError::WrongType { .. })
        ));
        assert!(matches!(
            btf.typed_member("dentry", &["d_inode"], Expected::Int(8)),
            Err(BtfError::WrongType { .. })
        ));
        // A pointer to a struct that is only forward-declared is not one we can vouch for.
        assert_eq!(
            btf.typed_member("holder", &["p"], Expected::PtrToStruct("kernfs_node")),
            Err(BtfError::WrongType {
                path: "holder.p".into(),
                found: "a type of BTF kind 7 *".into(),
                expected: Expected::PtrToStruct("kernfs_node"),
            })
        );
    }

    #[test]
    fn disagreeing_duplicates_are_ambiguous() {
        let mut b = Builder::new();
        let u64_ = b.int("u64", 8);
        b.compound(KIND_STRUCT, "x", 16, false, &[("a", u64_, 0)]);
        b.compound(KIND_STRUCT, "x", 16, false, &[("a", u64_, 64)]);
        let btf = Btf::parse(&b.build()).unwrap();
        assert_eq!(
            btf.member("x", &["a"]),
            Err(BtfError::Ambiguous("x".into()))
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let good = mini_kernel();
        assert!(matches!(Btf::parse(&[]), Err(BtfError::Malformed(_))));
        assert!(matches!(
            Btf::parse(&[0x9f, 0xeb, 1, 0]),
            Err(BtfError::Malformed(_))
        ));
        assert_eq!(
            Btf::parse(&[0xeb, 0x9f, 1, 0, 24, 0, 0, 0]).err(),
            Some(BtfError::BadMagic(0x9feb))
        );
        for cut in [10, 30, good.len() / 2, good.len() - 1] {
            // Either an error or a (partial) parse; never a panic.
            let _ = Btf::parse(&good[..cut]);
        }
        let mut unknown = Builder::new();
        unknown.push("weird", 31, 0, false, 0);
        assert_eq!(
            Btf::parse(&unknown.build()).err(),
            Some(BtfError::UnknownKind { id: 1, kind: 31 })
        );
    }

    /// The real thing: this machine's kernel BTF. The VM suite does the same on the Debian 6.1 and
    /// 6.12 kernels, where the programs that use the offsets are loaded and exercised.
    #[test]
    fn running_kernel_has_every_offset() {
        let btf = Btf::from_sys_fs()
            .expect("eci-agent needs a kernel with BTF (/sys/kernel/btf/vmlinux)");
        let offsets = kernel_offsets(&btf).unwrap();
        // Facts that hold on every kernel with these structs: `struct path` is {mnt, dentry},
        // `struct unix_sock` begins with its `struct sock`, and `kn->id` is not the first member.
        let path = btf.member("unix_sock", &["path"]).unwrap().offset;
        assert_eq!(offsets.unix_sock_path_dentry, path + 8);
        let sock_size = {
            let id = btf.structs_named("sock")[0];
            u64::from(btf.ty(id).unwrap().size_or_type)
        };
        assert!(path >= sock_size, "unix_sock.path inside its struct sock");
        assert!(offsets.kernfs_node_id > 0);
        assert_ne!(offsets.kernfs_node_parent, offsets.kernfs_node_name);
        // `struct qstr` is {hash, len} (little-endian), then the name pointer.
        let d_name = btf.member("dentry", &["d_name"]).unwrap().offset;
        assert_eq!(offsets.dentry_d_name_len, d_name + 4);
        assert_eq!(offsets.dentry_d_name_name, d_name + 8);
    }
}

//! An unrelated BPF map (nobody's but the bench's) for the `bpf(2)` workloads: every `bpf()`
//! command passes the guard's `bpf` program, and an fd of a map by id its `bpf_map` program, which
//! for anything not the agent's is one hash lookup. Raw `bpf(2)`, as the workload is the syscall.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use eci_tests::bpfsys::{self, Attr, Kind};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_TYPE_ARRAY: u64 = 2;

/// A one-entry array map (u32 → u64) and its id.
pub struct Map {
    fd: OwnedFd,
    id: u32,
}

impl Map {
    pub fn create() -> io::Result<Self> {
        let mut attr = Attr::default();
        // map_type, key_size; value_size, max_entries.
        attr[0] = BPF_MAP_TYPE_ARRAY | (4 << 32);
        attr[1] = 8 | (1 << 32);
        let fd = bpfsys::bpf_fd(BPF_MAP_CREATE, &mut attr)?;
        let (id, _) = bpfsys::ids(&fd)?;
        Ok(Self { fd, id })
    }

    /// `BPF_MAP_LOOKUP_ELEM` of key 0.
    pub fn lookup(&self) -> io::Result<()> {
        let key = 0u32;
        let mut value = 0u64;
        let mut attr = Attr::default();
        // map_fd; key; value.
        attr[0] = self.fd.as_raw_fd() as u64;
        attr[1] = &key as *const u32 as u64;
        attr[2] = &mut value as *mut u64 as u64;
        bpfsys::bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }

    /// `BPF_MAP_GET_FD_BY_ID` of this map, and the fd closed.
    pub fn fd_by_id(&self) -> io::Result<()> {
        bpfsys::fd_by_id(Kind::Map, self.id).map(drop)
    }
}

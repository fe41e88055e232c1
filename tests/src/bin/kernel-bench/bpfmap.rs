//! An unrelated BPF map (nobody's but the bench's) for the `bpf(2)` workloads: every `bpf()`
//! command passes the guard's `bpf` program, and an fd of a map by id its `bpf_map` program, which
//! for anything not the agent's is one hash lookup. Raw `bpf(2)`, as the workload is the syscall.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_MAP_TYPE_ARRAY: u64 = 2;

/// `union bpf_attr`, zeroed: the kernel requires every byte it does not know to be zero.
type Attr = [u64; 16];

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
    // SAFETY: `attr` is a valid, writable buffer of the size passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr.as_mut_ptr(),
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn owned(rc: i64) -> OwnedFd {
    // SAFETY: the kernel returned a new fd that nothing else owns.
    unsafe { OwnedFd::from_raw_fd(rc as i32) }
}

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
        let fd = owned(bpf(BPF_MAP_CREATE, &mut attr)?);
        let mut info = [0u32; 32];
        let mut attr = Attr::default();
        // bpf_fd, info_len; info.
        attr[0] = fd.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
        attr[1] = info.as_mut_ptr() as u64;
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
        // struct bpf_map_info: type, id, …
        Ok(Self { fd, id: info[1] })
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
        bpf(BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
    }

    /// `BPF_MAP_GET_FD_BY_ID` of this map, and the fd closed.
    pub fn fd_by_id(&self) -> io::Result<()> {
        let mut attr = Attr::default();
        attr[0] = u64::from(self.id);
        bpf(BPF_MAP_GET_FD_BY_ID, &mut attr).map(|rc| drop(owned(rc)))
    }
}

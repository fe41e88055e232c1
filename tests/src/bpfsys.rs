//! Raw `bpf(2)` calls: the kernel suite's attacks on the agent's objects, as an attacker with
//! `CAP_SYS_ADMIN`/`CAP_BPF` would make them (aya would hide which command the kernel refused),
//! and the kernel bench's workloads and the commands aya does not offer on programs it did not
//! load. The one place these crates make the syscall. Layouts of `union bpf_attr` are uapi.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_DETACH: libc::c_long = 34;

/// `union bpf_attr`, zeroed: the kernel requires every byte it does not know to be zero.
pub type Attr = [u64; 16];

/// `bpf(cmd, attr)`: the command's return value.
pub fn bpf(cmd: libc::c_long, attr: &mut Attr) -> io::Result<i64> {
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

/// `bpf(cmd, attr)` for a command that returns a new fd.
pub fn bpf_fd(cmd: libc::c_long, attr: &mut Attr) -> io::Result<OwnedFd> {
    let rc = bpf(cmd, attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

/// `BPF_OBJ_GET`: an fd of what is pinned at `path`.
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    let mut attr = Attr::default();
    attr[0] = c.as_ptr() as u64;
    bpf_fd(BPF_OBJ_GET, &mut attr)
}

/// What an object's id is called by `*_GET_FD_BY_ID`.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    Map,
    Prog,
    Link,
}

/// `BPF_{MAP,PROG,LINK}_GET_FD_BY_ID`.
pub fn fd_by_id(kind: Kind, id: u32) -> io::Result<OwnedFd> {
    let cmd = match kind {
        Kind::Map => BPF_MAP_GET_FD_BY_ID,
        Kind::Prog => BPF_PROG_GET_FD_BY_ID,
        Kind::Link => BPF_LINK_GET_FD_BY_ID,
    };
    let mut attr = Attr::default();
    attr[0] = u64::from(id);
    bpf_fd(cmd, &mut attr)
}

/// `BPF_OBJ_GET_INFO_BY_FD`: the object's id (`info.id`, the second u32 of the map, program and
/// link infos alike), and for a link its program's id (`prog_id`, the third).
pub fn ids(obj: &OwnedFd) -> io::Result<(u32, u32)> {
    let mut info = [0u32; 64];
    let mut attr = Attr::default();
    attr[0] = obj.as_raw_fd() as u64 | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok((info[1], info[2]))
}

/// `BPF_MAP_UPDATE_ELEM` of a u64 key and a u64-sized value.
pub fn update(map: &OwnedFd, key: u64, value: u64) -> io::Result<()> {
    let mut attr = Attr::default();
    attr[0] = map.as_raw_fd() as u64;
    attr[1] = &key as *const u64 as u64;
    attr[2] = &value as *const u64 as u64;
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_LINK_DETACH`.
pub fn detach(link: &OwnedFd) -> io::Result<()> {
    let mut attr = Attr::default();
    attr[0] = link.as_raw_fd() as u64;
    bpf(BPF_LINK_DETACH, &mut attr).map(drop)
}

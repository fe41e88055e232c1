//! The only place the programs read kernel structs, through the member offsets the loader found in
//! the running kernel's BTF ([`KernelOffsets`], a read-only global).
//!
//! Why this is sound without CO-RE: the global lives in `.rodata`, which aya creates read-only for
//! programs and freezes before loading them, so the verifier reads each offset as a known constant.
//! Every walk below is a plain load through a BTF-typed pointer (a hook argument, or a pointer the
//! previous load produced) at that constant offset, and the verifier types it from the kernel's own
//! BTF: the load must land on a member of that struct, and what it yields is typed by that member.
//! An offset that is wrong for this kernel therefore makes the program fail to load (e.g. the
//! inode-storage helper refuses anything but a `struct inode *`), instead of reading the wrong
//! field. Such loads are also fault-safe (`BPF_PROBE_MEM`): a NULL on the way reads as 0.
//!
//! The walks return `None` for a NULL on the way, and the hooks return before calling a helper:
//! Linux 6.1's inode-storage helper refuses a NULL constant where it expects an inode pointer, and
//! the compiler would otherwise merge the NULL paths into one call with NULL.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{cgroup, file, inode},
    helpers::generated::{bpf_get_current_task_btf, bpf_skc_to_unix_sock},
};
use eci_common::KernelOffsets;

/// Overridden by the loader (`EbpfLoader::override_global`); never used with these values.
#[unsafe(no_mangle)]
static ECI_OFFSETS: KernelOffsets = KernelOffsets::UNSET;

macro_rules! offset {
    ($member:ident) => {
        load_offset(&ECI_OFFSETS.$member)
    };
}

/// Volatile, so that the compiler cannot fold in the placeholder value the object carries.
#[inline(always)]
fn load_offset(offset: &u64) -> u64 {
    // SAFETY: a read through a valid reference.
    unsafe { core::ptr::read_volatile(offset) }
}

/// The member of type `T` at `offset` in the struct at `base`.
///
/// # Safety
/// `base` must be a BTF-typed kernel pointer and `offset` one of [`ECI_OFFSETS`]'s members for
/// that struct; the verifier checks both.
#[inline(always)]
unsafe fn member<T: Copy>(base: *const c_void, offset: u64) -> T {
    // SAFETY: see above; the verifier rewrites this into a fault-safe kernel load.
    unsafe { core::ptr::read(base.cast::<u8>().wrapping_add(offset as usize).cast::<T>()) }
}

/// `file->f_inode`.
#[inline(always)]
pub fn file_inode(file: *const file) -> Option<*mut inode> {
    if file.is_null() {
        return None;
    }
    // SAFETY: `file` is a hook argument typed `struct file *`.
    let inode: *mut inode = unsafe { member(file.cast(), offset!(file_f_inode)) };
    (!inode.is_null()).then_some(inode)
}

/// The inode of a socket's file: `sk->sk_socket->file->f_inode` (the sockfs inode that
/// `SCM_RIGHTS` and `pidfd_getfd` hand over).
#[inline(always)]
pub fn sock_file_inode(sk: *const c_void) -> Option<*mut inode> {
    if sk.is_null() {
        return None;
    }
    // SAFETY: `sk` is a hook argument typed `struct sock *`; each pointer below comes from the
    // previous load, so it is typed too.
    let socket: *const c_void = unsafe { member(sk, offset!(sock_sk_socket)) };
    if socket.is_null() {
        return None;
    }
    // SAFETY: as above.
    let file: *const file = unsafe { member(socket, offset!(socket_file)) };
    file_inode(file)
}

/// `socket->sk`: the `struct sock` of a `struct socket`.
#[inline(always)]
pub fn socket_sk(socket: *const c_void) -> Option<*mut c_void> {
    if socket.is_null() {
        return None;
    }
    // SAFETY: `socket` is a hook argument typed `struct socket *`.
    let sk: *mut c_void = unsafe { member(socket, offset!(socket_sk)) };
    (!sk.is_null()).then_some(sk)
}

/// The inode of the file a unix socket is bound to (`unix_sk(sk)->path.dentry->d_inode`); null for
/// an unbound or abstract socket.
#[inline(always)]
pub fn unix_bound_inode(sk: *mut c_void) -> Option<*mut inode> {
    if sk.is_null() {
        return None;
    }
    // `unix_sock` extends `struct sock`; the verifier only lets a `struct sock *` be read as the
    // larger struct through this helper, which also checks that it is a unix socket.
    // SAFETY: `sk` is a hook argument typed `struct sock *`.
    let unix = unsafe { bpf_skc_to_unix_sock(sk) };
    if unix.is_null() {
        return None;
    }
    // SAFETY: `unix` is typed `struct unix_sock *` by the helper.
    let dentry: *const c_void = unsafe { member(unix.cast(), offset!(unix_sock_path_dentry)) };
    if dentry.is_null() {
        return None;
    }
    // SAFETY: `dentry` is typed `struct dentry *` by the previous load.
    let inode: *mut inode = unsafe { member(dentry, offset!(dentry_d_inode)) };
    (!inode.is_null()).then_some(inode)
}

/// A new cgroup as `cgroup_mkdir` sees it.
pub struct NewCgroup {
    pub id: u64,
    pub parent_id: u64,
    /// `kn->name`, a kernel string (NUL-terminated).
    pub name: *const u8,
}

/// The id, parent id and name of `cgrp` (`cgrp->kn->{id, parent->id, name}`).
#[inline(always)]
pub fn cgroup_identity(cgrp: *const cgroup) -> Option<NewCgroup> {
    if cgrp.is_null() {
        return None;
    }
    // SAFETY: `cgrp` is the tracepoint's argument typed `struct cgroup *`; the pointers below come
    // from the previous loads.
    let kn: *const c_void = unsafe { member(cgrp.cast(), offset!(cgroup_kn)) };
    if kn.is_null() {
        return None;
    }
    // SAFETY: as above.
    let id: u64 = unsafe { member(kn, offset!(kernfs_node_id)) };
    // SAFETY: as above.
    let parent: *const c_void = unsafe { member(kn, offset!(kernfs_node_parent)) };
    let parent_id = if parent.is_null() {
        0
    } else {
        // SAFETY: as above.
        unsafe { member(parent, offset!(kernfs_node_id)) }
    };
    // SAFETY: as above.
    let name: *const u8 = unsafe { member(kn, offset!(kernfs_node_name)) };
    Some(NewCgroup {
        id,
        parent_id,
        name,
    })
}

/// `dentry->d_parent->d_inode`: the directory a dentry is named in. `None` for a root (its own
/// parent, not yet instantiated when `d_instantiate` runs) or a NULL on the way.
#[inline(always)]
pub fn dentry_dir_inode(dentry: *const c_void) -> Option<*mut inode> {
    if dentry.is_null() {
        return None;
    }
    // SAFETY: `dentry` is a hook argument typed `struct dentry *`; the pointer below comes from
    // the previous load.
    let parent: *const c_void = unsafe { member(dentry, offset!(dentry_d_parent)) };
    if parent.is_null() || parent == dentry {
        return None;
    }
    // SAFETY: as above.
    let dir: *mut inode = unsafe { member(parent, offset!(dentry_d_inode)) };
    (!dir.is_null()).then_some(dir)
}

/// `dentry->d_inode`: the inode a dentry names (NULL for a negative dentry).
#[inline(always)]
pub fn dentry_inode(dentry: *const c_void) -> Option<*mut inode> {
    if dentry.is_null() {
        return None;
    }
    // SAFETY: `dentry` is a hook argument typed `struct dentry *`.
    let inode: *mut inode = unsafe { member(dentry, offset!(dentry_d_inode)) };
    (!inode.is_null()).then_some(inode)
}

/// `dentry->d_name`: its length and a pointer to its bytes (a kernel string, NUL-terminated).
#[inline(always)]
pub fn dentry_name(dentry: *const c_void) -> (u32, *const u8) {
    // SAFETY: `dentry` is a hook argument typed `struct dentry *`.
    let len: u32 = unsafe { member(dentry, offset!(dentry_d_name_len)) };
    // SAFETY: as above.
    let name: *const u8 = unsafe { member(dentry, offset!(dentry_d_name_name)) };
    (len, name)
}

/// `inode->i_ino`.
#[inline(always)]
pub fn inode_number(inode: *const inode) -> u64 {
    // SAFETY: `inode` is typed `struct inode *` (a hook argument or loaded through BTF-typed
    // pointers).
    unsafe { member(inode.cast(), offset!(inode_i_ino)) }
}

/// `map->id`: the id the kernel numbers maps by (`BPF_MAP_GET_FD_BY_ID`).
#[inline(always)]
pub fn bpf_map_id(map: *const c_void) -> Option<u32> {
    if map.is_null() {
        return None;
    }
    // SAFETY: `map` is a hook argument typed `struct bpf_map *`.
    Some(unsafe { member(map, offset!(bpf_map_id)) })
}

/// `prog->aux->id`: the id the kernel numbers programs by (`BPF_PROG_GET_FD_BY_ID`).
#[inline(always)]
pub fn bpf_prog_id(prog: *const c_void) -> Option<u32> {
    if prog.is_null() {
        return None;
    }
    // SAFETY: `prog` is a hook argument typed `struct bpf_prog *`; `aux` comes from that load.
    let aux: *const c_void = unsafe { member(prog, offset!(bpf_prog_aux)) };
    if aux.is_null() {
        return None;
    }
    // SAFETY: as above.
    Some(unsafe { member(aux, offset!(bpf_prog_aux_id)) })
}

/// Whether `file` is open for writing (`file->f_mode & FMODE_WRITE`).
#[inline(always)]
pub fn file_writable(file: *const file) -> bool {
    if file.is_null() {
        return false;
    }
    // SAFETY: `file` is a hook argument typed `struct file *`.
    let mode: u32 = unsafe { member(file.cast(), offset!(file_f_mode)) };
    mode & eci_common::FMODE_WRITE != 0
}

/// `file->f_path.dentry`: the name the file was opened by.
#[inline(always)]
pub fn file_dentry(file: *const file) -> Option<*const c_void> {
    if file.is_null() {
        return None;
    }
    // SAFETY: `file` is a hook argument typed `struct file *`.
    let dentry: *const c_void = unsafe { member(file.cast(), offset!(file_f_path_dentry)) };
    (!dentry.is_null()).then_some(dentry)
}

/// `inode->i_sb->s_magic`: which file system the inode is on (0 for a NULL on the way).
#[inline(always)]
pub fn inode_fs_magic(inode: *const inode) -> u64 {
    // SAFETY: `inode` is typed `struct inode *` (loaded through BTF-typed pointers); the pointer
    // below comes from that load.
    let sb: *const c_void = unsafe { member(inode.cast(), offset!(inode_i_sb)) };
    if sb.is_null() {
        return 0;
    }
    // SAFETY: as above.
    unsafe { member(sb, offset!(super_block_s_magic)) }
}

/// `dentry->d_parent`; `None` for a root (its own parent) or a NULL.
#[inline(always)]
pub fn dentry_parent(dentry: *const c_void) -> Option<*const c_void> {
    if dentry.is_null() {
        return None;
    }
    // SAFETY: `dentry` is typed `struct dentry *` (a hook argument or loaded through BTF-typed
    // pointers).
    let parent: *const c_void = unsafe { member(dentry, offset!(dentry_d_parent)) };
    (!parent.is_null() && parent != dentry).then_some(parent)
}

/// The id of the root cgroup of the current task's cgroup namespace
/// (`current->nsproxy->cgroup_ns->root_cset->dfl_cgrp->kn->id`): the cgroup2 root's id for a task
/// in the host's cgroup namespace. `None` for a NULL on the way (an exiting task has no nsproxy).
#[inline(always)]
pub fn cgroupns_root_id() -> Option<u64> {
    // SAFETY: a helper without arguments; it returns the current task, BTF-typed.
    let task: *const c_void = unsafe { bpf_get_current_task_btf() }.cast();
    if task.is_null() {
        return None;
    }
    // SAFETY: `task` is typed `struct task_struct *`; each pointer below comes from the previous
    // load, so it is typed too.
    let nsproxy: *const c_void = unsafe { member(task, offset!(task_struct_nsproxy)) };
    if nsproxy.is_null() {
        return None;
    }
    // SAFETY: as above.
    let ns: *const c_void = unsafe { member(nsproxy, offset!(nsproxy_cgroup_ns)) };
    if ns.is_null() {
        return None;
    }
    // SAFETY: as above.
    let cset: *const c_void = unsafe { member(ns, offset!(cgroup_namespace_root_cset)) };
    if cset.is_null() {
        return None;
    }
    // SAFETY: as above.
    let cgrp: *const cgroup = unsafe { member(cset, offset!(css_set_dfl_cgrp)) };
    cgroup_identity(cgrp).map(|c| c.id)
}

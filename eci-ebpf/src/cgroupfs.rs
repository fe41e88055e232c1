//! Who may change which cgroup a process is in: the rule `file_open` and `task_alloc` apply.
//!
//! A process's standing (which sockets it reaches) is its cgroup's verdict, or its nearest
//! ancestor's. Whoever can put a process into a cgroup therefore hands it that cgroup's standing,
//! and whoever can rewrite a cgroup's files (`cgroup.kill`, `cgroup.freeze`, `memory.max`, …) can
//! take the processes in it down, the agent included. So:
//!
//! - A cgroup is *protected* when its own standing, by the same nearest-verdict rule the socket
//!   hooks use, reaches anything (the agent's cgroup, a trusted cgroup, an allowed container's
//!   cgroup, and every cgroup below them without a verdict of its own — so a container that makes
//!   a cgroup under a trusted one and moves into it gains nothing), and the cgroup2 root. A
//!   denied or unknown cgroup is not protected: moving there gains nothing, and a container may
//!   still run its own cgroups (systemd or Docker inside it) below its own denied cgroup.
//! - Only a *writer* may open a protected cgroup's files for writing, or choose a child's cgroup
//!   at `clone3(CLONE_INTO_CGROUP)`: a process whose standing carries [`CLASS_CGROUPS`] (the
//!   agent's own cgroup and the trusted host cgroups; containers never get it), a process in the
//!   cgroup2 root itself, and PID 1.
//!
//! Why those writers, and why container start and `docker exec` still work: the engine's runtime
//! moves a container's first process, and every `docker exec`, into the container's cgroup (runc
//! writes the pid into its `cgroup.procs`; an allowed container's cgroup is protected, since the
//! agent allows it before `start`). Under a plain init (the eci VM) dockerd, containerd, the shims
//! and runc all run in the cgroup2 root, which is protected, so a container can never join it to
//! become a writer; the root's members are host processes by construction. Under systemd, PID 1
//! (in `/init.scope`) creates each `docker-<id>.scope` with the container's first pid in it, and
//! the engine runs in `system.slice` (docker.service, containerd.service, their shims and runc):
//! that is a trusted cgroup there, as it must be for the host's own docker CLI anyway. PID 1 is
//! the global pid 1 (`bpf_get_current_pid_tgid` is the initial namespace's), never a container's
//! init.
//!
//! What is judged above is the destination: `file_open` does not see which pid is written, so a
//! process that may open a cgroup's `cgroup.procs` may move any process it can name into it.
//! Moving a process *out* of a protected cgroup into an unprotected one (the agent's pid, seen
//! with `--pid=host`, written into the container's own `cgroup.procs`) is therefore judged by
//! who writes, not where ([`may_move_out`]): the kernel's own rule for it (write access to the
//! common ancestor's `cgroup.procs`, an `inode_permission` check no cheap hook sees) holds a
//! container in a private cgroup namespace (Docker's default on cgroup v2) to its own subtree,
//! where nothing protected lives; a container given the host's cgroup namespace
//! (`--cgroupns=host`) has the root as that ancestor. So a caller that may not change cgroups,
//! in the host's cgroup namespace, whose cgroup carries a verdict (every container's does, from
//! birth) may open no `cgroup.procs` or `cgroup.threads` for writing at all. Host processes in
//! cgroups without a verdict (a user's `systemd --user` managing its delegated subtree) keep
//! the kernel's rules.

use core::ffi::c_void;

use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes,
    generated::{bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id},
};
use eci_common::{CLASS_ALL, CLASS_CGROUPS, MAX_CGROUP_DEPTH};

use crate::{kernel, maps::VERDICTS, verdict};

/// The id of the cgroup whose directory is `dir` (a cgroup2 dentry) when it is protected.
///
/// Keyed by the directory's inode number, which on cgroup2 (kernfs, 64-bit `ino_t`) is the kernfs
/// node id, i.e. the cgroup id, recomputed whenever the inode is evicted and read back: nothing is
/// stored on kernfs inodes, so nothing can vanish with them. The walk goes up by `d_parent`, which
/// every dentry pins, to the root of the mount's tree: for the host's cgroup2 (mounted, or bind
/// mounted into a container) that is the cgroup2 root; for a mount inside a private cgroup
/// namespace it is the namespace's root, a container's own cgroup, which always carries a verdict.
#[inline(always)]
pub fn protected(dir: *const c_void) -> Option<u64> {
    // SAFETY: a helper with a scalar argument; level 0 is the cgroup2 root, whatever the caller's
    // namespaces.
    let root = unsafe { bpf_get_current_ancestor_cgroup_id(0) };
    let cgroup = kernel::inode_number(kernel::dentry_inode(dir)?);
    if cgroup == root {
        return Some(cgroup);
    }
    let mut dentry = dir;
    for distance in 0..MAX_CGROUP_DEPTH {
        let id = kernel::inode_number(kernel::dentry_inode(dentry)?);
        // SAFETY: the reference is only read before the next map operation.
        if let Some(verdict) = unsafe { VERDICTS.get(id) }
            && let Some(reaches) = verdict.decide(CLASS_ALL, distance)
        {
            return reaches.then_some(cgroup);
        }
        dentry = kernel::dentry_parent(dentry)?;
    }
    None
}

/// Whether the current task may change cgroups (see the module's comment).
#[inline(always)]
pub fn writer() -> bool {
    if bpf_get_current_pid_tgid() >> 32 == 1 {
        return true;
    }
    // SAFETY: helpers with scalar arguments.
    let (own, root) = unsafe {
        (
            bpf_get_current_cgroup_id(),
            bpf_get_current_ancestor_cgroup_id(0),
        )
    };
    own == root || verdict::allowed(CLASS_CGROUPS)
}

/// Whether the current task, which may not change cgroups, may still open `file` (a cgroup2
/// file of an unprotected cgroup) for writing: anything but `cgroup.procs` and `cgroup.threads`,
/// and those too unless it is a container in the host's cgroup namespace (see the module's
/// comment).
#[inline(always)]
pub fn may_move_out(file: *const c_void) -> bool {
    if !moves_processes(file) {
        return true;
    }
    // SAFETY: a helper with a scalar argument; level 0 is the cgroup2 root.
    let root = unsafe { bpf_get_current_ancestor_cgroup_id(0) };
    if kernel::cgroupns_root_id() != Some(root) {
        // A private cgroup namespace: the kernel keeps it in its own subtree.
        return true;
    }
    verdict::standing(CLASS_ALL).is_none()
}

/// Whether `dentry` is named `cgroup.procs` or `cgroup.threads`: the files that move processes.
#[inline(always)]
fn moves_processes(dentry: *const c_void) -> bool {
    const PROCS: &[u8] = b"cgroup.procs";
    const THREADS: &[u8] = b"cgroup.threads";
    let (len, name) = kernel::dentry_name(dentry);
    if len as usize != PROCS.len() && len as usize != THREADS.len() {
        return false;
    }
    // The longer name, its NUL, and one more byte so that a longer name reads as longer.
    let mut buf = [0u8; 16];
    // SAFETY: the helper reads at most `buf.len()` bytes of kernel memory, fault-safe.
    match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) } {
        Ok(bytes) => bytes == PROCS || bytes == THREADS,
        Err(_) => false,
    }
}

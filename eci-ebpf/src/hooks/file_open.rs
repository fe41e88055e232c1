//! `security_file_open(struct file *file)`: called by `do_dentry_open()` for every open that is
//! not `O_PATH`, once the file's mode is known and before the file system's own `open`.
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/open.c#L882>
//!
//! Why: moving a process into a cgroup (`cgroup.procs`, `cgroup.threads`), enabling controllers
//! (`cgroup.subtree_control`), killing or freezing a cgroup's processes (`cgroup.kill`,
//! `cgroup.freeze`) are all writes to a cgroup's files, and the kernel checks who may write them
//! when they are opened (cgroup v2 judges the opener's credentials, not the writer's). A process
//! moved into a cgroup takes its standing, so a container that could open an allowed container's,
//! a trusted or the agent's `cgroup.procs` could give itself their access; opening any of their
//! files for writing is refused here unless the caller may change cgroups (`cgroupfs.rs` says who
//! is protected and who may write). An fd opened while the cgroup was not protected (a container
//! judged denied, then allowed) keeps working: the files are judged at open, as the kernel does.
//!
//! Fast path (every open): a read-only open costs one member load; a write open outside cgroup2
//! three more (the file's inode, its super block, the magic) — no map lookup, no helper.
//!
//! A write open of an unprotected cgroup's `cgroup.procs` or `cgroup.threads` is refused too, to
//! containers in the host's cgroup namespace: that is how they would move a protected process
//! (the agent) *out* of its cgroup (`cgroupfs.rs`, [`cgroupfs::may_move_out`]).

use aya_ebpf::{bindings::file, macros::lsm, programs::LsmContext};
use eci_common::{CGROUP2_SUPER_MAGIC, CLASS_CGROUPS, DENY_ERRNO, Hook, Protected};

use crate::{cgroupfs, kernel, verdict};

#[lsm(hook = "file_open")]
pub fn file_open(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_open, struct file *file): arg 1 is the verdict of the programs before
    // this one; an earlier denial stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let file: *const file = ctx.arg(0);
    if !kernel::file_writable(file) {
        return 0;
    }
    let Some(inode) = kernel::file_inode(file) else {
        return 0;
    };
    if kernel::inode_fs_magic(inode) != CGROUP2_SUPER_MAGIC {
        return 0;
    }
    // A directory is never opened for writing, so this is a file in a cgroup's directory: that
    // directory is the cgroup it belongs to.
    let Some(dentry) = kernel::file_dentry(file) else {
        return 0;
    };
    let Some(dir) = kernel::dentry_parent(dentry) else {
        return 0;
    };
    let cgroup = match cgroupfs::protected(dir) {
        Some(cgroup) => cgroup,
        // Unprotected: moving a process there gains nothing, but moving one *out* of a
        // protected cgroup (the agent) into it is taken away from containers that could.
        None if cgroupfs::may_move_out(dentry) => return 0,
        None => kernel::dentry_inode(dir).map_or(0, |dir| kernel::inode_number(dir)),
    };
    if cgroupfs::writer() {
        return 0;
    }
    let tag = Protected {
        class: CLASS_CGROUPS,
        reserved: 0,
        dev: 0,
        ino: cgroup,
    };
    verdict::report(Hook::FileOpen, &tag, 0);
    -DENY_ERRNO
}

//! `security_task_alloc(struct task_struct *task, unsigned long clone_flags)`: called by
//! `copy_process()` for every new task (fork, clone, clone3, a new thread), before it exists.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/fork.c#L2252>
//!
//! Why: `clone3(2)` with `CLONE_INTO_CGROUP` starts the child in the cgroup a directory fd names,
//! a migration that never opens a `cgroup.procs` file, so `file_open` never sees it (the kernel
//! checks write access to that cgroup's `cgroup.procs` by inode permission, not by an open). No
//! LSM hook sees the destination: this one runs before `cgroup_can_fork()` resolves it, and the
//! flags are all it gets. So a caller that may not change cgroups (`cgroupfs.rs`) may not use the
//! flag at all; it can still move a process by writing `cgroup.procs`, where `file_open` judges
//! the destination itself. Runtimes that use the flag fall back to that (runc) or run as writers
//! (systemd, the engine's runc on the host).
//!
//! Fast path (every fork and thread): one test of the flags argument.

use aya_ebpf::{macros::lsm, programs::LsmContext};
use eci_common::{CLASS_CGROUPS, CLONE_INTO_CGROUP, DENY_ERRNO, Hook, Protected};

use crate::{cgroupfs, verdict};

#[lsm(hook = "task_alloc")]
pub fn task_alloc(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, task_alloc, struct task_struct *task, unsigned long clone_flags): arg 2 is
    // the verdict of the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let flags: u64 = ctx.arg(1);
    if flags & CLONE_INTO_CGROUP == 0 || cgroupfs::writer() {
        return 0;
    }
    let tag = Protected {
        class: CLASS_CGROUPS,
        reserved: 0,
        dev: 0,
        ino: 0,
    };
    verdict::report(Hook::TaskAlloc, &tag, 0);
    -DENY_ERRNO
}

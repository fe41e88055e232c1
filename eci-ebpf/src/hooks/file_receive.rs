//! `security_file_receive(struct file *file)`: called for every file descriptor a process receives
//! from another one — `SCM_RIGHTS` (`scm_detach_fds()` → `receive_fd_user()`), `pidfd_getfd(2)` and
//! seccomp's add-fd (`receive_fd()`) — before the fd is installed.
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/file.c#L1134>
//!
//! Why: a process that may reach a protected socket could otherwise connect and hand the
//! connected socket (or an `O_PATH` fd of the socket file) to a process that may not; no path is
//! walked then, so `inode_permission` never runs. The receiver is judged like a connecting process,
//! by the tag on the received file's inode: the protected socket file's own tag, or the tag
//! `unix_stream_connect` copied onto a client socket connected to it. A refused fd is simply not
//! installed: `recvmsg(2)` then returns with `MSG_CTRUNC`, `pidfd_getfd(2)` with `EPERM`.
//!
//! Fast path for an untagged file (almost every fd passed): one member load and one inode-storage
//! lookup, no logging.

use aya_ebpf::{bindings::file, macros::lsm, programs::LsmContext};
use eci_common::{DENY_ERRNO, Hook};

use crate::{kernel, maps::PROTECTED, verdict};

#[lsm(hook = "file_receive")]
pub fn file_receive(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, file_receive, struct file *file): arg 1 is the verdict of the programs
    // before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let file: *const file = ctx.arg(0);
    let Some(inode) = kernel::file_inode(file) else {
        return 0;
    };
    // SAFETY: `inode` was loaded through BTF-typed pointers, so the verifier knows it is a
    // `struct inode *`, not NULL.
    let tag = unsafe { PROTECTED.get_ptr_mut(inode) };
    if tag.is_null() {
        return 0;
    }
    // SAFETY: non-null storage returned by the helper, valid for this program run.
    let tag = unsafe { *tag };
    if verdict::allowed(tag.class) {
        return 0;
    }
    // No access mask: receiving is not an inode permission check.
    verdict::report(Hook::FileReceive, &tag, 0);
    -DENY_ERRNO
}

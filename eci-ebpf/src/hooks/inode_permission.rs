//! `security_inode_permission(struct inode *inode, int mask)`, called from `inode_permission()`
//! after the DAC checks pass, for every path component and for the final inode of `open(2)`,
//! `access(2)` and unix `connect(2)` (`unix_find_bsd()` → `path_permission(MAY_WRITE)`).
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/namei.c#L518>
//!
//! It is the hottest hook there is, so the fast path for an untagged inode is one inode-storage
//! lookup (a pointer read on the inode's LSM blob) and no logging.

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};
use eci_common::{DENY_ERRNO, Hook};

use crate::{maps::PROTECTED, verdict};

#[lsm(hook = "inode_permission")]
pub fn inode_permission(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, inode_permission, struct inode *inode, int mask): arg 2 is the verdict of
    // the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let inode: *mut inode = ctx.arg(0);
    // SAFETY: `inode` is the hook's BTF-typed argument; the helper checks it.
    let tag = unsafe { PROTECTED.get_ptr_mut(inode) };
    if tag.is_null() {
        return 0;
    }
    // SAFETY: non-null storage returned by the helper, valid for this program run.
    let tag = unsafe { *tag };
    if verdict::allowed(tag.class) {
        return 0;
    }
    let mask: i32 = ctx.arg(1);
    verdict::report(Hook::InodePermission, &tag, mask as u32);
    -DENY_ERRNO
}

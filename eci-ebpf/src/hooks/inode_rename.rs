//! `security_inode_rename(struct inode *old_dir, struct dentry *old_dentry, struct inode *new_dir,
//! struct dentry *new_dentry)`: called by `vfs_rename()` before the file system renames (twice,
//! once each way, for `RENAME_EXCHANGE`).
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/namei.c#L4818>
//!
//! Why: a rename keeps the inode and gives it a new name without `d_instantiate`, so a socket
//! bound under a temporary name and renamed into a protected one would arrive untagged. Here the
//! inode being moved gets the tag of the protected name it is about to take (`names.rs`), before
//! the rename makes it reachable there. If the rename then fails, the inode keeps the tag under
//! its old name: protected too much, never too little. If the tag cannot be stored, the rename is
//! refused (fail closed).
//!
//! It also guards the agent's pins (`guard.rs`): a rename out of, into or of a pin directory
//! (which would drop a link pin by replacing it, or move a pin out of the guarded directory to
//! unlink it there) is refused outside the agent's cgroup.
//!
//! Fast path (a rename that involves no pin directory and no protected name): one member load and
//! four inode-storage lookups (renames are rare next to the lookups the other hooks guard).

use core::ffi::c_void;

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};
use eci_common::Hook;

use crate::{
    guard, kernel,
    names::{self, Named},
    verdict,
};

const ENOMEM: i32 = 12;

#[lsm(hook = "inode_rename")]
pub fn inode_rename(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, inode_rename, struct inode *old_dir, struct dentry *old_dentry,
    //          struct inode *new_dir, struct dentry *new_dentry): arg 4 is the verdict of the
    // programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(4);
    if previous != 0 {
        return previous;
    }
    let new_dir: *mut inode = ctx.arg(2);
    if new_dir.is_null() {
        return 0;
    }
    let old_dentry: *const c_void = ctx.arg(1);
    let Some(moving) = kernel::dentry_inode(old_dentry) else {
        return 0;
    };
    let old_dir: *mut inode = ctx.arg(0);
    // Written out, not a loop over the three: the verifier must see each as a typed pointer.
    if !old_dir.is_null() && guard::is_pin_dir(old_dir) {
        return guard::pin_entry(kernel::inode_number(old_dir));
    }
    if guard::is_pin_dir(new_dir) {
        return guard::pin_entry(kernel::inode_number(new_dir));
    }
    if guard::is_pin_dir(moving) {
        return guard::pin_entry(kernel::inode_number(moving));
    }
    let new_dentry: *const c_void = ctx.arg(3);
    match names::tag_if_protected(new_dir, new_dentry, moving) {
        Named::Failed(tag) => {
            verdict::report(Hook::InodeRename, &tag, 0);
            -ENOMEM
        }
        Named::Unprotected | Named::Tagged => 0,
    }
}

//! `security_inode_rmdir(struct inode *dir, struct dentry *dentry)`: called by `vfs_rmdir()`
//! before the file system removes the directory (before bpffs checks that it is empty).
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/namei.c#L4113>
//!
//! Why: the pin directories themselves (the root, `maps`, `links`) carry the guard's tag
//! (`guard.rs`); removing one, once emptied, would take the tag with it. Only the agent's cgroup
//! removes a pin directory, or a directory inside one.
//!
//! Fast path (any other directory): up to two inode-storage lookups (the parent, then the
//! directory itself).

use core::ffi::c_void;

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};

use crate::{guard, kernel};

#[lsm(hook = "inode_rmdir")]
pub fn inode_rmdir(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, inode_rmdir, struct inode *dir, struct dentry *dentry): arg 2 is the
    // verdict of the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let dir: *mut inode = ctx.arg(0);
    if !dir.is_null() && guard::is_pin_dir(dir) {
        return guard::pin_entry(kernel::inode_number(dir));
    }
    let dentry: *const c_void = ctx.arg(1);
    match kernel::dentry_inode(dentry) {
        Some(target) if guard::is_pin_dir(target) => guard::pin_entry(kernel::inode_number(target)),
        _ => 0,
    }
}

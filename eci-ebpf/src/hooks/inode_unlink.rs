//! `security_inode_unlink(struct inode *dir, struct dentry *dentry)`: called by `vfs_unlink()`
//! before the file system removes the name (bpffs: `simple_unlink()`, which drops the pin's
//! reference to the object).
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/namei.c#L4229>
//!
//! Why: a pinned link whose pin is its last reference is detached when the pin goes, so `rm` of
//! a link pin switches a program off for good; a removed map pin makes a restarted agent start
//! from empty maps. Entries of the agent's pin directories are removed only from its cgroup
//! (`guard.rs`). bpffs inodes of pinned objects are not evicted while pinned, so the tag on each
//! pin directory holds as long as the pins do.
//!
//! Fast path (any other directory): one inode-storage lookup.

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};

use crate::{guard, kernel};

#[lsm(hook = "inode_unlink")]
pub fn inode_unlink(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, inode_unlink, struct inode *dir, struct dentry *dentry): arg 2 is the
    // verdict of the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let dir: *mut inode = ctx.arg(0);
    if dir.is_null() || !guard::is_pin_dir(dir) {
        return 0;
    }
    guard::pin_entry(kernel::inode_number(dir))
}

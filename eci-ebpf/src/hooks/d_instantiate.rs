//! `security_d_instantiate(struct dentry *dentry, struct inode *inode)`: called whenever an inode
//! gets a name — `d_instantiate()` and `d_instantiate_new()` when a file system creates an inode
//! (`mknod`, hence unix `bind(2)`; `create`, `mkdir`, `symlink`) or links one (`link(2)`), and
//! `d_add()`/`d_splice_alias()` when a lookup finds an inode not in the dcache — just before the
//! dentry points at the inode.
//! <https://elixir.bootlin.com/linux/v6.1/source/fs/dcache.c#L2004>
//!
//! Why: the engine re-creates its socket when it restarts (unlink, then `bind(2)`), a new inode
//! that carries no tag. `unix_bind_bsd()` creates the socket file (`vfs_mknod()`, which reaches
//! this hook before the name resolves to the inode) and only then inserts the socket into the
//! table that `connect(2)` searches, so an inode tagged here is protected before anyone can reach
//! it, by path or otherwise — whether the agent runs or not. The tag comes from the directory:
//! when `dentry`'s parent directory protects `dentry`'s name (`names.rs`), `inode` gets the tag of
//! that name.
//!
//! A void hook: it cannot refuse. If the tag cannot be stored (no memory), the event is reported
//! and the agent's watch of the path tags the inode when it sees it.
//!
//! Fast path (every inode a lookup brings into the dcache): two member loads and one inode-storage
//! lookup on the parent directory, no logging.

use core::ffi::c_void;

use aya_ebpf::{bindings::inode, macros::lsm, programs::LsmContext};
use eci_common::Hook;

use crate::{
    kernel,
    names::{self, Named},
    verdict,
};

#[lsm(hook = "d_instantiate")]
pub fn d_instantiate(ctx: LsmContext) -> i32 {
    // LSM_HOOK(void, LSM_RET_VOID, d_instantiate, struct dentry *dentry, struct inode *inode)
    let dentry: *const c_void = ctx.arg(0);
    let inode: *mut inode = ctx.arg(1);
    if inode.is_null() {
        return 0;
    }
    let Some(dir) = kernel::dentry_dir_inode(dentry) else {
        return 0;
    };
    if let Named::Failed(tag) = names::tag_if_protected(dir, dentry, inode) {
        verdict::report(Hook::DInstantiate, &tag, 0);
    }
    0
}

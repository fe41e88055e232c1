//! `security_unix_stream_connect(struct sock *sock, struct sock *other, struct sock *newsk)`:
//! called for every stream (and seqpacket) unix connect once the listener `other` is found, with
//! both socket locks held (so not sleepable).
//! <https://elixir.bootlin.com/linux/v6.1/source/net/unix/af_unix.c#L1500>
//!
//! It never denies: whether the caller may reach the listener was already decided by
//! `inode_permission` on the socket file. Its job is to remember the outcome on the connecting
//! socket. A connected client socket has an inode of its own (sockfs), not the listener's, so
//! without this a process allowed to connect could hand the connected socket to any process and
//! `file_receive` would see nothing protected. Here the listener's bound inode is known: when it
//! carries a tag, the same tag is copied onto the client socket's inode, and `file_receive`
//! judges a receiver of that socket like a process connecting to the listener. The tag lives and
//! dies with the client socket's inode.
//!
//! Fast path for an untagged listener: a few member loads and one inode-storage lookup, no logging.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};

use crate::{kernel, maps::PROTECTED};

/// What the connect fails with when the client socket cannot be tagged: fail closed, since an
/// untagged connection to a protected socket could be handed to anyone.
const ENOMEM: i32 = 12;

#[lsm(hook = "unix_stream_connect")]
pub fn unix_stream_connect(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, unix_stream_connect, struct sock *sock, struct sock *other,
    //          struct sock *newsk): arg 3 is the verdict of the programs before this one.
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let other: *mut c_void = ctx.arg(1);
    // None: an unbound or abstract listener, which no tag can be on.
    let Some(listener) = kernel::unix_bound_inode(other) else {
        return 0;
    };
    // SAFETY: `listener` is typed `struct inode *` by the verifier (loaded through BTF-typed
    // pointers), not NULL.
    let tag = unsafe { PROTECTED.get_ptr_mut(listener) };
    if tag.is_null() {
        return 0;
    }
    // SAFETY: non-null storage returned by the helper, valid for this program run.
    let mut tag = unsafe { *tag };
    let sock: *const c_void = ctx.arg(0);
    // None: a kernel socket without a file (`sock_create_kern`), which cannot be handed to a
    // process as an fd, so there is nothing to tag.
    let Some(client) = kernel::sock_file_inode(sock) else {
        return 0;
    };
    // A stream socket connects once, and nothing after this hook can fail the connect, so a
    // storage that already exists can only hold this same tag: create-or-get is enough.
    // SAFETY: as for `listener`.
    let stored = unsafe { PROTECTED.get_or_insert_ptr_mut(client, Some(&mut tag)) };
    if stored.is_null() {
        return -ENOMEM;
    }
    0
}

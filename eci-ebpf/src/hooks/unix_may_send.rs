//! `security_unix_may_send(struct socket *sock, struct socket *other)`: called when a datagram
//! unix socket connects (`unix_dgram_connect()`) and for every datagram it sends
//! (`unix_dgram_sendmsg()`, not for seqpacket, which is judged at connect), once the receiving
//! socket `other` is found.
//! <https://elixir.bootlin.com/linux/v6.1/source/net/unix/af_unix.c>
//!
//! Why: the engine listens on stream sockets, which a datagram cannot reach (the kernel refuses a
//! socket of another type with `EPROTOTYPE`), but a protected name may hold a datagram socket too;
//! judging each send, as `unix_stream_connect` judges a connect, keeps every unix socket type
//! behind its tag. A connected datagram socket handed to another process is judged at its next
//! send by the sender's own cgroup, so unlike a stream connection nothing needs to be remembered.
//!
//! Fast path for an untagged receiver (every unrelated datagram, e.g. to the journal): a few member
//! loads and one inode-storage lookup, no logging.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use eci_common::{DENY_ERRNO, Hook};

use crate::{kernel, maps::PROTECTED, verdict};

#[lsm(hook = "unix_may_send")]
pub fn unix_may_send(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, unix_may_send, struct socket *sock, struct socket *other): arg 2 is the
    // verdict of the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let other: *const c_void = ctx.arg(1);
    // None: an unbound (autobound, abstract) receiver, which no tag can be on.
    let Some(receiver) = kernel::socket_sk(other).and_then(kernel::unix_bound_inode) else {
        return 0;
    };
    // SAFETY: `receiver` is typed `struct inode *` by the verifier (loaded through BTF-typed
    // pointers), not NULL.
    let tag = unsafe { PROTECTED.get_ptr_mut(receiver) };
    if tag.is_null() {
        return 0;
    }
    // SAFETY: non-null storage returned by the helper, valid for this program run.
    let tag = unsafe { *tag };
    if verdict::allowed(tag.class) {
        return 0;
    }
    verdict::report(Hook::UnixMaySend, &tag, 0);
    -DENY_ERRNO
}

//! `security_bpf(int cmd, union bpf_attr *attr, unsigned int size)`: called by `__sys_bpf()` for
//! every `bpf(2)` command, after the attributes are copied into the kernel (`attr` is that copy,
//! the one the command then uses, so what is judged here is what runs).
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/bpf/syscall.c#L4937>
//!
//! Why: maps and programs have hooks of their own for every fd made of them (`bpf_map`,
//! `bpf_prog`), links have none on 6.1 or 6.12: `bpf_link_get_fd_by_id()` only checks
//! `CAP_SYS_ADMIN`. So `BPF_LINK_GET_FD_BY_ID` of one of the agent's links is judged here by its
//! id. (A pin of a link, `BPF_OBJ_GET`, reaches no hook that knows the object, see README: its
//! directory is guarded instead, and a tracing or raw-tracepoint link fd can neither be detached
//! nor have its program replaced on these kernels.)
//!
//! Fast path (every other command): one comparison.

use aya_ebpf::{
    bindings::bpf_cmd::BPF_LINK_GET_FD_BY_ID, helpers::bpf_probe_read_kernel, macros::lsm,
    programs::LsmContext,
};
use eci_common::{GUARD_KIND_LINK, Hook};

use crate::guard;

#[lsm(hook = "bpf")]
pub fn bpf(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, bpf, int cmd, union bpf_attr *attr, unsigned int size) (6.1 to 6.12):
    // arg 3 is the verdict of the programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(3);
    if previous != 0 {
        return previous;
    }
    let cmd: i32 = ctx.arg(0);
    if cmd != BPF_LINK_GET_FD_BY_ID as i32 {
        return 0;
    }
    // `attr->link_id` is the first u32 of the union (uapi, fixed).
    let attr: *const u32 = ctx.arg(1);
    // SAFETY: a fault-safe read of kernel memory (the kernel's copy of the attributes).
    let Ok(id) = (unsafe { bpf_probe_read_kernel(attr) }) else {
        return 0;
    };
    guard::object(Hook::Bpf, GUARD_KIND_LINK, id)
}

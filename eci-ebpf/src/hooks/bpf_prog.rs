//! `security_bpf_prog(struct bpf_prog *prog)`: called by `bpf_prog_new_fd()`, whenever a process
//! gets a new fd of a program — by id (`BPF_PROG_GET_FD_BY_ID`), by pin (`BPF_OBJ_GET`), or at
//! load — before the fd exists.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/bpf/syscall.c#L1948>
//!
//! Why: a program fd is what lets a process attach its own programs to ours (`fexit`,
//! `fmod_ret`, `freplace` of our functions through `attach_prog_fd`), or read our programs; only
//! the agent's cgroup gets one of ours (`guard.rs`).
//!
//! Fast path (any other program): two member loads and one hash lookup.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use eci_common::{GUARD_KIND_PROG, Hook};

use crate::{guard, kernel};

#[lsm(hook = "bpf_prog")]
pub fn bpf_prog(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, bpf_prog, struct bpf_prog *prog): arg 1 is the verdict of the programs
    // before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(1);
    if previous != 0 {
        return previous;
    }
    let prog: *const c_void = ctx.arg(0);
    let Some(id) = kernel::bpf_prog_id(prog) else {
        return 0;
    };
    guard::object(Hook::BpfProg, GUARD_KIND_PROG, id)
}

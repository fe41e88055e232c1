//! `security_bpf_map(struct bpf_map *map, fmode_t fmode)`: called by `bpf_map_new_fd()`, whenever
//! a process gets a new fd of a map — by id (`BPF_MAP_GET_FD_BY_ID`), by pin (`BPF_OBJ_GET`), or
//! at creation — before the fd exists.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/bpf/syscall.c#L631>
//!
//! Why: every map operation (`BPF_MAP_UPDATE_ELEM`, `_DELETE_ELEM`, freezing, iterating) needs an
//! fd, so refusing the fd of the agent's maps to anyone outside its cgroup keeps the verdicts and
//! tags the agent's alone (`guard.rs`).
//!
//! Fast path (any other map): one member load and one hash lookup.

use core::ffi::c_void;

use aya_ebpf::{macros::lsm, programs::LsmContext};
use eci_common::{GUARD_KIND_MAP, Hook};

use crate::{guard, kernel};

#[lsm(hook = "bpf_map")]
pub fn bpf_map(ctx: LsmContext) -> i32 {
    // LSM_HOOK(int, 0, bpf_map, struct bpf_map *map, fmode_t fmode): arg 2 is the verdict of the
    // programs before this one; an earlier denial stands.
    let previous: i32 = ctx.arg(2);
    if previous != 0 {
        return previous;
    }
    let map: *const c_void = ctx.arg(0);
    let Some(id) = kernel::bpf_map_id(map) else {
        return 0;
    };
    guard::object(Hook::BpfMap, GUARD_KIND_MAP, id)
}

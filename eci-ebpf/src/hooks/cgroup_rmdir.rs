//! The `cgroup:cgroup_rmdir` tracepoint (BTF-enabled: `tp_btf`), `(struct cgroup *cgrp, const char
//! *path)`, fired by `cgroup_rmdir()` once `cgroup_destroy_locked()` has taken the cgroup offline,
//! still under `cgroup_mutex`.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/cgroup/cgroup.c#L5910>
//!
//! Why: a cgroup id is never reused, so a removed cgroup's verdict can never apply again; left in
//! the map it only takes room (issue 9: a container that exits before the agent sees it running
//! left its deny behind, and a full map turns admission off). Here every removed cgroup's verdict
//! goes, whoever removed it, so the map holds live cgroups only; the agent's own `forget` of a
//! container may then find it gone, which is fine (removing a missing verdict is not an error).
//!
//! And when the removed cgroup is the guard's owner (the agent's cgroup, `guard.rs`), the guard
//! becomes unowned: under systemd a restarted unit gets a new cgroup, and without this its agent
//! would be refused its own pins until reboot.

use aya_ebpf::{bindings::cgroup, macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{guard, kernel, maps::VERDICTS};

#[btf_tracepoint(function = "cgroup_rmdir")]
pub fn cgroup_rmdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const cgroup = ctx.arg(0);
    let Some(gone) = kernel::cgroup_identity(cgrp) else {
        return 0;
    };
    // Most cgroups carry no verdict: ENOENT is the common answer.
    let _ = VERDICTS.remove(gone.id);
    guard::owner_removed(gone.id);
    0
}

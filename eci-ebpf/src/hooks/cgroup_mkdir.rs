//! The `cgroup:cgroup_mkdir` tracepoint (BTF-enabled: `tp_btf`), `(struct cgroup *cgrp, const char
//! *path)`, fired by `cgroup_mkdir()` once the new cgroup exists, still under `cgroup_mutex`.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/cgroup/cgroup.c#L5739>
//!
//! Why (the admission race): a container's cgroup is made by the runtime (dockerd, or systemd for
//! Docker's systemd driver: `system.slice/docker-<id>.scope`) before the agent can learn its id.
//! Until the agent writes a verdict for it, a cgroup inherits its nearest ancestor's verdict, and
//! that ancestor may be trusted (`system.slice`). So a new cgroup that is a container's gets an
//! explicit deny here, keyed by its id, before anything can run in it: moving a process into a
//! cgroup (`cgroup.procs`, `clone3(CLONE_INTO_CGROUP)`) takes `cgroup_mutex`, which `cgroup_mkdir()`
//! holds until after this tracepoint. The agent then overwrites the deny with an allow for the
//! containers it allows. A cgroup is a container's when its parent is a registered container
//! parent (`ECI_ADMISSION`), or when its name is a Docker systemd scope (`docker-<64 hex>.scope`).
//!
//! Limit: if the verdict map is full the deny cannot be written (a tracepoint cannot refuse the
//! mkdir); `MAX_VERDICTS` is sized far above the number of cgroups a host runs.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, cgroup},
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use eci_common::{CONTAINER_SCOPE_LEN, CgroupVerdict, is_container_scope};

use crate::{
    kernel,
    maps::{ADMISSION, VERDICTS},
};

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const cgroup = ctx.arg(0);
    let Some(new) = kernel::cgroup_identity(cgrp) else {
        return 0;
    };
    // SAFETY: the reference is only tested, before the next map operation.
    let by_parent = unsafe { ADMISSION.get(new.parent_id) }.is_some();
    if !by_parent && !scope_name(new.name) {
        return 0;
    }
    // NOEXIST: never overwrite a verdict the agent wrote (ids are not reused, so there should be
    // none, but the agent's word wins).
    let _ = VERDICTS.insert(new.id, CgroupVerdict::DENY, BPF_NOEXIST.into());
    0
}

/// Whether the kernel string `name` is a container scope name.
#[inline(always)]
fn scope_name(name: *const u8) -> bool {
    // One byte more than a scope name, so that a longer name is read as longer, plus the NUL.
    let mut buf = [0u8; CONTAINER_SCOPE_LEN + 2];
    // SAFETY: the helper reads at most `buf.len()` bytes of kernel memory, fault-safe.
    match unsafe { bpf_probe_read_kernel_str_bytes(name, &mut buf) } {
        Ok(bytes) => is_container_scope(bytes),
        Err(_) => false,
    }
}

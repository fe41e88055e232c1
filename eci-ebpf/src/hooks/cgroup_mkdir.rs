//! The `cgroup:cgroup_mkdir` tracepoint (BTF-enabled: `tp_btf`), `(struct cgroup *cgrp, const char
//! *path)`, fired by `cgroup_mkdir()` once the new cgroup exists, still under `cgroup_mutex`.
//! <https://elixir.bootlin.com/linux/v6.1/source/kernel/cgroup/cgroup.c#L5739>
//!
//! Why (the admission race): a container's cgroup is made by the runtime (runc under Docker's
//! cgroupfs driver, systemd under its systemd driver: `system.slice/docker-<id>.scope`) before the
//! agent could write a verdict on it. Until a cgroup has a verdict it inherits its nearest
//! ancestor's, and that ancestor may be trusted (`system.slice`). So a new cgroup that is a
//! container's gets a verdict of its own here, keyed by its id, before anything can run in it:
//! moving a process into a cgroup (`cgroup.procs`, `clone3(CLONE_INTO_CGROUP)`) takes
//! `cgroup_mutex`, which `cgroup_mkdir()` holds until after this tracepoint.
//!
//! A cgroup is a container's when its parent is a registered container parent (`ECI_ADMISSION`),
//! or when its name is a container's under either driver, under any parent (`--cgroup-parent`
//! chooses the parent, never the name): 64 hex digits (cgroupfs) or `docker-<64 hex>.scope`
//! (systemd). Its verdict is the one the gate approved for that container id before forwarding
//! its `start` (`ECI_APPROVALS`: the allowed container's first process already runs allowed,
//! under both drivers), and an explicit deny otherwise.
//!
//! Why an approval cannot be borrowed: anyone who may make cgroups can make one with an approved
//! container's name, and it is allowed at birth. But an allowed cgroup is protected
//! (`cgroupfs.rs`): only the agent, trusted host cgroups, the root and PID 1 may move a process
//! into it, which is exactly who starts containers.
//!
//! A full verdict map: the verdict cannot be written, and a tracepoint cannot refuse the mkdir.
//! The failure is reported (`Hook::CgroupMkdir`: the agent logs it as an error and counts it),
//! and the cgroup inherits its ancestors' standing; `MAX_VERDICTS` is sized far above the cgroups
//! a host runs, the agent removes the verdicts of containers that are gone, and it refuses to
//! start containers while the map is full.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, cgroup},
    helpers::bpf_probe_read_kernel_str_bytes,
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use eci_common::{
    ApprovalKey, CONTAINER_ID_LEN, CONTAINER_SCOPE_LEN, CgroupVerdict, Hook,
    container_id_of_cgroup_name,
};

use crate::{
    kernel,
    maps::{ADMISSION, APPROVALS, VERDICTS},
    verdict,
};

const EEXIST: i32 = 17;

#[btf_tracepoint(function = "cgroup_mkdir")]
pub fn cgroup_mkdir(ctx: BtfTracePointContext) -> i32 {
    let cgrp: *const cgroup = ctx.arg(0);
    let Some(new) = kernel::cgroup_identity(cgrp) else {
        return 0;
    };
    // One byte more than the longest container name, so that a longer name reads as longer,
    // plus the NUL.
    let mut buf = [0u8; CONTAINER_SCOPE_LEN + 2];
    // SAFETY: the helper reads at most `buf.len()` bytes of kernel memory, fault-safe.
    let name = unsafe { bpf_probe_read_kernel_str_bytes(new.name, &mut buf) }.unwrap_or(&[]);
    let verdict = match container_id_of_cgroup_name(name) {
        Some(id) => approval(id).unwrap_or(CgroupVerdict::DENY),
        None => {
            // SAFETY: the reference is only tested, before the next map operation.
            if unsafe { ADMISSION.get(new.parent_id) }.is_none() {
                return 0;
            }
            CgroupVerdict::DENY
        }
    };
    // NOEXIST: never overwrite a verdict the agent wrote (ids are not reused, so there should be
    // none, but the agent's word wins).
    if let Err(err) = VERDICTS.insert(new.id, verdict, BPF_NOEXIST.into())
        && err != -EEXIST
    {
        verdict::report_raw(Hook::CgroupMkdir, verdict.classes, 0, new.id, 0);
    }
    0
}

/// The verdict the gate approved for container `id` (its cgroup name's hex digits).
#[inline(always)]
fn approval(id: &[u8]) -> Option<CgroupVerdict> {
    let key: &ApprovalKey = id.get(..CONTAINER_ID_LEN)?.try_into().ok()?;
    // SAFETY: the value is copied out before the next map operation.
    unsafe { APPROVALS.get(key) }.copied()
}

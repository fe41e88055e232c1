//! Only the agent's cgroup may touch the agent's own BPF objects: get an fd of one of its maps,
//! programs or links (by id or by pin), or unlink, rename or remove its pins. Otherwise a
//! privileged process anywhere else — a `--privileged` container, one with `CAP_BPF` or
//! `CAP_SYS_ADMIN`, a host-namespaced one — could switch enforcement off (unlink the link pins:
//! dropping a link's last reference detaches its program) or rewrite the verdicts (update the
//! verdict map through an fd got by id).
//!
//! What is ours is data the agent writes at load (`ECI_GUARD`: each map, program and link id, and
//! its own cgroup id; `ECI_GUARD_DIRS`: the pin directories' inodes). Nothing is ours until the
//! agent has recorded its cgroup, and the agent joins that cgroup before it opens any pin, so a
//! restarted agent adopts its pins from there. The check is the caller's own cgroup, exactly: a
//! child cgroup of the agent's is not the agent.
//!
//! Owner handoff: when the agent's cgroup is removed (`cgroup_rmdir`; under systemd a restarted
//! unit gets a new cgroup), the guard is unowned, and until an agent records itself again the
//! agent is any caller that may change cgroups (`cgroupfs::writer`: a trusted host cgroup, the
//! cgroup2 root, PID 1). That grants nothing new: a writer may already join the agent's cgroup
//! (its `cgroup.procs` is refused to everyone else) and act as the agent, which is how `status`
//! and `unload` work. While the owner's cgroup exists, a writer outside it is still refused.
//!
//! Fast path, for everything not ours: one hash lookup (maps, programs) or one inode-storage
//! lookup (unlink, rmdir); the agent's cgroup is read only for our own objects.

use aya_ebpf::{
    bindings::{BPF_EXIST, inode},
    helpers::generated::bpf_get_current_cgroup_id,
};
use eci_common::{DENY_ERRNO, GUARD_AGENT_KEY, GUARD_UNOWNED, Hook, guard_key};

use crate::{
    cgroupfs,
    maps::{GUARD, GUARD_DIRS},
    verdict,
};

/// Whether the current task runs in the agent's own cgroup. With no agent recorded, no task does
/// (fail closed: an object is only recorded after the agent's cgroup is). With the owner's cgroup
/// removed ([`GUARD_UNOWNED`]), any task that may change cgroups does (see the module's comment).
#[inline(always)]
fn caller_is_agent() -> bool {
    // SAFETY: the reference is only read before the next map operation.
    let Some(&agent) = (unsafe { GUARD.get(GUARD_AGENT_KEY) }) else {
        return false;
    };
    if agent == GUARD_UNOWNED {
        return cgroupfs::writer();
    }
    // SAFETY: a helper without arguments.
    let own = unsafe { bpf_get_current_cgroup_id() };
    own == agent
}

/// The cgroup `id` is being removed: if it is the agent's, the guard is unowned from now on.
#[inline(always)]
pub fn owner_removed(id: u64) {
    // SAFETY: the reference is only read before the next map operation.
    if unsafe { GUARD.get(GUARD_AGENT_KEY) }.is_some_and(|&agent| agent == id) {
        // EXIST: the key stays; a missing key means "never recorded", which refuses everyone.
        let _ = GUARD.insert(GUARD_AGENT_KEY, GUARD_UNOWNED, BPF_EXIST.into());
    }
}

/// The hook's answer for an fd of object `id` of `kind` (`GUARD_KIND_*`): 0 unless it is one of
/// the agent's and the caller is not the agent, then `-EPERM` and a report.
#[inline(always)]
pub fn object(hook: Hook, kind: u32, id: u32) -> i32 {
    // SAFETY: the reference is only tested, before the next map operation.
    if unsafe { GUARD.get(guard_key(kind, id)) }.is_none() || caller_is_agent() {
        return 0;
    }
    verdict::report_raw(hook, kind, 0, u64::from(id), 0);
    -DENY_ERRNO
}

/// Whether `dir` is one of the agent's pin directories.
#[inline(always)]
pub fn is_pin_dir(dir: *mut inode) -> bool {
    // SAFETY: `dir` is typed `struct inode *` by the verifier (a hook argument or loaded through
    // BTF-typed pointers) and not NULL (the callers check).
    !unsafe { GUARD_DIRS.get_ptr_mut(dir) }.is_null()
}

/// The hook's answer for removing or renaming an entry of a pin directory (inode number `ino`, for
/// the report), or the directory itself: 0 for the agent, else `-EPERM` and a report.
#[inline(always)]
pub fn pin_entry(ino: u64) -> i32 {
    if caller_is_agent() {
        return 0;
    }
    verdict::report_raw(Hook::PinRemove, 0, 0, ino, 0);
    -DENY_ERRNO
}

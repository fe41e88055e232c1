//! The cgroup verdict: the current task's own cgroup, then its ancestors, deepest first; the first
//! verdict that applies decides; none → deny.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid,
    generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_ktime_get_boot_ns,
    },
};
use eci_common::{DenyEvent, Hook, MAX_CGROUP_DEPTH, Protected};

use crate::maps::{EVENTS, VERDICTS};

/// Whether the current task may reach a socket of `class`.
#[inline(always)]
pub fn allowed(class: u32) -> bool {
    standing(class).unwrap_or(false)
}

/// Whether the current task may reach `class` by the first verdict that applies to it (its
/// cgroup's, or its nearest ancestor's); `None` when none applies (an unlisted host cgroup).
#[inline(always)]
pub fn standing(class: u32) -> Option<bool> {
    // The ancestor helper answers 0 above the task's own level, so scanning from the deepest
    // possible level down, the first non-zero id is the task's own cgroup and gives its level.
    let mut own_level: Option<u32> = None;
    for i in 0..MAX_CGROUP_DEPTH {
        let level = MAX_CGROUP_DEPTH - 1 - i;
        // SAFETY: a BPF helper with a scalar argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
        if id == 0 {
            continue;
        }
        let own = *own_level.get_or_insert(level);
        // SAFETY: the reference is only read before the next map operation.
        if let Some(verdict) = unsafe { VERDICTS.get(id) }
            && let Some(decision) = verdict.decide(class, own - level)
        {
            return Some(decision);
        }
    }
    None
}

/// Reports a denial to user space; a full ring buffer drops the report, never the denial.
#[inline(always)]
pub fn report(hook: Hook, tag: &Protected, mask: u32) {
    report_raw(hook, tag.class, tag.dev, tag.ino, mask);
}

/// [`report`] for what is not a protected socket: `class`, `dev` and `ino` say what was refused
/// (see [`Hook`]).
#[inline(always)]
pub fn report_raw(hook: Hook, class: u32, dev: u64, ino: u64, mask: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let event = DenyEvent {
        // SAFETY: helpers without pointer arguments.
        boot_ns: unsafe { bpf_ktime_get_boot_ns() },
        // SAFETY: as above.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        dev,
        ino,
        tgid: (pid_tgid >> 32) as u32,
        pid: pid_tgid as u32,
        hook: hook as u32,
        class,
        mask,
        reserved: 0,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    let _ = EVENTS.output(event, 0);
}

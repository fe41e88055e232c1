//! Admission of container cgroups: a container's cgroup must start denied, whatever its ancestors
//! allow, until the agent allows it.
//!
//! New cgroups are handled in the kernel: the `cgroup_mkdir` program gives a cgroup an explicit
//! deny when it is created, before any process can join it, if it is a child of a registered
//! container parent or named like a container's under either driver, under any parent (64 hex
//! digits, or `docker-<64 hex>.scope`; see eci-ebpf's `hooks/cgroup_mkdir.rs`), unless the gate
//! approved that container.
//! That program only sees cgroups made after it was attached; `deny_unadmitted` does the same for
//! the cgroups that already exist when the agent starts, so there is no gap on either side (the
//! program is attached first, then the tree is scanned).

use std::{
    collections::HashSet,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::MetadataExt as _},
    path::Path,
};

use eci_common::{CgroupVerdict, MAX_CGROUP_DEPTH, is_container_cgroup_name};

use super::{cgroup::CgroupTree, error::Result, maps::KernelMaps};
use crate::ids::CgroupId;

/// Gives every existing container cgroup without a verdict an explicit deny, as `cgroup_mkdir`
/// would have; returns the ids it denied.
pub fn deny_unadmitted(tree: &CgroupTree, maps: &mut KernelMaps) -> Result<Vec<CgroupId>> {
    let parents: HashSet<CgroupId> = maps.container_parents().into_iter().collect();
    let judged: HashSet<CgroupId> = maps.verdicts().into_iter().map(|(id, _)| id).collect();
    let mut found = Vec::new();
    walk(
        tree.root(),
        None,
        MAX_CGROUP_DEPTH,
        &mut |dir, id, parent| {
            let name = dir.file_name().map(|n| n.as_bytes()).unwrap_or_default();
            let container =
                parent.is_some_and(|p| parents.contains(&p)) || is_container_cgroup_name(name);
            if container && !judged.contains(&id) {
                found.push(id);
            }
        },
    );
    for &id in &found {
        maps.set_verdict(id, CgroupVerdict::DENY)?;
    }
    Ok(found)
}

/// Visits every cgroup under `dir` (not `dir` itself) with its id and its parent's id. A cgroup
/// removed during the walk is skipped.
fn walk(
    dir: &Path,
    id: Option<CgroupId>,
    depth: u32,
    visit: &mut dyn FnMut(&Path, CgroupId, Option<CgroupId>),
) {
    let id = id.or_else(|| fs::metadata(dir).ok().map(|m| CgroupId(m.ino())));
    if depth == 0 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        let Ok(meta) = fs::metadata(&path) else {
            continue;
        };
        let child = CgroupId(meta.ino());
        visit(&path, child, id);
        walk(&path, Some(child), depth - 1, visit);
    }
}

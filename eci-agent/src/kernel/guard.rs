//! The guard over the agent's own BPF objects (eci-ebpf's `guard.rs`): only the agent's cgroup may
//! get an fd of its maps, programs or links, by id or by pin, or remove, rename or replace its
//! pins. This file records what is ours — the agent's cgroup id first, then the id of every map,
//! program and link, and a tag on each pin directory — and lets `status` and `unload` act as the
//! agent.
//!
//! Order matters: the agent joins its cgroup before it opens any pin (`enforce.rs`), because once
//! an earlier agent recorded its objects, opening them from anywhere else is refused — unless that
//! cgroup was removed: then the guard is unowned until the next `record`, and any caller that may
//! change cgroups may open them (the owner handoff of eci-ebpf's `guard.rs`). The CLI's
//! `status` and `unload`, run from an admin shell, join the agent's cgroup the same way
//! ([`join_agent_cgroup`]); a process that may not join it (a container: the cgroupfs hooks keep
//! `cgroup.procs` of the agent's cgroup to the agent and trusted host cgroups) cannot act as the
//! agent.

use std::{
    collections::BTreeSet,
    fs::{self, OpenOptions},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, InodeStorage, Map, MapData};
use eci_common::{
    GUARD_AGENT_KEY, GUARD_KIND_LINK, GUARD_KIND_MAP, GUARD_KIND_PROG, GUARDED_PIN_DIR, MAP_GUARD,
    MAP_GUARDED_DIRS, MAPS, guard_key,
};

use super::{
    cgroup::CgroupTree,
    error::{KernelError, Result},
    loader::Attached,
    pins::PinLayout,
};
use crate::ids::CgroupId;

/// Records `agent` (the cgroup at `agent_dir`) as the only cgroup that may touch what is pinned
/// under `pins`, and every map, program and link there as ours; forgets the programs and links of
/// an earlier load (the agent replaced them); tags the pin directories.
pub fn record(
    pins: &PinLayout,
    agent: CgroupId,
    agent_dir: &Path,
    attached: &Attached,
) -> Result<()> {
    let mut guard: HashMap<MapData, u64, u64> = open_pinned(pins, MAP_GUARD)?
        .try_into()
        .map_err(KernelError::map(MAP_GUARD, "taking with the expected type"))?;
    // The agent's cgroup first: an object recorded before it would be nobody's (refused to all).
    guard
        .insert(GUARD_AGENT_KEY, agent.0, 0)
        .map_err(KernelError::map(MAP_GUARD, "recording the agent's cgroup"))?;
    let mut ours = BTreeSet::new();
    for name in MAPS {
        let data = pinned_data(pins, name)?;
        let id = data.info().map_err(|cause| KernelError::Info {
            object: format!("map {name}"),
            cause: Box::new(cause),
        })?;
        ours.insert(guard_key(GUARD_KIND_MAP, id.id()));
    }
    ours.extend(
        attached
            .progs
            .iter()
            .map(|&id| guard_key(GUARD_KIND_PROG, id)),
    );
    ours.extend(
        attached
            .links
            .iter()
            .map(|&id| guard_key(GUARD_KIND_LINK, id)),
    );
    for &key in &ours {
        guard.insert(key, 0, 0).map_err(KernelError::map(
            MAP_GUARD,
            format!("recording object {key:#x}"),
        ))?;
    }
    let recorded: Vec<u64> = guard.keys().filter_map(|key| key.ok()).collect();
    for key in stale(&recorded, &ours) {
        // Gone already (replaced, detached): a failure here leaves a harmless entry.
        let _ = guard.remove(&key);
    }
    // A symlink beside the pins: readable by anyone, written only by the agent (the directory is
    // guarded).
    let record = pins.agent_cgroup_record();
    let tmp = pins
        .root()
        .join(format!("agent_cgroup_{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(agent_dir, &tmp)
        .map_err(KernelError::io("recording the agent's cgroup at", &tmp))?;
    fs::rename(&tmp, &record)
        .map_err(KernelError::io("recording the agent's cgroup at", &record))?;
    let mut dirs: InodeStorage<MapData, u32> = open_pinned(pins, MAP_GUARDED_DIRS)?
        .try_into()
        .map_err(KernelError::map(
            MAP_GUARDED_DIRS,
            "taking with the expected type",
        ))?;
    for dir in [pins.root().to_owned(), pins.maps_dir(), pins.links_dir()] {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(&dir)
            .map_err(KernelError::io("opening (O_PATH)", &dir))?;
        dirs.insert(&file, GUARDED_PIN_DIR, 0)
            .map_err(KernelError::map(
                MAP_GUARDED_DIRS,
                format!("tagging {}", dir.display()),
            ))?;
    }
    Ok(())
}

/// The recorded keys no longer ours: programs and links of an earlier load. Maps are kept (they
/// are adopted, and their ids stay), and so is the agent's key.
fn stale(recorded: &[u64], ours: &BTreeSet<u64>) -> Vec<u64> {
    recorded
        .iter()
        .copied()
        .filter(|key| {
            let kind = (key >> 32) as u32;
            (kind == GUARD_KIND_PROG || kind == GUARD_KIND_LINK) && !ours.contains(key)
        })
        .collect()
}

/// Moves this process into the agent's cgroup, so that it may open and remove the agent's pins
/// (`status`, `unload`): the one the agent recorded beside the pins, else `agent_rel` (the agent's
/// cgroup, relative to the mount) on the usual cgroup2 mounts. `Ok(None)` when there is none, and
/// when the recorded one was removed: the guard is then unowned (the kernel's `cgroup_rmdir`), and
/// a caller that may change cgroups acts as the agent from where it is.
pub fn join_agent_cgroup(pins: &PinLayout, agent_rel: &Path) -> Result<Option<PathBuf>> {
    if let Ok(dir) = fs::read_link(pins.agent_cgroup_record()) {
        if !dir.is_dir() {
            return Ok(None);
        }
        let procs = dir.join("cgroup.procs");
        fs::write(&procs, std::process::id().to_string()).map_err(KernelError::io(
            "joining the agent's cgroup through",
            &procs,
        ))?;
        return Ok(Some(dir));
    }
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(tree) = CgroupTree::open(Path::new(root)) else {
            continue;
        };
        let dir = tree.dir(agent_rel)?;
        if !dir.is_dir() {
            continue;
        }
        tree.move_pid(agent_rel, std::process::id())?;
        return Ok(Some(dir));
    }
    Ok(None)
}

fn pinned_data(pins: &PinLayout, name: &'static str) -> Result<MapData> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(KernelError::map(
        name,
        format!("opening the pin {}", path.display()),
    ))
}

fn open_pinned(pins: &PinLayout, name: &'static str) -> Result<Map> {
    Map::from_map_data(pinned_data(pins, name)?).map_err(KernelError::map(name, "reading its type"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn earlier_programs_and_links_are_stale_maps_and_agent_are_not() {
        let ours: BTreeSet<u64> = [
            guard_key(GUARD_KIND_MAP, 5),
            guard_key(GUARD_KIND_PROG, 40),
            guard_key(GUARD_KIND_LINK, 9),
        ]
        .into();
        let recorded = [
            GUARD_AGENT_KEY,
            guard_key(GUARD_KIND_MAP, 5),
            guard_key(GUARD_KIND_MAP, 6),
            guard_key(GUARD_KIND_PROG, 40),
            guard_key(GUARD_KIND_PROG, 30),
            guard_key(GUARD_KIND_LINK, 9),
            guard_key(GUARD_KIND_LINK, 8),
        ];
        assert_eq!(
            stale(&recorded, &ours),
            [
                guard_key(GUARD_KIND_PROG, 30),
                guard_key(GUARD_KIND_LINK, 8)
            ]
        );
    }

    #[test]
    fn keys_keep_kinds_apart() {
        assert_ne!(guard_key(GUARD_KIND_MAP, 7), guard_key(GUARD_KIND_PROG, 7));
        assert_eq!(GUARD_AGENT_KEY, 0);
        assert_eq!(guard_key(GUARD_KIND_LINK, u32::MAX) >> 32, 3);
    }
}

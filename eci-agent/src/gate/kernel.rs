//! Container verdicts in the kernel: an allowed container's cgroup gets the allow verdict for
//! the public socket, every other container's cgroup an explicit deny.
//!
//! Verdicts go only where they belong: to the cgroup the gate recorded for the container (the
//! one the engine's answers place it in, verified to exist), never to the agent's own cgroup,
//! a trusted one or the root — whatever a container did to its processes' cgroups.
//!
//! Admission: a container's first process must never run allowed by accident, nor denied when
//! it is allowed. Container cgroups start denied (the kernel's `cgroup_mkdir` program denies any
//! new cgroup named like a container's, under any parent), so a container the agent has not
//! judged yet is denied. An allowed container is *approved* by id before its `start` is
//! forwarded: the same program gives the cgroup the runtime then makes for it (runc under
//! cgroupfs, systemd under the systemd driver) the allow at birth, so its first process already
//! runs allowed under both drivers. The approval stays while the container exists and is judged
//! allowed (so a restart by the engine is allowed at birth too), and goes when it is judged
//! denied or is gone; the table bounds it. A full map refuses the start, loudly.
use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use anyhow::Context as _;
use eci_common::{CLASS_PUBLIC, CgroupVerdict};

use crate::{
    ids::{CgroupId, ContainerId},
    kernel::{
        KernelError,
        cgroup::{CgroupTree, cgroup_of_pid},
        verdicts::VerdictStore,
    },
};

pub const ALLOW: CgroupVerdict = CgroupVerdict {
    classes: CLASS_PUBLIC,
    flags: 0,
};

pub struct KernelSync {
    /// The kernel's verdict map in the agent; a map in memory in the table tests.
    maps: Arc<Mutex<dyn VerdictStore>>,
    tree: CgroupTree,
    /// Cgroups that never get a container verdict: the trusted ones (the agent's own and the
    /// root are checked at each write).
    never: Vec<CgroupId>,
    /// Container → the cgroup whose verdict the agent wrote, so it can be removed when the
    /// container goes.
    written: Mutex<HashMap<ContainerId, Written>>,
}

/// A cgroup the agent wrote a container's verdict for, and where it was (cgroup v2 directories
/// cannot be renamed, and ids are never reused: the id still at that path means it still lives).
#[derive(Clone)]
struct Written {
    cgroup: CgroupId,
    rel: PathBuf,
}

/// A key no cgroup has (kernfs ids count up from 1), used to ask the verdict map for room.
const ROOM_PROBE: CgroupId = CgroupId(u64::MAX);

impl KernelSync {
    pub fn new(maps: Arc<Mutex<dyn VerdictStore>>, tree: CgroupTree) -> Self {
        Self {
            maps,
            tree,
            never: Vec::new(),
            written: Mutex::default(),
        }
    }

    /// Cgroups that must never carry a container's verdict (the trusted host cgroups).
    #[must_use]
    pub fn never_on(mut self, cgroups: impl IntoIterator<Item = CgroupId>) -> Self {
        self.never.extend(cgroups);
        self
    }

    /// The maps, whatever a panicking holder left: each operation on them is one kernel call,
    /// so there is no half-done state to fear.
    fn store(&self) -> MutexGuard<'_, dyn VerdictStore + 'static> {
        self.maps.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Approves allowed container `id`: the cgroup made for it from now on, by whoever and under
    /// either driver, is allowed at birth (see the module's comment). Called before `start` is
    /// forwarded; an error (a full map) must refuse the start.
    pub fn approve(&self, id: &ContainerId) -> Result<(), KernelError> {
        self.store().set_approval(id, ALLOW)
    }

    /// Container `id` is judged denied, or gone: a cgroup made for it is denied at birth again.
    pub fn withdraw(&self, id: &ContainerId) {
        if let Err(err) = self.store().remove_approval(id) {
            tracing::warn!(container = %id, "withdrawing the approval: {err}");
        }
    }

    /// Withdraws every approval of a container not in `existing` (the engine's whole list,
    /// stopped ones included): containers removed while no agent followed the engine's events
    /// (killed, restarting, a lost stream) leave pinned approvals no `destroy` will clear, and
    /// each one holds a slot of the map every start needs. Returns how many went.
    pub fn withdraw_all_but(&self, existing: &[ContainerId]) -> usize {
        let stale: Vec<ContainerId> = self
            .store()
            .approvals()
            .into_iter()
            .filter_map(|(id, _)| ContainerId::parse(&id))
            .filter(|id| !existing.contains(id))
            .collect();
        for id in &stale {
            self.withdraw(id);
        }
        stale.len()
    }

    /// Whether the verdict map can take one more entry, which every container start needs: the
    /// kernel writes its cgroup's verdict at birth, and a cgroup it cannot write one for
    /// inherits its ancestors' standing (maybe a trusted one). Asked by writing and removing a
    /// key no cgroup has.
    pub fn check_room(&self) -> Result<(), KernelError> {
        let mut store = self.store();
        store.set_verdict(ROOM_PROBE, CgroupVerdict::DENY)?;
        store.remove_verdict(ROOM_PROBE)
    }

    /// Allows or denies container `id`'s recorded `cgroup`, found at `rel`.
    pub fn set(
        &self,
        id: &ContainerId,
        cgroup: CgroupId,
        rel: &Path,
        allowed: bool,
    ) -> anyhow::Result<()> {
        self.check_target(cgroup)?;
        let verdict = if allowed { ALLOW } else { CgroupVerdict::DENY };
        self.store().set_verdict(cgroup, verdict)?;
        let written = Written {
            cgroup,
            rel: rel.to_owned(),
        };
        let previous = self.written().insert(id.clone(), written);
        // A restarted container has a new cgroup: the old one is retired.
        if let Some(old) = previous
            && old.cgroup != cgroup
        {
            self.retire(id, &old);
        }
        Ok(())
    }

    /// The engine said a moment ago that the container does not run. Its approval stays while
    /// it is allowed. Its last cgroup's entry goes only if that cgroup is gone: the answer may
    /// be stale by now (the container started again and this cgroup is its new one), and a live
    /// cgroup without an entry would inherit its parent's standing — under the systemd driver
    /// `/system.slice`, which hosts trust. A live one keeps an allow only while the container
    /// is allowed; the kernel's `cgroup_rmdir` removes the entry when the cgroup goes.
    pub fn unset(&self, id: &ContainerId, allowed: bool) {
        let Some(last) = self.written().get(id).cloned() else {
            return;
        };
        if !self.lives(&last) {
            self.written().remove(id);
            self.remove(id, last.cgroup);
        } else if !allowed {
            self.deny(id, last.cgroup);
        }
    }

    /// The container is gone (as far as the engine said): its approval goes, and its last
    /// cgroup is retired.
    pub fn forget(&self, id: &ContainerId) {
        let last = self.written().remove(id);
        if let Some(last) = last {
            self.retire(id, &last);
        }
        self.withdraw(id);
    }

    /// A container's cgroup that is no longer its current one: its entry goes once the cgroup
    /// is gone; while it lives (a stale answer, or processes left behind) it is denied, never
    /// left without an entry (see [`Self::unset`]).
    fn retire(&self, id: &ContainerId, cgroup: &Written) {
        if self.lives(cgroup) {
            self.deny(id, cgroup.cgroup);
        } else {
            self.remove(id, cgroup.cgroup);
        }
    }

    fn lives(&self, cgroup: &Written) -> bool {
        self.tree
            .id(&cgroup.rel)
            .is_ok_and(|found| found == cgroup.cgroup)
    }

    fn deny(&self, id: &ContainerId, cgroup: CgroupId) {
        if let Err(err) = self.store().set_verdict(cgroup, CgroupVerdict::DENY) {
            tracing::error!(container = %id, "denying a cgroup the container left: {err:#}");
        }
    }

    fn remove(&self, id: &ContainerId, cgroup: CgroupId) {
        if let Err(err) = self.store().remove_verdict(cgroup) {
            tracing::debug!(container = %id, "removing verdict: {err:#}");
        }
    }

    fn written(&self) -> MutexGuard<'_, HashMap<ContainerId, Written>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A container verdict never lands on the agent's own cgroup (nor an ancestor of it), a
    /// trusted cgroup or the root.
    fn check_target(&self, cgroup: CgroupId) -> anyhow::Result<()> {
        if self.never.contains(&cgroup) {
            anyhow::bail!(
                "cgroup {cgroup} is a trusted host cgroup; no container verdict goes there"
            );
        }
        let root = self.tree.id(Path::new("/"))?;
        let own = cgroup_of_pid(std::process::id()).context("the agent's own cgroup")?;
        let mut dir = own.as_path();
        loop {
            let id = self.tree.id(dir)?;
            if id == cgroup {
                anyhow::bail!(
                    "cgroup {cgroup} holds the agent itself; no container verdict goes there"
                );
            }
            if id == root {
                break;
            }
            match dir.parent() {
                Some(up) => dir = up,
                None => break,
            }
        }
        if cgroup == root {
            anyhow::bail!("the cgroup2 root gets no container verdict");
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "kernel_tests.rs"]
mod tests;

//! Container verdicts in the kernel: an allowed container's cgroup gets the allow verdict for
//! the public socket, every other container's cgroup an explicit deny.
//!
//! Verdicts go only where they belong: to the cgroup the gate recorded for the container (the
//! one the engine's answers place it in, verified to exist), never to the agent's own cgroup,
//! a trusted one or the root — whatever a container did to its processes' cgroups.
//!
//! Admission: a container's first process must never run allowed by accident, nor denied when
//! it is allowed. Container cgroups start denied (the kernel's `cgroup_mkdir` program), so a
//! container the agent has not judged yet is denied. For an allowed container started through
//! the sidecar under the cgroupfs driver, the agent creates the container's cgroup itself and
//! writes the allow verdict *before* forwarding `start`; runc then joins the existing cgroup, so
//! the first process already runs allowed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use eci_common::{CLASS_PUBLIC, CgroupVerdict};

use super::placement;
use crate::{
    ids::{CgroupId, ContainerId},
    kernel::{
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
    written: Mutex<HashMap<ContainerId, CgroupId>>,
    /// Cgroups the agent made ahead of `start`: removed with the container if the start never
    /// happened (runc removes the ones it ran in).
    created: Mutex<HashMap<ContainerId, PathBuf>>,
}

impl KernelSync {
    pub fn new(maps: Arc<Mutex<dyn VerdictStore>>, tree: CgroupTree) -> Self {
        Self {
            maps,
            tree,
            never: Vec::new(),
            written: Mutex::default(),
            created: Mutex::default(),
        }
    }

    /// Cgroups that must never carry a container's verdict (the trusted host cgroups).
    #[must_use]
    pub fn never_on(mut self, cgroups: impl IntoIterator<Item = CgroupId>) -> Self {
        self.never.extend(cgroups);
        self
    }

    /// Before `start` of an allowed container: under the cgroupfs driver, creates its cgroup and
    /// allows it, and returns it. Other drivers are left to [`Self::set`] once it runs.
    pub fn prepare_allowed(
        &self,
        id: &ContainerId,
        driver: &str,
        cgroup_parent: &str,
    ) -> anyhow::Result<Option<CgroupId>> {
        if driver != "cgroupfs" {
            return Ok(None);
        }
        let rel = placement::container_cgroup(driver, cgroup_parent, id)?;
        let cgroup = self.tree.create(&rel)?;
        if let Ok(mut created) = self.created.lock() {
            created.insert(id.clone(), rel);
        }
        self.set(id, cgroup, true)?;
        Ok(Some(cgroup))
    }

    /// Allows or denies container `id`'s recorded `cgroup`.
    pub fn set(&self, id: &ContainerId, cgroup: CgroupId, allowed: bool) -> anyhow::Result<()> {
        self.check_target(cgroup)?;
        let verdict = if allowed { ALLOW } else { CgroupVerdict::DENY };
        self.maps
            .lock()
            .map_err(|_| anyhow::anyhow!("kernel maps lock poisoned"))?
            .set_verdict(cgroup, verdict)?;
        let previous = self
            .written
            .lock()
            .ok()
            .and_then(|mut w| w.insert(id.clone(), cgroup));
        // A restarted container has a new cgroup: the old one's entry goes.
        if let Some(old) = previous
            && old != cgroup
        {
            self.remove(id, old);
        }
        Ok(())
    }

    /// The container is gone (or does not run): its verdict entry goes too (cgroup ids are
    /// never reused), and a cgroup the agent made for a start that never ran.
    pub fn forget(&self, id: &ContainerId) {
        if let Some(cgroup) = self.written.lock().ok().and_then(|mut w| w.remove(id)) {
            self.remove(id, cgroup);
        }
        if let Some(rel) = self.created.lock().ok().and_then(|mut c| c.remove(id))
            && let Ok(dir) = self.tree.dir(&rel)
        {
            // Busy (something runs in it) or gone: either way not ours to remove any more.
            let _ = std::fs::remove_dir(dir);
        }
    }

    fn remove(&self, id: &ContainerId, cgroup: CgroupId) {
        if let Ok(mut maps) = self.maps.lock()
            && let Err(err) = maps.remove_verdict(cgroup)
        {
            tracing::debug!(container = %id, "removing verdict: {err:#}");
        }
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

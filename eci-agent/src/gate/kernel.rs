//! Container verdicts in the kernel: an allowed container's cgroup gets the allow verdict for
//! the public socket, every other container's cgroup an explicit deny.
//!
//! Admission: a container's first process must never run allowed by accident, nor denied when
//! it is allowed. The container parents carry an explicit deny (see `agent::enforce`), so a
//! container the agent has not judged yet is denied. For an allowed container started through
//! the sidecar under the cgroupfs driver, the agent creates the container's cgroup itself and
//! writes the allow verdict *before* forwarding `start`; runc then joins the existing cgroup, so
//! the first process already runs allowed. Containers the engine starts on its own (restart
//! policies) or under the systemd driver are judged from the engine's `start` event: denied
//! until then (fail closed), allowed a moment later.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use eci_common::{CLASS_PUBLIC, CgroupVerdict};

use crate::{
    ids::{CgroupId, ContainerId},
    kernel::{
        KernelMaps,
        cgroup::{CgroupTree, cgroup_of_pid},
    },
};

/// The engine's default parent for container cgroups under the cgroupfs driver.
pub const DEFAULT_CGROUPFS_PARENT: &str = "docker";

pub const ALLOW: CgroupVerdict = CgroupVerdict {
    classes: CLASS_PUBLIC,
    flags: 0,
};

pub struct KernelSync {
    maps: Arc<Mutex<KernelMaps>>,
    tree: CgroupTree,
    /// Container → the cgroup whose verdict the agent wrote, so it can be removed when the
    /// container goes.
    written: Mutex<HashMap<ContainerId, CgroupId>>,
}

impl KernelSync {
    pub fn new(maps: Arc<Mutex<KernelMaps>>, tree: CgroupTree) -> Self {
        Self {
            maps,
            tree,
            written: Mutex::default(),
        }
    }

    /// Before `start` of an allowed container: under the cgroupfs driver, creates its cgroup and
    /// allows it. Other drivers are left to [`Self::judge_running`].
    pub fn prepare_allowed(
        &self,
        id: &ContainerId,
        driver: &str,
        cgroup_parent: &str,
    ) -> anyhow::Result<()> {
        if driver != "cgroupfs" {
            return Ok(());
        }
        let rel = cgroupfs_path(id, cgroup_parent);
        let cgroup = self.tree.create(&rel)?;
        self.write(id, cgroup, ALLOW)
    }

    /// A running container (its init process is `pid`): allow or deny the cgroup it runs in.
    pub fn judge_running(&self, id: &ContainerId, pid: u32, allowed: bool) -> anyhow::Result<()> {
        let rel = cgroup_of_pid(pid).with_context(|| format!("cgroup of container {id}"))?;
        self.judge_cgroup(id, &rel, allowed)
    }

    /// Allows or denies the container's cgroup at `rel` (relative to the cgroup2 mount).
    pub fn judge_cgroup(&self, id: &ContainerId, rel: &Path, allowed: bool) -> anyhow::Result<()> {
        let cgroup = self.tree.id(rel)?;
        self.write(
            id,
            cgroup,
            if allowed { ALLOW } else { CgroupVerdict::DENY },
        )
    }

    /// The container is gone: its verdict entry goes too (cgroup ids are never reused).
    pub fn forget(&self, id: &ContainerId) {
        let Some(cgroup) = self.written.lock().ok().and_then(|mut w| w.remove(id)) else {
            return;
        };
        if let Ok(mut maps) = self.maps.lock()
            && let Err(err) = maps.remove_verdict(cgroup)
        {
            tracing::debug!(container = %id, "removing verdict: {err:#}");
        }
    }

    fn write(
        &self,
        id: &ContainerId,
        cgroup: CgroupId,
        verdict: CgroupVerdict,
    ) -> anyhow::Result<()> {
        self.maps
            .lock()
            .map_err(|_| anyhow::anyhow!("kernel maps lock poisoned"))?
            .set_verdict(cgroup, verdict)?;
        if let Ok(mut w) = self.written.lock() {
            w.insert(id.clone(), cgroup);
        }
        Ok(())
    }
}

/// Where runc puts a container under the cgroupfs driver with cgroup v2: `<parent>/<id>`.
pub fn cgroupfs_path(id: &ContainerId, cgroup_parent: &str) -> PathBuf {
    let parent = cgroup_parent.trim_matches('/');
    let parent = if parent.is_empty() {
        DEFAULT_CGROUPFS_PARENT
    } else {
        parent
    };
    Path::new(parent).join(id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_paths() {
        let id = ContainerId::parse(&"a".repeat(64)).unwrap();
        assert_eq!(
            cgroupfs_path(&id, ""),
            Path::new("docker").join("a".repeat(64))
        );
        assert_eq!(
            cgroupfs_path(&id, "/ci/"),
            Path::new("ci").join("a".repeat(64))
        );
    }
}

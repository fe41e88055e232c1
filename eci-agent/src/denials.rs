//! Kernel denials for operators: each one counted, and written to the audit log with what the
//! agent can add to the kernel's record — the cgroup's path and the container in it, and the
//! path of the protected socket the inode is. The container is the one the container table
//! records at that cgroup or an ancestor (the identity source the sidecar uses too), never a
//! guess from the path's shape, which a container can choose (`--cgroup-parent`, a cgroup it
//! made itself).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::Arc,
};

use eci_common::{DenyEvent, Hook};

use crate::{
    ids::CgroupId,
    kernel::{cgroup::CgroupTree, events},
    sidecar::{
        audit::{AuditLog, KernelDenial},
        peer::ContainerAt,
    },
};

/// What a denial is turned into; built once, called for every event.
pub struct DenialSink {
    audit: Option<AuditLog>,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    tree: Option<CgroupTree>,
    /// The sockets the agent protects by path; the inode is compared when a denial arrives
    /// (the engine re-creates its socket on restart).
    sockets: Vec<PathBuf>,
    /// cgroup id → path: finding a path walks the tree, and a denied process tends to retry.
    paths: HashMap<u64, Option<String>>,
    /// The container table's view (the gate's).
    containers: Arc<dyn ContainerAt + Send>,
}

/// Entries kept in the path cache before it starts over.
const PATH_CACHE: usize = 1024;

impl DenialSink {
    pub fn new(
        audit: Option<AuditLog>,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        cgroup_root: &Path,
        sockets: Vec<PathBuf>,
        containers: Arc<dyn ContainerAt + Send>,
    ) -> Self {
        Self {
            audit,
            metrics,
            tree: CgroupTree::open(cgroup_root).ok(),
            sockets,
            paths: HashMap::new(),
            containers,
        }
    }

    pub fn record(&mut self, event: &DenyEvent) {
        self.metrics.kernel_denial();
        let Some(audit) = &self.audit else { return };
        if self.paths.len() >= PATH_CACHE {
            self.paths.clear();
        }
        let tree = self.tree.as_ref();
        let cgroup = self
            .paths
            .entry(event.cgroup_id)
            .or_insert_with(|| {
                tree.and_then(|tree| tree.path_of(CgroupId(event.cgroup_id)))
                    .map(|p| p.display().to_string())
            })
            .clone();
        let container = cgroup
            .as_deref()
            .and_then(|path| self.containers.container_at(path));
        let path = self
            .sockets
            .iter()
            .find(|p| {
                std::fs::metadata(p).is_ok_and(|m| m.dev() == event.dev && m.ino() == event.ino)
            })
            .map(|p| p.display().to_string());
        let comm = events::comm(event);
        audit.record_kernel_denial(&KernelDenial {
            pid: event.tgid,
            comm: &comm,
            cgroup_id: event.cgroup_id,
            cgroup: cgroup.as_deref(),
            container_id: container.as_ref().map(|c| c.as_str()),
            path: path.as_deref(),
            dev: event.dev,
            ino: event.ino,
            hook: Hook::from_u32(event.hook).map_or("unknown", Hook::name),
        });
    }
}

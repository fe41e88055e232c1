//! The one container table: every container the gate has judged, as the engine described it,
//! with the cgroup it runs in (by id) and its standing. It is the identity source of the whole
//! agent: the sidecar resolves callers through it (a caller is container C when its cgroup, or
//! an ancestor, is C's recorded cgroup), the kernel verdicts are written only to recorded
//! cgroups, and `explain`, `status`, metrics and the audit log read it.
//!
//! Only the gate writes it ([`super::SocketMountGate`] owns each event: judge → table → kernel
//! → outcome). A container whose standing drops from allowed has its open sidecar connections
//! closed through the watch every connection holds.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use tokio::sync::watch;

use crate::ids::{CgroupId, ContainerId};

/// Whether a container may use the socket, and by which rule or for which reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// Allowed (imageList entry, `"*"`, derived image, ECI off).
    Allowed { rule: String },
    /// Judged and not allowed: `reason` is the snake_case code of the refusal.
    Denied { reason: &'static str },
}

impl Standing {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// What the engine said about a container when the gate judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRecord {
    pub id: ContainerId,
    /// The image name as the container was created with it.
    pub image: String,
    /// The immutable image ID it was judged by.
    pub image_id: String,
    /// The init process's pid (host pid namespace); 0 when not running.
    pub init_pid: u32,
    /// `cgroupfs` or `systemd`.
    pub driver: String,
    /// `HostConfig.CgroupParent` as the engine recorded it.
    pub cgroup_parent: String,
    /// Its cgroup, derived from the engine's answers (or recorded by the kernel at creation)
    /// and verified on the cgroup2 mount; `None` until it has one (created, not started).
    pub cgroup: Option<CgroupId>,
    pub standing: Standing,
}

struct Entry {
    record: ContainerRecord,
    /// Flipped to `true` when the container loses its allowance: its connections end.
    revoked: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<ContainerId, Entry>,
    by_cgroup: HashMap<CgroupId, ContainerId>,
}

#[derive(Default)]
pub struct ContainerTable {
    inner: RwLock<Inner>,
}

impl ContainerTable {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        // A writer never panics while holding the lock (no user code runs under it).
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records (or updates) a judged container. Returns whether it lost an allowance it had,
    /// in which case its connections have been told to close.
    pub fn record(&self, record: ContainerRecord) -> bool {
        let mut inner = self.write();
        let inner = &mut *inner;
        if let Some(old) = inner.by_id.get(&record.id).and_then(|e| e.record.cgroup)
            && Some(old) != record.cgroup
        {
            inner.by_cgroup.remove(&old);
        }
        if let Some(cgroup) = record.cgroup {
            // A cgroup belongs to one container; a stale claim (ids are never reused, so only
            // a bug could make one) loses.
            if let Some(previous) = inner.by_cgroup.insert(cgroup, record.id.clone())
                && previous != record.id
                && let Some(entry) = inner.by_id.get_mut(&previous)
            {
                entry.record.cgroup = None;
            }
        }
        match inner.by_id.get_mut(&record.id) {
            Some(entry) => {
                let lost = entry.record.standing.is_allowed() && !record.standing.is_allowed();
                entry.record = record;
                if lost {
                    entry.revoked.send_replace(true);
                    // Connections opened from now on watch a fresh flag.
                    entry.revoked = watch::Sender::new(false);
                }
                lost
            }
            None => {
                inner.by_id.insert(
                    record.id.clone(),
                    Entry {
                        record,
                        revoked: watch::Sender::new(false),
                    },
                );
                false
            }
        }
    }

    /// The container is gone: it leaves the table, its connections close. Returns its record.
    pub fn remove(&self, id: &ContainerId) -> Option<ContainerRecord> {
        let mut inner = self.write();
        let entry = inner.by_id.remove(id)?;
        if let Some(cgroup) = entry.record.cgroup
            && inner.by_cgroup.get(&cgroup) == Some(id)
        {
            inner.by_cgroup.remove(&cgroup);
        }
        entry.revoked.send_replace(true);
        Some(entry.record)
    }

    /// The container whose recorded cgroup is `cgroup`.
    pub fn at_cgroup(&self, cgroup: CgroupId) -> Option<ContainerId> {
        self.read().by_cgroup.get(&cgroup).cloned()
    }

    pub fn get(&self, id: &ContainerId) -> Option<ContainerRecord> {
        self.read().by_id.get(id).map(|e| e.record.clone())
    }

    pub fn is_allowed(&self, id: &ContainerId) -> bool {
        self.read()
            .by_id
            .get(id)
            .is_some_and(|e| e.record.standing.is_allowed())
    }

    /// A receiver that turns `true` when `id` loses its allowance or goes; `None` when `id` is
    /// not allowed now.
    pub fn watch(&self, id: &ContainerId) -> Option<watch::Receiver<bool>> {
        self.read()
            .by_id
            .get(id)
            .filter(|e| e.record.standing.is_allowed())
            .map(|e| e.revoked.subscribe())
    }

    /// Every recorded container, allowed or not.
    pub fn snapshot(&self) -> Vec<ContainerRecord> {
        self.read()
            .by_id
            .values()
            .map(|e| e.record.clone())
            .collect()
    }

    /// How many recorded containers are allowed now.
    pub fn allowed_count(&self) -> usize {
        self.read()
            .by_id
            .values()
            .filter(|e| e.record.standing.is_allowed())
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(c: char) -> ContainerId {
        ContainerId::parse(&c.to_string().repeat(64)).unwrap()
    }

    fn rec(c: char, cgroup: Option<u64>, allowed: bool) -> ContainerRecord {
        ContainerRecord {
            id: id(c),
            image: "x".into(),
            image_id: "sha256:1".into(),
            init_pid: 1,
            driver: "cgroupfs".into(),
            cgroup_parent: String::new(),
            cgroup: cgroup.map(CgroupId),
            standing: if allowed {
                Standing::Allowed { rule: "*".into() }
            } else {
                Standing::Denied {
                    reason: "image_not_allowed",
                }
            },
        }
    }

    #[test]
    fn losing_the_allowance_tells_every_watcher_once() {
        let table = ContainerTable::new();
        assert!(table.watch(&id('a')).is_none());
        assert!(!table.record(rec('a', Some(7), true)));
        let mut w = table.watch(&id('a')).unwrap();
        assert!(table.is_allowed(&id('a')));
        assert!(!*w.borrow_and_update());
        assert!(table.record(rec('a', Some(7), false)));
        assert!(*w.borrow_and_update());
        assert!(!table.is_allowed(&id('a')));
        assert!(table.watch(&id('a')).is_none(), "denied: nothing to watch");
        // Still known, by its cgroup: a denied container is a container, not the host.
        assert_eq!(table.at_cgroup(CgroupId(7)), Some(id('a')));
        assert!(!table.record(rec('a', Some(7), false)));
    }

    #[test]
    fn cgroups_map_to_one_container_and_go_with_it() {
        let table = ContainerTable::new();
        table.record(rec('a', Some(7), true));
        table.record(rec('b', Some(8), true));
        assert_eq!(table.at_cgroup(CgroupId(8)), Some(id('b')));
        // A restart gives a new cgroup; the old id no longer names it.
        table.record(rec('b', Some(9), true));
        assert_eq!(table.at_cgroup(CgroupId(8)), None);
        assert_eq!(table.at_cgroup(CgroupId(9)), Some(id('b')));
        let w = table.watch(&id('b')).unwrap();
        assert!(table.remove(&id('b')).is_some());
        assert!(*w.borrow());
        assert_eq!(table.at_cgroup(CgroupId(9)), None);
        assert_eq!(table.allowed_count(), 1);
    }
}

//! The only writer of the BPF maps. Keys and values are eci-common's contract types.
//!
//! - Protected sockets: the inode is tagged through an `O_PATH` fd of the socket file (inode
//!   storage keys are fds; the kernel takes `fget_raw`, so `O_PATH` works and nothing is opened
//!   for reading or writing), and recorded in the index by `(st_dev, st_ino)`.
//! - Verdicts: cgroup id → allowed classes.
//! - Admission: container parents, whose new children the `cgroup_mkdir` program denies at birth.

use std::{
    fs::{File, OpenOptions},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::Path,
};

use anyhow::Context as _;
use aya::maps::{HashMap, InodeStorage, Map, MapData};
use eci_common::{
    ADMIT_CHILDREN_DENIED, CgroupVerdict, InodeKey, MAP_ADMISSION, MAP_PROTECTED,
    MAP_PROTECTED_INDEX, MAP_VERDICTS, Protected,
};

use super::{cgroup::CgroupId, loader::PinLayout};

pub struct KernelMaps {
    protected: InodeStorage<MapData, Protected>,
    index: HashMap<MapData, InodeKey, Protected>,
    verdicts: HashMap<MapData, u64, CgroupVerdict>,
    admission: HashMap<MapData, u64, u32>,
}

impl KernelMaps {
    pub(super) fn from_maps(
        protected: Map,
        index: Map,
        verdicts: Map,
        admission: Map,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            protected: protected.try_into().context(MAP_PROTECTED)?,
            index: index.try_into().context(MAP_PROTECTED_INDEX)?,
            verdicts: verdicts.try_into().context(MAP_VERDICTS)?,
            admission: admission.try_into().context(MAP_ADMISSION)?,
        })
    }

    /// Opens the maps an agent pinned (for `status`, `unload` and tests), without loading anything.
    pub fn open_pinned(pins: &PinLayout) -> anyhow::Result<Self> {
        let open = |name: &str| -> anyhow::Result<Map> {
            let path = pins.map(name);
            let data = MapData::from_pin(&path)
                .with_context(|| format!("opening pinned map {}", path.display()))?;
            Map::from_map_data(data).with_context(|| format!("map {}", path.display()))
        };
        Self::from_maps(
            open(MAP_PROTECTED)?,
            open(MAP_PROTECTED_INDEX)?,
            open(MAP_VERDICTS)?,
            open(MAP_ADMISSION)?,
        )
    }

    /// Tags the socket file at `path` as protected with `class`. Idempotent; a socket re-created
    /// at the same path is a new inode and needs a new tag.
    pub fn protect(&mut self, path: &Path, class: u32) -> anyhow::Result<InodeKey> {
        let file = open_path(path)?;
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let key = InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        let tag = Protected {
            class,
            reserved: 0,
            dev: key.dev,
            ino: key.ino,
        };
        self.protected
            .insert(&file, tag, 0)
            .with_context(|| format!("tagging {} in {MAP_PROTECTED}", path.display()))?;
        self.index
            .insert(key, tag, 0)
            .with_context(|| format!("recording {} in {MAP_PROTECTED_INDEX}", path.display()))?;
        Ok(key)
    }

    /// Removes the tag of the socket file at `path` (if it still exists) from both maps.
    pub fn unprotect(&mut self, path: &Path) -> anyhow::Result<()> {
        let file = open_path(path)?;
        let meta = file
            .metadata()
            .with_context(|| format!("stat {}", path.display()))?;
        let _ = self.protected.remove(&file);
        let _ = self.index.remove(&InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        });
        Ok(())
    }

    /// The protected inodes, as recorded in the index.
    pub fn protected(&self) -> Vec<(InodeKey, Protected)> {
        let mut all: Vec<_> = self.index.iter().filter_map(Result::ok).collect();
        all.sort_by_key(|(key, _)| *key);
        all
    }

    /// Drops index entries whose inode no longer carries a tag (the socket was deleted).
    pub fn forget(&mut self, key: &InodeKey) {
        let _ = self.index.remove(key);
    }

    pub fn set_verdict(&mut self, id: CgroupId, verdict: CgroupVerdict) -> anyhow::Result<()> {
        self.verdicts
            .insert(id.0, verdict, 0)
            .with_context(|| format!("setting the verdict of cgroup {id}"))
    }

    pub fn remove_verdict(&mut self, id: CgroupId) -> anyhow::Result<()> {
        match self.verdicts.remove(&id.0) {
            Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(err) => Err(err).with_context(|| format!("removing the verdict of cgroup {id}")),
        }
    }

    /// Registers `parent` as a container parent: from now on every cgroup created under it starts
    /// with an explicit deny (written by the `cgroup_mkdir` program).
    pub fn admit_children_denied(&mut self, parent: CgroupId) -> anyhow::Result<()> {
        self.admission
            .insert(parent.0, ADMIT_CHILDREN_DENIED, 0)
            .with_context(|| format!("registering container parent cgroup {parent}"))
    }

    /// The registered container parents.
    pub fn container_parents(&self) -> Vec<CgroupId> {
        let mut all: Vec<_> = self
            .admission
            .keys()
            .filter_map(Result::ok)
            .map(CgroupId)
            .collect();
        all.sort();
        all
    }

    pub fn verdicts(&self) -> Vec<(CgroupId, CgroupVerdict)> {
        let mut all: Vec<_> = self
            .verdicts
            .iter()
            .filter_map(Result::ok)
            .map(|(id, verdict)| (CgroupId(id), verdict))
            .collect();
        all.sort_by_key(|(id, _)| *id);
        all
    }
}

/// An `O_PATH` fd: enough to name the inode, grants no access to it.
fn open_path(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {} (O_PATH)", path.display()))
}

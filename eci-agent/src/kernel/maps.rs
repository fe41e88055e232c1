//! The only writer of the BPF maps. Keys and values are eci-common's contract types.
//!
//! - Protected sockets: the inode is tagged through an `O_PATH` fd of the socket file (inode
//!   storage keys are fds; the kernel takes `fget_raw`, so `O_PATH` works and nothing is opened
//!   for reading or writing), and recorded in the index by `(st_dev, st_ino)`.
//! - Protected names: the parent directory of each protected socket is tagged the same way with
//!   the names it protects, so that the kernel tags a socket re-created under one of them itself
//!   (see eci-common); recorded in their own index with the directory's path, for `status`.
//! - Verdicts: cgroup id → allowed classes.
//! - Admission: container parents, whose new children the `cgroup_mkdir` program denies at birth.
//! - Approvals: allowed containers by id, whose cgroups the `cgroup_mkdir` program allows at birth.

use std::{
    ffi::{OsStr, OsString},
    fs::{File, OpenOptions},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{MetadataExt as _, OpenOptionsExt as _},
    },
    path::{Path, PathBuf},
};

use aya::maps::{HashMap, InodeStorage, Map, MapData, MapError};
use eci_common::{
    ADMIT_CHILDREN_DENIED, ApprovalKey, CONTAINER_ID_LEN, CgroupVerdict, DIR_PATH_BYTES, InodeKey,
    MAP_ADMISSION, MAP_APPROVALS, MAP_PROTECTED, MAP_PROTECTED_DIRS, MAP_PROTECTED_DIRS_INDEX,
    MAP_PROTECTED_INDEX, MAP_VERDICTS, MAX_NAMES_PER_DIR, PROTECTED_NAME_MAX, Protected,
    ProtectedDir, ProtectedDirRecord, ProtectedName,
};

use super::{
    error::{KernelError, Result},
    pins::PinLayout,
};
use crate::ids::{CgroupId, ContainerId};

pub struct KernelMaps {
    protected: InodeStorage<MapData, Protected>,
    index: HashMap<MapData, InodeKey, Protected>,
    verdicts: HashMap<MapData, u64, CgroupVerdict>,
    admission: HashMap<MapData, u64, u32>,
    dirs: InodeStorage<MapData, ProtectedDir>,
    dirs_index: HashMap<MapData, InodeKey, ProtectedDirRecord>,
    approvals: HashMap<MapData, ApprovalKey, CgroupVerdict>,
}

/// A protected name as `status` shows it: where, and what the kernel holds there now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameStatus {
    pub path: PathBuf,
    pub class: u32,
    /// The inode at `path` now and its tag; `None` when nothing is there.
    pub now: Option<(InodeKey, Option<Protected>)>,
}

impl KernelMaps {
    pub(super) fn from_maps(
        protected: Map,
        index: Map,
        verdicts: Map,
        admission: Map,
        dirs: Map,
        dirs_index: Map,
        approvals: Map,
    ) -> Result<Self> {
        let typed = |name: &'static str| KernelError::map(name, "taking with the expected type");
        Ok(Self {
            protected: protected.try_into().map_err(typed(MAP_PROTECTED))?,
            index: index.try_into().map_err(typed(MAP_PROTECTED_INDEX))?,
            verdicts: verdicts.try_into().map_err(typed(MAP_VERDICTS))?,
            admission: admission.try_into().map_err(typed(MAP_ADMISSION))?,
            dirs: dirs.try_into().map_err(typed(MAP_PROTECTED_DIRS))?,
            dirs_index: dirs_index
                .try_into()
                .map_err(typed(MAP_PROTECTED_DIRS_INDEX))?,
            approvals: approvals.try_into().map_err(typed(MAP_APPROVALS))?,
        })
    }

    /// Opens the maps an agent pinned (for `status`, `unload` and tests), without loading anything.
    pub fn open_pinned(pins: &PinLayout) -> Result<Self> {
        let open = |name: &'static str| -> Result<Map> {
            let path = pins.map(name);
            let data = MapData::from_pin(&path).map_err(KernelError::map(
                name,
                format!("opening the pin {}", path.display()),
            ))?;
            Map::from_map_data(data).map_err(KernelError::map(name, "reading its type"))
        };
        Self::from_maps(
            open(MAP_PROTECTED)?,
            open(MAP_PROTECTED_INDEX)?,
            open(MAP_VERDICTS)?,
            open(MAP_ADMISSION)?,
            open(MAP_PROTECTED_DIRS)?,
            open(MAP_PROTECTED_DIRS_INDEX)?,
            open(MAP_APPROVALS)?,
        )
    }

    /// Tags the socket file at `path` as protected with `class`. Idempotent; a socket re-created
    /// at the same path is a new inode and needs a new tag.
    pub fn protect(&mut self, path: &Path, class: u32) -> Result<InodeKey> {
        let file = open_path(path)?;
        let meta = file.metadata().map_err(KernelError::io("stat", path))?;
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
            .map_err(KernelError::map(
                MAP_PROTECTED,
                format!("tagging {}", path.display()),
            ))?;
        self.index.insert(key, tag, 0).map_err(KernelError::map(
            MAP_PROTECTED_INDEX,
            format!("recording {}", path.display()),
        ))?;
        Ok(key)
    }

    /// Protects the *name* `path`: its parent directory is tagged with the name and `class`, so
    /// that whatever inode appears under that name from now on (a socket re-created by a restarted
    /// engine) is tagged by the kernel the moment it gets the name. Idempotent; returns the
    /// directory's identity. The directory's own replacement is not covered (its new inode carries
    /// no tag): `ProtectedPath::refresh` notices that.
    pub fn protect_name(&mut self, path: &Path, class: u32) -> Result<InodeKey> {
        let (dir_path, name) = split_name(path)?;
        let protected_name =
            ProtectedName::new(name.as_bytes(), class).ok_or_else(|| KernelError::BadPath {
                path: path.to_owned(),
                why: format!(
                    "a protected name is one path component of at most {PROTECTED_NAME_MAX} bytes"
                ),
            })?;
        let dir = open_path(&dir_path)?;
        let key = inode_key(&dir, &dir_path)?;
        let mut tags = match self.dirs.get(&dir, 0) {
            Ok(tags) => tags,
            Err(MapError::KeyNotFound) => ProtectedDir::new(key.dev),
            Err(err) => {
                return Err(KernelError::map(
                    MAP_PROTECTED_DIRS,
                    format!("reading the tag of {}", dir_path.display()),
                )(err));
            }
        };
        tags.dev = key.dev;
        if !tags.insert(protected_name) {
            return Err(KernelError::BadPath {
                path: path.to_owned(),
                why: format!("its directory already protects {MAX_NAMES_PER_DIR} other names"),
            });
        }
        self.write_dir(&dir, &dir_path, key, tags)?;
        Ok(key)
    }

    /// Removes the tag of the socket file at `path` (if it still exists) from both maps, and the
    /// name from its directory's tag (the directory's tag goes when it protects no name).
    pub fn unprotect(&mut self, path: &Path) -> Result<()> {
        self.unprotect_name(path)?;
        let file = match open_path(path) {
            Ok(file) => file,
            Err(_) if !path.exists() => return Ok(()),
            Err(err) => return Err(err),
        };
        let meta = file.metadata().map_err(KernelError::io("stat", path))?;
        let _ = self.protected.remove(&file);
        let _ = self.index.remove(&InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        });
        Ok(())
    }

    /// Removes the name `path` from its directory's tag; nothing to do when the directory is gone
    /// or does not protect it.
    pub fn unprotect_name(&mut self, path: &Path) -> Result<()> {
        let (dir_path, name) = split_name(path)?;
        let Ok(dir) = open_path(&dir_path) else {
            return Ok(());
        };
        let key = inode_key(&dir, &dir_path)?;
        let mut tags = match self.dirs.get(&dir, 0) {
            Ok(tags) => tags,
            Err(MapError::KeyNotFound) => return Ok(()),
            Err(err) => {
                return Err(KernelError::map(
                    MAP_PROTECTED_DIRS,
                    format!("reading the tag of {}", dir_path.display()),
                )(err));
            }
        };
        if !tags.remove(name.as_bytes()) {
            return Ok(());
        }
        if tags.is_empty() {
            match self.dirs.remove(&dir) {
                Ok(()) => {}
                Err(err) if absent(&err) => {}
                Err(err) => {
                    return Err(KernelError::map(
                        MAP_PROTECTED_DIRS,
                        format!("removing the tag of {}", dir_path.display()),
                    )(err));
                }
            }
            self.forget_dir(&key);
            return Ok(());
        }
        self.write_dir(&dir, &dir_path, key, tags)
    }

    fn write_dir(
        &mut self,
        dir: &File,
        dir_path: &Path,
        key: InodeKey,
        tags: ProtectedDir,
    ) -> Result<()> {
        self.dirs.insert(dir, tags, 0).map_err(KernelError::map(
            MAP_PROTECTED_DIRS,
            format!("tagging {}", dir_path.display()),
        ))?;
        let record = ProtectedDirRecord {
            dir: tags,
            path: path_bytes(dir_path),
        };
        self.dirs_index
            .insert(key, record, 0)
            .map_err(KernelError::map(
                MAP_PROTECTED_DIRS_INDEX,
                format!("recording {}", dir_path.display()),
            ))
    }

    /// Drops the index entry of a directory that no longer carries a tag (or was replaced).
    pub fn forget_dir(&mut self, key: &InodeKey) {
        let _ = self.dirs_index.remove(key);
    }

    /// The tag the inode at `path` carries now (`None`: untagged).
    pub fn tag_of(&self, path: &Path) -> Result<Option<Protected>> {
        let file = open_path(path)?;
        match self.protected.get(&file, 0) {
            Ok(tag) => Ok(Some(tag)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(KernelError::map(
                MAP_PROTECTED,
                format!("reading the tag of {}", path.display()),
            )(err)),
        }
    }

    /// The tag the directory at `dir` carries now (`None`: it protects no name).
    pub fn dir_tag(&self, dir: &Path) -> Result<Option<ProtectedDir>> {
        let file = open_path(dir)?;
        match self.dirs.get(&file, 0) {
            Ok(tag) => Ok(Some(tag)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(err) => Err(KernelError::map(
                MAP_PROTECTED_DIRS,
                format!("reading the tag of {}", dir.display()),
            )(err)),
        }
    }

    /// The directory tags, as recorded in their index.
    pub fn protected_dirs(&self) -> Vec<(InodeKey, ProtectedDirRecord)> {
        let mut all: Vec<_> = self.dirs_index.iter().filter_map(Result::ok).collect();
        all.sort_by_key(|(key, _)| *key);
        all
    }

    /// Every protected name, with what is under it now.
    pub fn protected_names(&self) -> Vec<NameStatus> {
        let mut all = Vec::new();
        for (_, record) in self.protected_dirs() {
            let end = record
                .path
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(record.path.len());
            let dir = Path::new(OsStr::from_bytes(&record.path[..end]));
            for name in record.dir.used() {
                let path = dir.join(OsStr::from_bytes(name.bytes()));
                let now = open_path(&path).ok().and_then(|file| {
                    let key = inode_key(&file, &path).ok()?;
                    Some((key, self.protected.get(&file, 0).ok()))
                });
                all.push(NameStatus {
                    path,
                    class: name.class,
                    now,
                });
            }
        }
        all
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

    pub fn set_verdict(&mut self, id: CgroupId, verdict: CgroupVerdict) -> Result<()> {
        self.verdicts
            .insert(id.0, verdict, 0)
            .map_err(KernelError::map(
                MAP_VERDICTS,
                format!("setting the verdict of cgroup {id}"),
            ))
    }

    pub fn remove_verdict(&mut self, id: CgroupId) -> Result<()> {
        match self.verdicts.remove(&id.0) {
            Ok(()) => Ok(()),
            Err(err) if absent(&err) => Ok(()),
            Err(err) => Err(KernelError::map(
                MAP_VERDICTS,
                format!("removing the verdict of cgroup {id}"),
            )(err)),
        }
    }

    /// Approves container `id`: a cgroup created from now on with its name (under either driver,
    /// under any parent) gets `verdict` at creation (written by the `cgroup_mkdir` program).
    pub fn set_approval(&mut self, id: &ContainerId, verdict: CgroupVerdict) -> Result<()> {
        self.approvals
            .insert(approval_key(id), verdict, 0)
            .map_err(KernelError::map(
                MAP_APPROVALS,
                format!("approving container {id}"),
            ))
    }

    /// Withdraws the approval of container `id` (not there: not an error).
    pub fn remove_approval(&mut self, id: &ContainerId) -> Result<()> {
        match self.approvals.remove(&approval_key(id)) {
            Ok(()) => Ok(()),
            Err(err) if absent(&err) => Ok(()),
            Err(err) => Err(KernelError::map(
                MAP_APPROVALS,
                format!("withdrawing the approval of container {id}"),
            )(err)),
        }
    }

    /// The approved containers (ids as their hex digits) and the verdicts their cgroups get.
    pub fn approvals(&self) -> Vec<(String, CgroupVerdict)> {
        let mut all: Vec<_> = self
            .approvals
            .iter()
            .filter_map(Result::ok)
            .map(|(key, verdict)| (String::from_utf8_lossy(&key).into_owned(), verdict))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Registers `parent` as a container parent: from now on every cgroup created under it starts
    /// with an explicit deny (written by the `cgroup_mkdir` program).
    pub fn admit_children_denied(&mut self, parent: CgroupId) -> Result<()> {
        self.admission
            .insert(parent.0, ADMIT_CHILDREN_DENIED, 0)
            .map_err(KernelError::map(
                MAP_ADMISSION,
                format!("registering container parent cgroup {parent}"),
            ))
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

/// The [`MAP_APPROVALS`] key of a container: its id's hex digits, as they appear in its cgroup's
/// name.
fn approval_key(id: &ContainerId) -> ApprovalKey {
    let mut key = [0; CONTAINER_ID_LEN];
    key.copy_from_slice(id.as_str().as_bytes());
    key
}

/// The directory and the name the kernel will see for `path`: symbolic links resolved (those on
/// the way, and the last component itself when it is one), so that the directory tag lands where
/// the socket really is created.
fn split_name(path: &Path) -> Result<(PathBuf, OsString)> {
    let lexical = |path: &Path| -> Result<(PathBuf, OsString)> {
        let name = path.file_name().ok_or_else(|| KernelError::BadPath {
            path: path.to_owned(),
            why: "does not end in a file name".to_owned(),
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        Ok((dir, name.to_owned()))
    };
    if let Ok(resolved) = std::fs::canonicalize(path) {
        return lexical(&resolved);
    }
    // Nothing there now (the engine is restarting): resolve the directory alone.
    let (dir, name) = lexical(path)?;
    Ok((std::fs::canonicalize(&dir).unwrap_or(dir), name))
}

/// The identity of the directory that holds the protected name `path` (see [`split_name`]).
pub fn name_dir(path: &Path) -> Result<InodeKey> {
    let (dir_path, _) = split_name(path)?;
    let dir = open_path(&dir_path)?;
    inode_key(&dir, &dir_path)
}

fn inode_key(file: &File, path: &Path) -> Result<InodeKey> {
    let meta = file.metadata().map_err(KernelError::io("stat", path))?;
    Ok(InodeKey {
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

/// `path` NUL-padded into a record (cut if longer: it is only shown).
fn path_bytes(path: &Path) -> [u8; DIR_PATH_BYTES] {
    let mut out = [0; DIR_PATH_BYTES];
    let bytes = path.as_os_str().as_bytes();
    let n = bytes.len().min(DIR_PATH_BYTES - 1);
    out[..n].copy_from_slice(&bytes[..n]);
    out
}

/// An `O_PATH` fd: enough to name the inode, grants no access to it.
fn open_path(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
        .open(path)
        .map_err(KernelError::io("opening (O_PATH)", path))
}

/// Whether a removal failed only because the key was not there: aya's `remove` reports the
/// kernel's ENOENT as a failed `bpf_map_delete_elem`, not as `KeyNotFound`. Nothing to remove is
/// the outcome asked for (a withdrawal of an approval that was never written, or already used).
fn absent(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(err) => err.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

#[cfg(test)]
mod absent_tests {
    use super::*;

    #[test]
    fn a_missing_key_is_nothing_to_remove_and_other_failures_are_errors() {
        let syscall = |errno| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(absent(&syscall(libc::ENOENT)));
        assert!(absent(&MapError::KeyNotFound));
        assert!(!absent(&syscall(libc::EPERM)));
    }
}

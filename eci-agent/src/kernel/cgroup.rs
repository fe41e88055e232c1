//! cgroup v2 identities. The kernel names a cgroup by its id, which on 64-bit kernels is the inode
//! number of its directory in the cgroup2 mount; user space names it by its path there.

use std::{
    fs, io,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use super::error::{KernelError, Result};
use crate::ids::CgroupId;

/// The cgroup2 hierarchy mounted at `root`.
#[derive(Clone, Debug)]
pub struct CgroupTree {
    root: PathBuf,
}

impl CgroupTree {
    /// Checks that `root` is a cgroup2 mount (it has `cgroup.controllers`; v1 has not).
    pub fn open(root: &Path) -> Result<Self> {
        if !root.join("cgroup.controllers").exists() {
            return Err(KernelError::BadPath {
                path: root.to_owned(),
                why: "not a cgroup v2 mount (no cgroup.controllers); eci-agent judges processes by their cgroup v2 id".to_owned(),
            });
        }
        Ok(Self {
            root: root.to_owned(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `rel` (a path relative to the mount; a leading `/` is allowed).
    pub fn dir(&self, rel: &Path) -> Result<PathBuf> {
        let mut dir = self.root.clone();
        for component in rel.components() {
            match component {
                Component::RootDir | Component::CurDir => {}
                Component::Normal(name) => dir.push(name),
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(KernelError::BadPath {
                        path: rel.to_owned(),
                        why: "a cgroup path must not contain '..'".to_owned(),
                    });
                }
            }
        }
        Ok(dir)
    }

    /// The id of the cgroup at `rel`.
    pub fn id(&self, rel: &Path) -> Result<CgroupId> {
        let dir = self.dir(rel)?;
        let meta = fs::metadata(&dir).map_err(KernelError::io("stat cgroup", &dir))?;
        Ok(CgroupId(meta.ino()))
    }

    /// `rels` split into the cgroups that exist now and those that do not (yet): a trusted slice
    /// may come later (systemd makes `user.slice` when logind starts or at the first login).
    pub fn split_present(&self, rels: &[PathBuf]) -> (Vec<PathBuf>, Vec<PathBuf>) {
        rels.iter().cloned().partition(|rel| self.id(rel).is_ok())
    }

    /// Creates the cgroup at `rel` if needed and returns its id.
    pub fn create(&self, rel: &Path) -> Result<CgroupId> {
        let dir = self.dir(rel)?;
        fs::create_dir_all(&dir).map_err(KernelError::io("creating cgroup", &dir))?;
        self.id(rel)
    }

    /// Moves process `pid` into the cgroup at `rel`.
    pub fn move_pid(&self, rel: &Path, pid: u32) -> Result<()> {
        let procs = self.dir(rel)?.join("cgroup.procs");
        fs::write(&procs, pid.to_string()).map_err(KernelError::io("moving a pid into", procs))
    }

    /// The path (relative to the mount) of the cgroup with `id`, by walking the tree; `None` when
    /// it no longer exists.
    pub fn path_of(&self, id: CgroupId) -> Option<PathBuf> {
        fn walk(dir: &Path, id: u64, depth: usize) -> Option<PathBuf> {
            if fs::metadata(dir).ok()?.ino() == id {
                return Some(dir.to_owned());
            }
            if depth == 0 {
                return None;
            }
            for entry in fs::read_dir(dir).ok()?.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && let Some(found) = walk(&entry.path(), id, depth - 1)
                {
                    return Some(found);
                }
            }
            None
        }
        let found = walk(&self.root, id.0, eci_common::MAX_CGROUP_DEPTH as usize)?;
        Some(Path::new("/").join(found.strip_prefix(&self.root).ok()?))
    }
}

/// The cgroup v2 path of process `pid`, from the `0::` line of `/proc/PID/cgroup`.
pub fn cgroup_of_pid(pid: u32) -> io::Result<PathBuf> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    parse_unified_line(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("pid {pid} has no cgroup v2 entry"),
        )
    })
}

/// The path of the unified (v2) hierarchy in a `/proc/PID/cgroup` text.
pub fn parse_unified_line(text: &str) -> Option<PathBuf> {
    text.lines()
        .find_map(|line| line.strip_prefix("0::"))
        .map(|path| PathBuf::from(path.trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_line_is_found_among_v1_lines() {
        let text = "12:pids:/docker/abc\n0::/system.slice/eci.service\n1:name=systemd:/x\n";
        assert_eq!(
            parse_unified_line(text),
            Some(PathBuf::from("/system.slice/eci.service"))
        );
        assert_eq!(parse_unified_line("3:memory:/\n"), None);
    }

    #[test]
    fn dir_refuses_parent_components() {
        let tree = CgroupTree {
            root: PathBuf::from("/sys/fs/cgroup"),
        };
        assert_eq!(
            tree.dir(Path::new("/a/b")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        assert_eq!(
            tree.dir(Path::new("/")).unwrap(),
            PathBuf::from("/sys/fs/cgroup")
        );
        assert!(tree.dir(Path::new("a/../../etc")).is_err());
    }
}

//! The protected socket paths: the public socket bound already protected, and a protected path
//! watched so that a socket re-created there (a restarted engine) is protected again.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
};

use eci_common::CLASS_PUBLIC;

use super::{
    error::{KernelError, Result},
    maps::KernelMaps,
};

/// Binds the public socket so that it is protected before anyone can connect: it is bound in a
/// private (0700) directory beside `path`, tagged, and only then renamed into place (a rename keeps
/// the inode, and with it the tag). The name `path` is protected too, so that a socket someone
/// else binds there later (the agent gone) is tagged by the kernel at creation.
pub fn bind_protected(path: &Path, maps: &mut KernelMaps) -> Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".eci-agent-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).map_err(KernelError::io("creating", &staging))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))
        .map_err(KernelError::io("chmod 0700", &staging))?;
    let result = (|| {
        let tmp = staging.join("sock");
        let listener = UnixListener::bind(&tmp).map_err(KernelError::io("binding", &tmp))?;
        maps.protect(&tmp, CLASS_PUBLIC)?;
        maps.protect_name(path, CLASS_PUBLIC)?;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(KernelError::io("removing stale", path)(err)),
        }
        fs::rename(&tmp, path).map_err(KernelError::io("moving the socket to", path))?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// Protects the public socket that systemd bound and passed (`eci-agent.socket`): its inode and
/// its name. Its inode stays for as long as the socket unit does, across agent restarts.
pub fn protect_activated(path: &Path, maps: &mut KernelMaps) -> Result<()> {
    maps.protect_name(path, CLASS_PUBLIC)?;
    maps.protect(path, CLASS_PUBLIC)?;
    Ok(())
}

/// A protected socket path. The tag belongs to the inode, and a socket re-created at the path
/// (the engine restarted) is a new inode. The kernel tags it itself, at creation, from the tag on
/// its directory (`KernelMaps::protect_name`), with or without a running agent; this watch is the
/// second line: it tags the inode at the path when that did not happen (the directory itself was
/// replaced, so its new inode carries no tag; or the kernel could not store the tag), and tags a
/// replaced directory again.
#[derive(Debug)]
pub struct ProtectedPath {
    path: PathBuf,
    class: u32,
    key: Option<eci_common::InodeKey>,
    dir: Option<eci_common::InodeKey>,
}

/// What [`ProtectedPath::refresh`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Nothing new (or nothing at the path now).
    Unchanged,
    /// A new inode, already tagged by the kernel when it was created.
    TaggedByKernel,
    /// A new inode without a tag, tagged now (it was reachable until now).
    TaggedNow,
}

impl ProtectedPath {
    /// Protects the name `path` (its directory's tag) and the inode there now, and remembers both.
    pub fn new(path: PathBuf, class: u32, maps: &mut KernelMaps) -> Result<Self> {
        // The name first: a socket re-created between the two steps is then tagged by the kernel.
        let dir = maps.protect_name(&path, class)?;
        let key = maps.protect(&path, class)?;
        Ok(Self {
            path,
            class,
            key: Some(key),
            dir: Some(dir),
        })
    }

    /// Tags the directory again when it was replaced, and the inode at the path when it is another
    /// one than the tagged one. A missing path is not an error: the engine may be restarting.
    pub fn refresh(&mut self, maps: &mut KernelMaps) -> Result<Refreshed> {
        use std::os::unix::fs::MetadataExt as _;
        if let Ok(dir) = super::maps::name_dir(&self.path)
            && self.dir != Some(dir)
        {
            if let Some(old) = self.dir.take() {
                maps.forget_dir(&old);
            }
            self.dir = Some(maps.protect_name(&self.path, self.class)?);
            tracing::warn!(path = %self.path.display(), "the socket's directory was replaced; protected the name in the new one");
        }
        let Ok(meta) = fs::metadata(&self.path) else {
            return Ok(Refreshed::Unchanged);
        };
        let now = eci_common::InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.key == Some(now) {
            return Ok(Refreshed::Unchanged);
        }
        let by_kernel = maps
            .tag_of(&self.path)?
            .is_some_and(|tag| tag.class == self.class);
        if let Some(old) = self.key.take() {
            maps.forget(&old);
        }
        // Also when the kernel tagged it: this records it in the index `status` reads.
        self.key = Some(maps.protect(&self.path, self.class)?);
        if by_kernel {
            tracing::info!(path = %self.path.display(), "socket re-created; the kernel protected the new inode at creation");
            Ok(Refreshed::TaggedByKernel)
        } else {
            tracing::warn!(path = %self.path.display(), "socket re-created without a tag (its directory was replaced?); protected the new inode now");
            Ok(Refreshed::TaggedNow)
        }
    }
}

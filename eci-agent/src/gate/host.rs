//! The host side of the socket-mount gate: resolving mount sources the way the engine will see
//! them (every symlink followed, then device and inode), in the agent's mount namespace, which
//! is the engine's when the agent runs beside it on the host or in the eci VM.

use std::{
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::Context as _;

use crate::policy::mount::{HostPath, HostPaths, ProtectedSocket};

/// `realpath` + `stat` on this host.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealHost;

impl HostPaths for RealHost {
    fn resolve(&self, path: &Path) -> HostPath {
        match std::fs::canonicalize(path) {
            Ok(real) => match std::fs::metadata(&real) {
                Ok(meta) => HostPath::Exists {
                    real,
                    dev: meta.dev(),
                    ino: meta.ino(),
                    socket: meta.file_type().is_socket(),
                },
                Err(_) => HostPath::Unknown,
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // A missing source is created empty by the engine — unless a dangling symlink
                // sits there, which the engine would follow; judge that as unknown.
                if std::fs::symlink_metadata(path).is_ok() {
                    HostPath::Unknown
                } else {
                    HostPath::Missing
                }
            }
            Err(_) => HostPath::Unknown,
        }
    }
}

/// The socket at `path` as the gate compares mount sources with it.
pub fn protected_socket(path: &Path) -> anyhow::Result<ProtectedSocket> {
    let real: PathBuf = std::fs::canonicalize(path)
        .with_context(|| format!("resolving the protected socket {}", path.display()))?;
    let meta = std::fs::metadata(&real).with_context(|| format!("stat {}", real.display()))?;
    Ok(ProtectedSocket {
        real_path: real,
        dev: meta.dev(),
        ino: meta.ino(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_symlinks_and_tells_missing_from_dangling() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let HostPath::Exists { real, .. } = RealHost.resolve(&link) else {
            panic!("link not resolved")
        };
        assert_eq!(real, std::fs::canonicalize(&target).unwrap());
        assert_eq!(
            RealHost.resolve(&dir.path().join("none")),
            HostPath::Missing
        );
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert_eq!(RealHost.resolve(&dangling), HostPath::Unknown);
    }
}

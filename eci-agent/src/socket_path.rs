//! What may sit at the public socket's path before the agent binds it, and what the agent does
//! about it. dockerd creates a *directory* there when it restores a container that bind-mounts
//! the socket before anything listens at it (`--restart=always` at boot, or after `systemctl
//! restart docker`); an agent that then cannot bind leaves the host without Docker. So: a stale
//! socket is replaced, an empty directory is removed (loudly: it means a container was started
//! with a directory where the socket should be, and needs a restart), and anything else stops the
//! agent with an error naming the path and what is there: it is someone's data, never removed.

use std::{
    fs, io,
    os::unix::fs::FileTypeExt as _,
    path::{Path, PathBuf},
};

/// What is at the path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    Nothing,
    Socket,
    Directory,
    /// Any other file type, by name (`a regular file`, `a symbolic link`, …).
    Other(&'static str),
}

impl Found {
    pub fn of(path: &Path) -> io::Result<Self> {
        let meta = match fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Self::Nothing),
            Err(err) => return Err(err),
        };
        let kind = meta.file_type();
        Ok(if kind.is_socket() {
            Self::Socket
        } else if kind.is_dir() {
            Self::Directory
        } else if kind.is_file() {
            Self::Other("a regular file")
        } else if kind.is_symlink() {
            Self::Other("a symbolic link")
        } else if kind.is_fifo() {
            Self::Other("a named pipe")
        } else if kind.is_char_device() || kind.is_block_device() {
            Self::Other("a device node")
        } else {
            Self::Other("a file of unknown type")
        })
    }
}

/// What [`clear`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleared {
    Nothing,
    StaleSocket,
    EmptyDirectory,
}

/// Why the path cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SocketPathError {
    #[error(
        "{} is {what}, not a socket: eci-agent removes only a stale socket or an empty directory there; move it away and start the agent again",
        path.display()
    )]
    Occupied { path: PathBuf, what: &'static str },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl SocketPathError {
    /// Something that is not ours is there: only a person can fix it.
    pub fn is_occupied(&self) -> bool {
        matches!(self, Self::Occupied { .. })
    }
}

/// Makes `path` free for `bind(2)` (see the module's comment).
pub fn clear(path: &Path) -> Result<Cleared, SocketPathError> {
    let io = |op| {
        move |source| SocketPathError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    match Found::of(path).map_err(io("inspecting"))? {
        Found::Nothing => Ok(Cleared::Nothing),
        Found::Socket => match fs::remove_file(path) {
            Ok(()) => Ok(Cleared::StaleSocket),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Cleared::Nothing),
            Err(err) => Err(io("removing the stale socket")(err)),
        },
        // rmdir(2) removes only an empty directory: whatever is put in it meanwhile stays.
        Found::Directory => match fs::remove_dir(path) {
            Ok(()) => {
                tracing::warn!(
                    path = %path.display(),
                    "removed an empty directory at the socket path: the engine made it for a \
                     container that bind-mounts the socket and started before the socket \
                     existed; that container holds the directory, not the socket, until it is \
                     restarted"
                );
                Ok(Cleared::EmptyDirectory)
            }
            Err(err) if err.kind() == io::ErrorKind::DirectoryNotEmpty => {
                Err(SocketPathError::Occupied {
                    path: path.to_owned(),
                    what: "a directory that is not empty",
                })
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(Cleared::Nothing),
            Err(err) => Err(io("removing the empty directory")(err)),
        },
        Found::Other(what) => Err(SocketPathError::Occupied {
            path: path.to_owned(),
            what,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_be_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker.sock");
        assert_eq!(clear(&path).unwrap(), Cleared::Nothing);

        fs::create_dir(&path).unwrap();
        assert_eq!(clear(&path).unwrap(), Cleared::EmptyDirectory);
        assert!(!path.exists());

        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(listener);
        assert_eq!(clear(&path).unwrap(), Cleared::StaleSocket);
        assert!(!path.exists());

        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), "data").unwrap();
        let err = clear(&path).unwrap_err();
        assert!(
            err.to_string().contains(&format!(
                "{} is a directory that is not empty",
                path.display()
            )),
            "{err}"
        );
        assert!(
            path.join("keep").exists(),
            "nothing of someone's is removed"
        );
        fs::remove_dir_all(&path).unwrap();

        fs::write(&path, "data").unwrap();
        let err = clear(&path).unwrap_err();
        assert!(err.to_string().contains("is a regular file"), "{err}");
        fs::remove_file(&path).unwrap();

        std::os::unix::fs::symlink("/nonexistent", &path).unwrap();
        let err = clear(&path).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
    }
}

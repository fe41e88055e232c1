//! The one fake host for the policy's unit tests ([`super::mount`], [`super::profile`]):
//! resolves paths from a fixed table instead of the filesystem.

use std::{collections::HashMap, path::Path};

use super::mount::{HostPath, HostPaths};

/// `/run/docker.sock` is the socket (dev 1, ino 42), `/var/run` → `/run`, `/tmp/link` → the
/// socket, `/tmp/hard` a hard link to it, `/tmp/rootlink` → `/`; containerd's and an app's
/// sockets; the engine's data root; `/locked` cannot be resolved; anything else is missing.
pub struct FakeHost(HashMap<&'static str, HostPath>);

impl FakeHost {
    pub fn new() -> Self {
        let e = |real: &str, ino, socket| HostPath::Exists {
            real: real.into(),
            dev: 1,
            ino,
            socket,
        };
        Self(HashMap::from([
            ("/", e("/", 2, false)),
            ("/run", e("/run", 3, false)),
            ("/var", e("/var", 4, false)),
            ("/var/run", e("/run", 3, false)),
            ("/var/run/docker", e("/run/docker", 5, false)),
            ("/run/docker", e("/run/docker", 5, false)),
            ("/run/docker.sock", e("/run/docker.sock", 42, true)),
            ("/var/run/docker.sock", e("/run/docker.sock", 42, true)),
            ("/tmp/link", e("/run/docker.sock", 42, true)),
            ("/tmp/hard", e("/tmp/hard", 42, true)),
            ("/tmp/rootlink", e("/", 2, false)),
            (
                "/run/containerd/containerd.sock",
                e("/run/containerd/containerd.sock", 43, true),
            ),
            ("/srv/app.sock", e("/srv/app.sock", 44, true)),
            ("/srv/data", e("/srv/data", 7, false)),
            ("/run/user", e("/run/user", 10, false)),
            ("/var/lib", e("/var/lib", 8, false)),
            ("/var/lib/docker", e("/var/lib/docker", 9, false)),
            ("/locked", HostPath::Unknown),
        ]))
    }
}

impl HostPaths for FakeHost {
    fn resolve(&self, path: &Path) -> HostPath {
        self.0
            .get(path.to_str().unwrap_or(""))
            .cloned()
            .unwrap_or(HostPath::Missing)
    }
}

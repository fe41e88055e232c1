//! Can a container's mounts reach a protected socket? ([`SocketGate::check`]): a bind source
//! reaches the socket when, after resolving symlinks on the host, it is the socket (same device
//! and inode: also catches hard links), or an ancestor directory of it. The resolving is I/O,
//! so it is behind [`HostPaths`]; the mounts come decoded from [`super::wire`].
//!
//! Anything the gate cannot judge (an unexpanded `VolumesFrom`, a volume whose options are
//! unknown, a path that cannot be resolved) counts as reaching the socket: the image check then
//! decides, so an allowed image still works and nothing unknown slips through.

use std::path::{Path, PathBuf};

use super::{path_clean::path_clean, wire::MountSpec};

/// A socket to protect, as the edge found it on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedSocket {
    /// Its path with every symlink resolved.
    pub real_path: PathBuf,
    pub dev: u64,
    pub ino: u64,
}

/// What the host says about a path after resolving every symlink in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPath {
    Exists {
        real: PathBuf,
        dev: u64,
        ino: u64,
        /// A unix socket (the container-caller profile refuses host sockets).
        socket: bool,
    },
    /// Nothing there: the daemon will create an empty directory.
    Missing,
    /// Could not be resolved (permissions, loops): judged as reaching.
    Unknown,
}

/// The I/O seam: realpath + stat on the host, in the daemon's mount namespace.
pub trait HostPaths {
    fn resolve(&self, path: &Path) -> HostPath;
}

/// Why a mount counts as reaching the socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReachKind {
    /// The source is the socket, a symlink to it, or a hard link (same device and inode).
    IsSocket,
    /// The source is a directory above the socket (`/var/run`, `/run`, `/`).
    Ancestor,
    /// Under `/proc`, whose `<pid>/root` links lead to the whole host filesystem.
    ProcFs,
    /// A volume whose options bind-mount a host path that reaches the socket.
    BindVolume(Box<ReachKind>),
    /// Not decided by the gate: an unexpanded VolumesFrom or a volume with unknown options.
    Unresolved,
    /// The host path could not be resolved.
    Unverifiable,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    pub mount: MountSpec,
    pub kind: ReachKind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountVerdict {
    /// No mount can reach a protected socket.
    Clear,
    /// The first mount that can (then only an allowed image may run).
    Reaches(Reach),
}

#[derive(Clone, Debug, Default)]
pub struct SocketGate {
    sockets: Vec<ProtectedSocket>,
}

impl SocketGate {
    /// `sockets[0]` is the public socket (the one allowed images may mount); the others
    /// (the engine's own socket) are protected as well.
    pub fn new(sockets: Vec<ProtectedSocket>) -> Self {
        Self { sockets }
    }

    /// The public socket: the only host socket a container caller may mount.
    pub fn public(&self) -> Option<&ProtectedSocket> {
        self.sockets.first()
    }

    pub fn check(&self, mounts: &[MountSpec], host: &dyn HostPaths) -> MountVerdict {
        for m in mounts {
            if let Some(kind) = self.reach(m, host) {
                return MountVerdict::Reaches(Reach {
                    mount: m.clone(),
                    kind,
                });
            }
        }
        MountVerdict::Clear
    }

    fn reach(&self, m: &MountSpec, host: &dyn HostPaths) -> Option<ReachKind> {
        match m {
            MountSpec::Bind { source } => self.path_reach(source, host),
            MountSpec::Volume { options: None, .. } | MountSpec::VolumesFrom { .. } => {
                Some(ReachKind::Unresolved)
            }
            MountSpec::Volume {
                driver,
                options: Some(opts),
                ..
            } => {
                // Only the built-in local driver turns options into a host mount; a plugin
                // driver's options are its own business.
                if !(driver.is_empty() || driver == "local") {
                    return None;
                }
                let device = opts.get("device")?;
                let binds = opts.get("o").is_some_and(|o| {
                    o.split(',')
                        .any(|t| t.trim() == "bind" || t.trim() == "rbind")
                });
                if !binds {
                    return None;
                }
                let device = if device.starts_with('/') {
                    path_clean(device)
                } else {
                    path_clean(&format!("/{device}"))
                };
                self.path_reach(&device, host)
                    .map(|k| ReachKind::BindVolume(Box::new(k)))
            }
            MountSpec::NoHostPath => None,
        }
    }

    fn path_reach(&self, source: &str, host: &dyn HostPaths) -> Option<ReachKind> {
        let source = path_clean(source);
        if source == "/proc" || source.starts_with("/proc/") {
            return Some(ReachKind::ProcFs);
        }
        match host.resolve(Path::new(&source)) {
            HostPath::Exists { real, dev, ino, .. } => self.sockets.iter().find_map(|s| {
                if (s.dev, s.ino) == (dev, ino) {
                    Some(ReachKind::IsSocket)
                } else if s.real_path.starts_with(&real) {
                    Some(if s.real_path == real {
                        ReachKind::IsSocket
                    } else {
                        ReachKind::Ancestor
                    })
                } else {
                    None
                }
            }),
            HostPath::Missing => None,
            HostPath::Unknown => Some(ReachKind::Unverifiable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{
        fake_host::FakeHost,
        wire::{decode_container_inspect, decode_create_body},
    };

    fn gate() -> SocketGate {
        SocketGate::new(vec![ProtectedSocket {
            real_path: "/run/docker.sock".into(),
            dev: 1,
            ino: 42,
        }])
    }

    fn check_body(body: &str) -> MountVerdict {
        let b = decode_create_body(body.as_bytes()).unwrap();
        gate().check(&b.mounts(), &FakeHost::new())
    }

    #[test]
    fn gate_table() {
        // (create body, reaches?)
        let cases: &[(&str, bool)] = &[
            (r#"{"Image":"x"}"#, false),
            (
                r#"{"HostConfig":{"Binds":["/var/run/docker.sock:/var/run/docker.sock"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/run/docker.sock:/s:ro"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["//var/run/./docker.sock/:/s"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/var/run/../run/docker.sock:/s"]}}"#,
                true,
            ),
            (r#"{"HostConfig":{"Binds":["/var/run:/x"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/:/host"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/var:/host"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["/tmp/link:/s"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/tmp/hard:/s"]}}"#, true),
            (
                r#"{"HostConfig":{"Binds":["/proc/1/root/run/docker.sock:/s"]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Binds":["/srv/data:/data","/run/user:/u"]}}"#,
                false,
            ),
            (r#"{"HostConfig":{"Binds":["/locked:/x"]}}"#, true),
            (r#"{"HostConfig":{"Binds":["/new/dir:/x"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["/data"]}}"#, false),
            (r#"{"HostConfig":{"Binds":["namedvol:/data"]}}"#, true),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/var/run/docker.sock","Target":"/s"}]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"tmpfs","Target":"/t"}]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v"}]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/run"}}}}]}}"#,
                true,
            ),
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"o":"ro,rbind","device":"/srv/data"}}}}]}}"#,
                false,
            ),
            (r#"{"HostConfig":{"VolumesFrom":["other:ro"]}}"#, true),
            // Go's rules: case-insensitive keys, Kelvin sign folds to K.
            (r#"{"hostconfig":{"binds":["/run:/x"]}}"#, true),
            (r#"{"HOSTCONFIG":{"BINDS":["/run:/x"]}}"#, true),
            (
                r#"{"HostConfig":{"mounts":[{"type":"bind","\u017Fource":"/run"}]}}"#,
                true,
            ),
            // Last duplicate wins...
            (
                r#"{"HostConfig":{"Binds":["/run:/x"],"binds":["/srv/data:/x"]}}"#,
                false,
            ),
            (
                r#"{"HostConfig":{"Binds":["/srv/data:/x"],"binds":["/run:/x"]}}"#,
                true,
            ),
            // ... but merges into what the first left: Type and Source survive a second Mounts.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":[{"Target":"/b"}]}}"#,
                true,
            ),
            // Stale elements between len and cap come back.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":[],"MOUNTS":[{"Target":"/b"}]}}"#,
                true,
            ),
            // null resets the slice, so nothing stale is left.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"bind","Source":"/run","Target":"/a"}],"mounts":null,"MOUNTS":[{"Type":"tmpfs","Target":"/b"}]}}"#,
                false,
            ),
            // A null string element keeps the old value.
            (
                r#"{"HostConfig":{"Binds":["/run:/x"],"binds":[null]}}"#,
                true,
            ),
            // Maps merge across duplicates.
            (
                r#"{"HostConfig":{"Mounts":[{"Type":"volume","VolumeOptions":{"DriverConfig":{"Options":{"o":"bind"}}},"volumeoptions":{"driverconfig":{"options":{"device":"/run"}}}}]}}"#,
                true,
            ),
            // HostConfig null clears earlier binds.
            (
                r#"{"HostConfig":{"Binds":["/run:/x"]},"hostConfig":null}"#,
                false,
            ),
        ];
        for (body, want) in cases {
            let v = check_body(body);
            assert_eq!(
                matches!(v, MountVerdict::Reaches(_)),
                *want,
                "{body} -> {v:?}"
            );
        }
    }

    #[test]
    fn inspect_mounts() {
        let body = br#"{"Id":"c1","Image":"sha256:abc","Config":{"Image":"docker:cli"},
            "State":{"Running":true,"Pid":42},"HostConfig":{"CgroupParent":"/ci"},
            "Mounts":[{"Type":"bind","Source":"/run/docker.sock","Destination":"/s"},
                      {"Type":"volume","Name":"v1","Source":"/var/lib/docker/volumes/v1/_data","Driver":"local"}]}"#;
        let c = decode_container_inspect(body).unwrap();
        assert_eq!(
            (c.id.as_str(), c.running, c.pid, c.cgroup_parent.as_str()),
            ("c1", true, 42, "/ci")
        );
        assert_eq!(c.image_id, "sha256:abc");
        assert_eq!(c.config_image, "docker:cli");
        assert_eq!(
            c.mounts[0],
            MountSpec::Bind {
                source: "/run/docker.sock".into()
            }
        );
        assert_eq!(
            c.mounts[1],
            MountSpec::Volume {
                name: "v1".into(),
                driver: "local".into(),
                options: None
            }
        );
        assert!(matches!(
            gate().check(&c.mounts, &FakeHost::new()),
            MountVerdict::Reaches(Reach {
                kind: ReachKind::IsSocket,
                ..
            })
        ));
    }
}

//! The container-caller profile: what a container that holds the socket may *not* ask the
//! engine for. In Docker Desktop everything such a container starts is another ECI container;
//! here the engine would give it whatever the host's root could have, so a create request from
//! a container caller is refused when it asks for host-root-equivalent power: privileges, host
//! namespaces, capabilities that reach the host kernel, devices, unconfined security profiles,
//! a cgroup outside the container parents, and mounts that reach the host's kernel interfaces,
//! the engine's state or a host unix socket. Host callers are never judged by it.
//!
//! Pure: the create body is decoded by [`super::wire`], named volumes and `VolumesFrom` are
//! expanded by the gate, and host paths are resolved behind [`HostPaths`].

use std::{collections::BTreeMap, path::Path};

use super::{
    go_json::GoSlice,
    mount::{HostPath, HostPaths, ProtectedSocket},
    path_clean::path_clean,
    wire::{HostConfig, MountSpec},
};

/// Capabilities refused by default: each reaches the host kernel or other processes' memory
/// from a container whose user namespace is the host's. `ALL` adds them all.
pub const REFUSED_CAPABILITIES: &[&str] = &[
    "CAP_SYS_ADMIN",
    "CAP_SYS_PTRACE",
    "CAP_SYS_MODULE",
    "CAP_BPF",
    "CAP_PERFMON",
    "CAP_DAC_READ_SEARCH",
    "CAP_SYS_RAWIO",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_SYSLOG",
];

/// Every Linux capability the engine knows (moby `caps.GetAllCapabilities`), for validating
/// `allowCapabilities`.
pub const KNOWN_CAPABILITIES: &[&str] = &[
    "CAP_AUDIT_CONTROL",
    "CAP_AUDIT_READ",
    "CAP_AUDIT_WRITE",
    "CAP_BLOCK_SUSPEND",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_KILL",
    "CAP_LEASE",
    "CAP_LINUX_IMMUTABLE",
    "CAP_MAC_ADMIN",
    "CAP_MAC_OVERRIDE",
    "CAP_MKNOD",
    "CAP_NET_ADMIN",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_RAW",
    "CAP_PERFMON",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_CHROOT",
    "CAP_SYS_MODULE",
    "CAP_SYS_NICE",
    "CAP_SYS_PACCT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
];

/// The engine's capability spelling (moby `caps.NormalizeLegacyCapabilities`): upper case, with
/// the `CAP_` prefix; `ALL` stays `ALL`.
pub fn normalize_capability(raw: &str) -> String {
    let up = raw.to_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// A namespace a container may share with the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Namespace {
    Pid,
    Ipc,
    Cgroup,
    User,
    /// The host's network namespace holds its abstract unix sockets and its loopback services
    /// (an engine or containerd listening on 127.0.0.1); Docker Desktop's ECI refuses it too.
    Network,
}

impl Namespace {
    pub const ALL: [Self; 5] = [
        Self::Pid,
        Self::Ipc,
        Self::Cgroup,
        Self::User,
        Self::Network,
    ];

    /// The name in `allowHostNamespaces`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pid => "pid",
            Self::Ipc => "ipc",
            Self::Cgroup => "cgroup",
            Self::User => "user",
            Self::Network => "network",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|n| n.as_str() == s)
    }

    /// The request's mode for it (`host`, `private`, `container:X` …).
    pub fn mode(self, hc: &HostConfig) -> &str {
        match self {
            Self::Pid => &hc.pid_mode,
            Self::Ipc => &hc.ipc_mode,
            Self::Cgroup => &hc.cgroupns_mode,
            Self::User => &hc.userns_mode,
            Self::Network => &hc.network_mode,
        }
    }

    /// The other container whose namespace `hc` joins (`container:X`; the engine lets only the
    /// PID, IPC and network modes name one, and compares the prefix exactly).
    pub fn joins(self, hc: &HostConfig) -> Option<&str> {
        match self {
            Self::Pid | Self::Ipc | Self::Network => self.mode(hc).strip_prefix("container:"),
            Self::Cgroup | Self::User => None,
        }
    }
}

/// A namespace a request shares with another container (`--pid=container:X`): exactly as
/// powerful as that container's own, so it is judged as that container's mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Joined {
    pub ns: Namespace,
    /// The container as the request names it.
    pub container: String,
    /// That container's mode for `ns` as the engine reports it, its own joins followed to the
    /// end (`host`, `private`, `none` …).
    pub mode: String,
}

/// What a container caller does with a container that exists already. Each gives it that
/// container's power (a process inside it, or its PID 1's terminal), so each is judged by the
/// profile on the engine's stored configuration of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerUse {
    /// `start` and `restart`.
    Start,
    /// `exec` (creating the exec process).
    Exec,
    /// `attach`, over HTTP or a websocket.
    Attach,
    /// `docker cp` (`PUT`, `GET` and `HEAD` of `/containers/{id}/archive`, and the old `POST
    /// …/copy`): it writes and reads through the container's mounts, so into a container that
    /// binds the host's `/` it writes the host's files.
    Copy,
}

impl ContainerUse {
    /// As the refusal says it: `starting container "web"`.
    pub fn doing(self) -> &'static str {
        match self {
            Self::Start => "starting",
            Self::Exec => "running a command in",
            Self::Attach => "attaching to",
            Self::Copy => "copying files to or from",
        }
    }
}

/// Where the configuration judged comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A create body: what the request asks for, before the engine fills in its defaults.
    Request,
    /// The engine's stored configuration of an existing container, defaults filled in. On a
    /// cgroup v1 engine the default cgroup namespace is the host's (`cgroupns_host_default`):
    /// every plain container has it, one a container caller creates too, so it is no breach.
    Stored { cgroupns_host_default: bool },
}

/// A confinement a container may ask to lift with `--security-opt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Confinement {
    Seccomp,
    AppArmor,
    Label,
    SystemPaths,
}

impl Confinement {
    pub const ALL: [Self; 4] = [
        Self::Seccomp,
        Self::AppArmor,
        Self::Label,
        Self::SystemPaths,
    ];

    /// The name in `allowUnconfined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Seccomp => "seccomp",
            Self::AppArmor => "apparmor",
            Self::Label => "label",
            Self::SystemPaths => "systempaths",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The profile in force: everything refused unless relaxed in the settings
/// (`eciAgent.containerProfile`, see `settings`). `Default` is the strict profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerProfile {
    /// `allowPrivileged`.
    pub allow_privileged: bool,
    /// `allowHostNamespaces`.
    pub allow_host_namespaces: Vec<Namespace>,
    /// `allowCapabilities`, normalised (`CAP_…` or `ALL`).
    pub allow_capabilities: Vec<String>,
    /// `allowDevices`: `Devices`, `DeviceCgroupRules` and `DeviceRequests`.
    pub allow_devices: bool,
    /// `allowUnconfined`.
    pub allow_unconfined: Vec<Confinement>,
    /// `allowAnyCgroupParent`.
    pub allow_any_cgroup_parent: bool,
    /// `allowHostPaths`: host paths that may be mounted, with everything under them, whatever
    /// they reach (a protected path, a host socket), cleaned.
    pub allow_host_paths: Vec<String>,
    /// `protectedPaths`: more host paths to refuse (with everything under them), cleaned.
    pub protected_paths: Vec<String>,
    /// `engineExecRoot`: the engine's `--exec-root`, cleaned; `None` is [`DEFAULT_EXEC_ROOT`].
    /// Not a relaxation: where the engine keeps what the profile protects, which `GET /info`
    /// does not say.
    pub engine_exec_root: Option<String>,
}

impl ContainerProfile {
    /// The engine's exec root the profile protects.
    pub fn exec_root(&self) -> &str {
        self.engine_exec_root
            .as_deref()
            .unwrap_or(DEFAULT_EXEC_ROOT)
    }
}

/// A host path a container caller may not mount: the path, an ancestor of it, or (for a
/// subtree) anything under it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtectedPath {
    pub path: String,
    /// Everything under it is protected too (`/proc`, `/sys`, the engine's data root …); `/`
    /// protects only itself (its descendants are judged on their own).
    pub subtree: bool,
    /// What it is, for the refusal.
    pub what: &'static str,
    /// Where it really is, symlinks resolved ([`HostLayout::resolve`]); `None`: not resolved
    /// yet, so each mount judged resolves it (one `realpath` per protected path and mount).
    pub real: Option<String>,
}

/// Where things are on this host: what the profile protects and the public socket.
#[derive(Clone, Debug, Default)]
pub struct HostLayout {
    pub protected: Vec<ProtectedPath>,
    /// The public socket (allowed images may mount it; the image check judges that).
    pub public_socket: Option<ProtectedSocket>,
}

/// The engine's default exec root (`--exec-root`): its runtime state and containerd shims.
pub const DEFAULT_EXEC_ROOT: &str = "/var/run/docker";

impl HostLayout {
    /// The default protected set: the host's root, its kernel interfaces, the engine's data and
    /// exec roots, the sockets of containerd, D-Bus and systemd, and the agent's own state
    /// (`agent_state`: its settings directory, its runtime directory). `extra` adds more.
    pub fn new(
        data_root: &str,
        exec_root: &str,
        agent_state: &[String],
        extra: &[String],
        public_socket: Option<ProtectedSocket>,
    ) -> Self {
        let p = |path: &str, subtree, what| ProtectedPath {
            path: path_clean(path),
            subtree,
            what,
            real: None,
        };
        let mut protected = vec![
            p("/", false, "the host's root"),
            p("/proc", true, "the host's /proc"),
            // The most specific first, so a refusal names what the mount reaches.
            p("/sys/fs/cgroup", true, "the host's cgroups"),
            p("/sys/fs/bpf", true, "the host's BPF pins"),
            p("/sys", true, "the host's /sys"),
            p("/dev", true, "the host's devices"),
            p("/run/containerd", true, "containerd's sockets"),
            p("/var/run/containerd", true, "containerd's sockets"),
            p("/run/dbus", true, "the D-Bus socket"),
            p("/var/run/dbus", true, "the D-Bus socket"),
            p("/run/systemd", true, "systemd's sockets"),
            p("/var/run/systemd", true, "systemd's sockets"),
            p("/run/eci", true, "the eci-agent's runtime state"),
        ];
        if !data_root.is_empty() {
            protected.push(p(data_root, true, "the engine's data root"));
        }
        if !exec_root.is_empty() {
            protected.push(p(exec_root, true, "the engine's exec root"));
        }
        for s in agent_state {
            protected.push(p(s, true, "the eci-agent's state"));
        }
        for e in extra {
            protected.push(p(
                e,
                true,
                "a protected path (eciAgent.containerProfile.protectedPaths)",
            ));
        }
        Self {
            protected,
            public_socket,
        }
    }
}

impl HostLayout {
    /// Resolves where each protected path really is, once, so that judging a request costs a
    /// `realpath` per mount rather than one per mount and protected path (about 16 each: 80 µs
    /// of a 2-mount create's decision went there). The gate keeps the resolved layout while the
    /// settings last: these are the host's system paths, which only its root moves.
    pub fn resolve(&mut self, host: &dyn HostPaths) {
        for p in &mut self.protected {
            p.real = Some(match host.resolve(Path::new(&p.path)) {
                HostPath::Exists { real, .. } => real.to_string_lossy().into_owned(),
                _ => p.path.clone(),
            });
        }
    }
}

/// One thing a create request asks for that the profile refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Breach {
    Privileged,
    HostNamespace(Namespace),
    /// Normalised (`CAP_SYS_ADMIN`, `ALL`).
    Capability(String),
    Devices,
    DeviceCgroupRules,
    DeviceRequests,
    SeccompUnconfined,
    /// A seccomp profile of the caller's own, which may allow every system call.
    SeccompCustom,
    AppArmorUnconfined,
    /// `label=disable` (either separator, or a bare `disable`) or an unconfined SELinux type.
    LabelDisabled,
    /// `MaskedPaths`/`ReadonlyPaths` without the engine's defaults (the CLI's
    /// `--security-opt systempaths=unconfined`).
    SystemPathsUnconfined,
    CgroupParent(String),
    /// A mount whose host source reaches a protected path.
    HostPath {
        source: String,
        reaches: String,
        what: &'static str,
    },
    /// A mount of a host unix socket other than the public one.
    HostSocket {
        source: String,
    },
    /// A local-driver volume that mounts a host filesystem (`type=proc`, a block device …).
    HostFilesystemVolume {
        name: String,
        fs: String,
    },
    /// A mount whose host side could not be resolved or looked up.
    Unverifiable {
        mount: String,
    },
    /// A host namespace reached by joining the container that has it (`--pid=container:X`).
    JoinedNamespace {
        ns: Namespace,
        container: String,
    },
    /// `docker exec --privileged`: a process with every capability in any container.
    PrivilegedExec,
}

impl Breach {
    /// A stable snake_case code, for metrics and the audit log.
    pub fn code(&self) -> &'static str {
        self.option().0
    }

    /// The settings field that relaxes it.
    pub fn relax_field(&self) -> &'static str {
        self.option().1
    }

    /// The option it breaches: its reason code and the field that relaxes it.
    fn option(&self) -> (&'static str, &'static str) {
        match self {
            Self::Privileged | Self::PrivilegedExec => ("profile_privileged", "allowPrivileged"),
            Self::HostNamespace(_) | Self::JoinedNamespace { .. } => {
                ("profile_host_namespace", "allowHostNamespaces")
            }
            Self::Capability(_) => ("profile_capability", "allowCapabilities"),
            Self::Devices | Self::DeviceCgroupRules | Self::DeviceRequests => {
                ("profile_devices", "allowDevices")
            }
            Self::SeccompUnconfined
            | Self::SeccompCustom
            | Self::AppArmorUnconfined
            | Self::LabelDisabled
            | Self::SystemPathsUnconfined => ("profile_unconfined", "allowUnconfined"),
            Self::CgroupParent(_) => ("profile_cgroup_parent", "allowAnyCgroupParent"),
            Self::HostPath { .. }
            | Self::HostSocket { .. }
            | Self::HostFilesystemVolume { .. }
            | Self::Unverifiable { .. } => ("profile_host_path", "allowHostPaths"),
        }
    }
}

/// Where a requested `CgroupParent` puts the container, as the gate's placement rules say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParentPlacement {
    /// Empty, or inside the engine's default container parent.
    ContainerParent,
    /// Anywhere else (the requested value).
    Outside(String),
}

/// What a create request asks for, decoded and expanded (or what an existing container has).
pub struct CreateRequest<'a> {
    pub host_config: Option<&'a HostConfig>,
    /// The request's mounts with named volumes' options and `VolumesFrom` filled in.
    pub mounts: &'a [MountSpec],
    pub parent: ParentPlacement,
    /// The namespaces it joins (`container:X`), resolved by the engine.
    pub joined: &'a [Joined],
    pub origin: Origin,
}

/// The engine's default masked and read-only paths (moby `oci.DefaultSpec`): a request that
/// sets either list without all of them unmasks part of the host's /proc or /sys. Each masked
/// path says whether every engine since 20.10 masks it (the list has only grown since): the
/// stored configuration of a plain container has at least those.
const DEFAULT_MASKED: &[(&str, bool)] = &[
    ("/proc/asound", true),
    ("/proc/acpi", true),
    ("/proc/interrupts", false),
    ("/proc/kcore", true),
    ("/proc/keys", true),
    ("/proc/latency_stats", true),
    ("/proc/timer_list", true),
    ("/proc/timer_stats", true),
    ("/proc/sched_debug", true),
    ("/proc/scsi", true),
    ("/sys/firmware", true),
    ("/sys/devices/virtual/powercap", false),
];
const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Local-driver volume types that mount nothing of the host (`tmpfs`) or a remote filesystem.
const HARMLESS_VOLUME_TYPES: &[&str] = &["tmpfs", "nfs", "nfs4", "cifs", "smb3"];

impl ContainerProfile {
    /// The first breach, in the order the options are listed (a refusal names one option).
    pub fn check(
        &self,
        req: &CreateRequest<'_>,
        layout: &HostLayout,
        host: &dyn HostPaths,
    ) -> Result<(), Breach> {
        match self.breaches(req, layout, host).into_iter().next() {
            Some(b) => Err(b),
            None => Ok(()),
        }
    }

    /// `docker exec`'s own option: `--privileged` gives the process every capability, whatever
    /// the container has (which [`Self::breaches`] judges on its stored configuration).
    pub fn exec_breach(&self, privileged: bool) -> Option<Breach> {
        (privileged && !self.allow_privileged).then_some(Breach::PrivilegedExec)
    }

    /// Every breach (for `explain --create`).
    pub fn breaches(
        &self,
        req: &CreateRequest<'_>,
        layout: &HostLayout,
        host: &dyn HostPaths,
    ) -> Vec<Breach> {
        let mut out = Vec::new();
        if let Some(hc) = req.host_config {
            self.host_config_breaches(hc, req.origin, &mut out);
        }
        for j in req.joined {
            if j.mode == "host" && !self.allow_host_namespaces.contains(&j.ns) {
                out.push(Breach::JoinedNamespace {
                    ns: j.ns,
                    container: j.container.clone(),
                });
            }
        }
        if let ParentPlacement::Outside(p) = &req.parent
            && !self.allow_any_cgroup_parent
        {
            out.push(Breach::CgroupParent(p.clone()));
        }
        for m in req.mounts {
            if let Some(b) = self.mount_breach(m, layout, host)
                && !out.contains(&b)
            {
                out.push(b);
            }
        }
        out
    }

    fn host_config_breaches(&self, hc: &HostConfig, origin: Origin, out: &mut Vec<Breach>) {
        if hc.privileged && !self.allow_privileged {
            out.push(Breach::Privileged);
        }
        for ns in Namespace::ALL {
            let engine_default = ns == Namespace::Cgroup
                && origin
                    == Origin::Stored {
                        cgroupns_host_default: true,
                    };
            // The engine compares exactly (`PidMode.IsHost`: `== "host"`).
            if ns.mode(hc) == "host" && !engine_default && !self.allow_host_namespaces.contains(&ns)
            {
                out.push(Breach::HostNamespace(ns));
            }
        }
        let allowed_all = self.allow_capabilities.iter().any(|c| c == "ALL");
        for raw in &hc.cap_add {
            let cap = normalize_capability(raw);
            let refused = cap == "ALL" || REFUSED_CAPABILITIES.contains(&cap.as_str());
            let relaxed = allowed_all || self.allow_capabilities.contains(&cap);
            let b = Breach::Capability(cap);
            if refused && !relaxed && !out.contains(&b) {
                out.push(b);
            }
        }
        if !self.allow_devices {
            if !hc.devices.items().is_empty() {
                out.push(Breach::Devices);
            }
            if !hc.device_cgroup_rules.items().is_empty() {
                out.push(Breach::DeviceCgroupRules);
            }
            if !hc.device_requests.items().is_empty() {
                out.push(Breach::DeviceRequests);
            }
        }
        let allow = |c| self.allow_unconfined.contains(&c);
        // The engine stores `label=disable` itself for a privileged container or one in the
        // host's PID or IPC namespace (moby `generateSecurityOpt`): those options are judged
        // on their own.
        let engine_label = matches!(origin, Origin::Stored { .. })
            && (hc.privileged || hc.pid_mode == "host" || hc.ipc_mode == "host");
        for opt in hc.security_opt.items() {
            let b = match security_opt(opt) {
                Some(("seccomp", v)) if !allow(Confinement::Seccomp) => match v {
                    "unconfined" => Some(Breach::SeccompUnconfined),
                    "builtin" | "" => None,
                    _ => Some(Breach::SeccompCustom),
                },
                Some(("apparmor", "unconfined")) if !allow(Confinement::AppArmor) => {
                    Some(Breach::AppArmorUnconfined)
                }
                Some(("label", "disable")) if engine_label => None,
                Some(("label", v)) if !allow(Confinement::Label) => {
                    // SELinux's unconfined domains are as good as no label at all.
                    (v == "disable" || v == "type:spc_t" || v == "type:unconfined_t")
                        .then_some(Breach::LabelDisabled)
                }
                _ => None,
            };
            if let Some(b) = b
                && !out.contains(&b)
            {
                out.push(b);
            }
        }
        if !allow(Confinement::SystemPaths) {
            let unmasks = |list: &GoSlice<String>, defaults: &[&str]| {
                list.is_set()
                    && !defaults
                        .iter()
                        .all(|d| list.items().iter().any(|p| path_clean(p) == *d))
            };
            let stored = matches!(origin, Origin::Stored { .. });
            let masked: Vec<&str> = DEFAULT_MASKED
                .iter()
                .filter(|(_, since_20_10)| *since_20_10 || !stored)
                .map(|(p, _)| *p)
                .collect();
            if unmasks(&hc.masked_paths, &masked) || unmasks(&hc.readonly_paths, DEFAULT_READONLY) {
                out.push(Breach::SystemPathsUnconfined);
            }
        }
    }

    fn mount_breach(
        &self,
        m: &MountSpec,
        layout: &HostLayout,
        host: &dyn HostPaths,
    ) -> Option<Breach> {
        match m {
            MountSpec::Bind { source } => self.path_breach(source, layout, host),
            MountSpec::Volume {
                name,
                driver,
                options,
            } => {
                let Some(opts) = options else {
                    return Some(Breach::Unverifiable {
                        mount: format!("volume {name:?}"),
                    });
                };
                // Only the built-in local driver mounts what its options say on the host.
                if !(driver.is_empty() || driver == "local") {
                    return None;
                }
                self.volume_breach(name, opts, layout, host)
            }
            MountSpec::VolumesFrom { container } => Some(Breach::Unverifiable {
                mount: format!("volumes from {container:?}"),
            }),
            MountSpec::NoHostPath => None,
        }
    }

    fn volume_breach(
        &self,
        name: &str,
        opts: &BTreeMap<String, String>,
        layout: &HostLayout,
        host: &dyn HostPaths,
    ) -> Option<Breach> {
        let fs = opts.get("type").map(String::as_str).unwrap_or("");
        let device = opts.get("device").map(String::as_str).unwrap_or("");
        let binds = opts.get("o").is_some_and(|o| {
            o.split(',')
                .any(|t| t.trim() == "bind" || t.trim() == "rbind")
        });
        if binds {
            let device = if device.starts_with('/') {
                path_clean(device)
            } else {
                path_clean(&format!("/{device}"))
            };
            return self.path_breach(&device, layout, host);
        }
        if (fs.is_empty() && device.is_empty()) || HARMLESS_VOLUME_TYPES.contains(&fs) {
            return None;
        }
        // proc, sysfs, cgroup2, bpf, a block device …: mounted by the engine in the host's
        // namespaces, so a `proc` volume is the host's /proc.
        Some(Breach::HostFilesystemVolume {
            name: name.to_owned(),
            fs: if fs.is_empty() {
                device.to_owned()
            } else {
                fs.to_owned()
            },
        })
    }

    fn path_breach(
        &self,
        source: &str,
        layout: &HostLayout,
        host: &dyn HostPaths,
    ) -> Option<Breach> {
        let source = path_clean(source);
        let resolved = host.resolve(Path::new(&source));
        let real = match &resolved {
            HostPath::Exists { real, .. } => Some(real.to_string_lossy().into_owned()),
            HostPath::Missing => None,
            HostPath::Unknown => {
                return (!self.allowed_source(&source)).then(|| Breach::Unverifiable {
                    mount: format!("host path {source:?}"),
                });
            }
        };
        let sources: Vec<&str> = [Some(source.as_str()), real.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        if sources.iter().any(|s| self.allowed_source(s)) {
            return None;
        }
        if let HostPath::Exists {
            dev, ino, socket, ..
        } = &resolved
        {
            let public = layout
                .public_socket
                .as_ref()
                .is_some_and(|p| (p.dev, p.ino) == (*dev, *ino));
            if public {
                // The image check decides who may mount the public socket.
                return None;
            }
            if *socket {
                return Some(Breach::HostSocket { source });
            }
        }
        for p in &layout.protected {
            let p_real = match &p.real {
                Some(real) => std::borrow::Cow::Borrowed(real.as_str()),
                None => match host.resolve(Path::new(&p.path)) {
                    HostPath::Exists { real, .. } => real.to_string_lossy().into_owned().into(),
                    _ => p.path.as_str().into(),
                },
            };
            let hit = sources.iter().any(|s| {
                [p.path.as_str(), &p_real]
                    .iter()
                    .any(|pp| reaches(s, pp, p.subtree))
            });
            if hit {
                return Some(Breach::HostPath {
                    source,
                    reaches: p.path.clone(),
                    what: p.what,
                });
            }
        }
        None
    }

    /// `allowHostPaths`: the source is an allowed path or under one.
    fn allowed_source(&self, source: &str) -> bool {
        self.allow_host_paths
            .iter()
            .any(|a| Path::new(source).starts_with(a))
    }
}

/// A mount of `source` reaches protected `p` when it is `p`, an ancestor of it, or (for a
/// subtree) under it. Compared by path component.
fn reaches(source: &str, p: &str, subtree: bool) -> bool {
    let (s, p) = (Path::new(source), Path::new(p));
    p.starts_with(s) || (subtree && s.starts_with(p))
}

/// One `SecurityOpt` entry as the engine splits it (moby `parseSecurityOpt`): a bare `disable`
/// is `label=disable`; `=` is the separator, or `:` when there is no `=`.
fn security_opt(opt: &str) -> Option<(&str, &str)> {
    if opt == "disable" {
        return Some(("label", "disable"));
    }
    if opt.contains('=') {
        opt.split_once('=')
    } else {
        opt.split_once(':')
    }
}

/// The effective profile, as `eci-agent check` prints it.
pub fn render(profile: &ContainerProfile) -> String {
    let refused_or = |allowed: bool| if allowed { "allowed" } else { "refused" };
    let mut lines: Vec<(String, String)> = vec![(
        "privileged".into(),
        refused_or(profile.allow_privileged).into(),
    )];
    for ns in Namespace::ALL {
        lines.push((
            format!("host {} namespace", ns.as_str()),
            refused_or(profile.allow_host_namespaces.contains(&ns)).into(),
        ));
    }
    let allowed_all = profile.allow_capabilities.iter().any(|c| c == "ALL");
    let refused: Vec<&str> = std::iter::once("ALL")
        .chain(REFUSED_CAPABILITIES.iter().copied())
        .filter(|c| !allowed_all && !profile.allow_capabilities.iter().any(|a| a == c))
        .collect();
    lines.push((
        "capabilities refused".into(),
        if refused.is_empty() {
            "none".to_owned()
        } else {
            refused.join(", ")
        },
    ));
    lines.push((
        "devices, device cgroup rules, device requests".into(),
        refused_or(profile.allow_devices).into(),
    ));
    for c in Confinement::ALL {
        lines.push((
            format!("{}=unconfined", c.as_str()),
            refused_or(profile.allow_unconfined.contains(&c)).into(),
        ));
    }
    lines.push((
        "cgroup parent outside the container parents".into(),
        refused_or(profile.allow_any_cgroup_parent).into(),
    ));
    let mut refused_paths = format!(
        "/, /proc, /sys (incl. /sys/fs/cgroup, /sys/fs/bpf), /dev, the engine's data root (GET /info) and exec root ({}), containerd, D-Bus, systemd, the eci-agent's state, every host unix socket but the public one",
        profile.exec_root()
    );
    for p in &profile.protected_paths {
        refused_paths.push_str(", ");
        refused_paths.push_str(p);
    }
    lines.push(("host paths refused".into(), refused_paths));
    if !profile.allow_host_paths.is_empty() {
        lines.push((
            "host paths allowed".into(),
            profile.allow_host_paths.join(", "),
        ));
    }
    let mut out = String::from(
        "container-caller profile (eciAgent.containerProfile; applies to requests from containers):\n",
    );
    for (key, value) in lines {
        out.push_str(&format!("  {key}: {value}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{fake_host::FakeHost, wire::decode_create_body};

    fn host() -> FakeHost {
        FakeHost::new()
    }

    fn layout() -> HostLayout {
        HostLayout::new(
            "/var/lib/docker",
            DEFAULT_EXEC_ROOT,
            &["/etc/eci".into()],
            &[],
            Some(ProtectedSocket {
                real_path: "/run/docker.sock".into(),
                dev: 1,
                ino: 42,
            }),
        )
    }

    /// Judged with the protected paths resolved per mount, and resolved once beforehand as
    /// the gate keeps them: the same answer.
    fn judge(profile: &ContainerProfile, body: &str) -> Result<(), Breach> {
        let b = decode_create_body(body.as_bytes()).unwrap();
        let mounts = b.mounts();
        let request = CreateRequest {
            host_config: b.host_config.as_ref(),
            mounts: &mounts,
            parent: ParentPlacement::ContainerParent,
            joined: &[],
            origin: Origin::Request,
        };
        let mut resolved = layout();
        resolved.resolve(&host());
        assert!(resolved.protected.iter().all(|p| p.real.is_some()));
        let verdict = profile.check(&request, &layout(), &host());
        assert_eq!(
            profile.check(&request, &resolved, &host()),
            verdict,
            "{body}"
        );
        verdict
    }

    fn hc(fields: &str) -> String {
        format!(r#"{{"Image":"x","HostConfig":{{{fields}}}}}"#)
    }

    #[test]
    fn strict_profile_table() {
        let p = ContainerProfile::default();
        let cap = |c: &str| Some(Breach::Capability(c.into()));
        // (HostConfig members, expected breach or None)
        let cases: Vec<(&str, Option<Breach>)> = vec![
            ("", None),
            (r#""Privileged":true"#, Some(Breach::Privileged)),
            (r#""Privileged":false"#, None),
            (r#""privileged":true"#, Some(Breach::Privileged)),
            (
                r#""Privileged":true,"privileged":null"#,
                Some(Breach::Privileged),
            ),
            (r#""Privileged":true,"privileged":false"#, None),
            (
                r#""PidMode":"host""#,
                Some(Breach::HostNamespace(Namespace::Pid)),
            ),
            (r#""PidMode":"Host""#, None),
            (r#""PidMode":"container:abc""#, None),
            (
                r#""NetworkMode":"host""#,
                Some(Breach::HostNamespace(Namespace::Network)),
            ),
            (r#""NetworkMode":"container:abc""#, None),
            (r#""NetworkMode":"none""#, None),
            (
                r#""IpcMode":"host""#,
                Some(Breach::HostNamespace(Namespace::Ipc)),
            ),
            (r#""IpcMode":"shareable""#, None),
            (
                r#""CgroupnsMode":"host""#,
                Some(Breach::HostNamespace(Namespace::Cgroup)),
            ),
            (
                r#""UsernsMode":"host""#,
                Some(Breach::HostNamespace(Namespace::User)),
            ),
            (r#""CapAdd":["SYS_ADMIN"]"#, cap("CAP_SYS_ADMIN")),
            (r#""CapAdd":["cap_sys_admin"]"#, cap("CAP_SYS_ADMIN")),
            (r#""CapAdd":["Sys_Ptrace"]"#, cap("CAP_SYS_PTRACE")),
            (r#""CapAdd":"sys_module""#, cap("CAP_SYS_MODULE")),
            (r#""CapAdd":["NET_ADMIN","bpf"]"#, cap("CAP_BPF")),
            (r#""CapAdd":["perfmon"]"#, cap("CAP_PERFMON")),
            (
                r#""CapAdd":["DAC_READ_SEARCH"]"#,
                cap("CAP_DAC_READ_SEARCH"),
            ),
            (r#""CapAdd":["SYS_RAWIO"]"#, cap("CAP_SYS_RAWIO")),
            (r#""CapAdd":["all"]"#, cap("ALL")),
            (r#""CapAdd":["NET_ADMIN","CHOWN"]"#, None),
            // StrSlice replaces: a later null or list wins.
            (r#""CapAdd":["SYS_ADMIN"],"capadd":null"#, None),
            (
                r#""CapAdd":["CHOWN"],"capadd":"SYS_ADMIN""#,
                cap("CAP_SYS_ADMIN"),
            ),
            (
                r#""Devices":[{"PathOnHost":"/dev/sda","PathInContainer":"/dev/sda"}]"#,
                Some(Breach::Devices),
            ),
            (r#""Devices":[]"#, None),
            (
                r#""DeviceCgroupRules":["b *:* rwm"]"#,
                Some(Breach::DeviceCgroupRules),
            ),
            (
                r#""DeviceRequests":[{"Driver":"nvidia","Count":-1}]"#,
                Some(Breach::DeviceRequests),
            ),
            (
                r#""SecurityOpt":["seccomp=unconfined"]"#,
                Some(Breach::SeccompUnconfined),
            ),
            (
                r#""SecurityOpt":["seccomp:unconfined"]"#,
                Some(Breach::SeccompUnconfined),
            ),
            (
                r#""SecurityOpt":["seccomp={\"defaultAction\":\"SCMP_ACT_ALLOW\"}"]"#,
                Some(Breach::SeccompCustom),
            ),
            (r#""SecurityOpt":["seccomp=builtin"]"#, None),
            (
                r#""SecurityOpt":["apparmor=unconfined"]"#,
                Some(Breach::AppArmorUnconfined),
            ),
            (
                r#""SecurityOpt":["apparmor:unconfined"]"#,
                Some(Breach::AppArmorUnconfined),
            ),
            (r#""SecurityOpt":["apparmor=docker-default"]"#, None),
            (
                r#""SecurityOpt":["label=disable"]"#,
                Some(Breach::LabelDisabled),
            ),
            (
                r#""SecurityOpt":["label:disable"]"#,
                Some(Breach::LabelDisabled),
            ),
            (r#""SecurityOpt":["disable"]"#, Some(Breach::LabelDisabled)),
            (
                r#""SecurityOpt":["label=type:spc_t"]"#,
                Some(Breach::LabelDisabled),
            ),
            (r#""SecurityOpt":["label=level:s0:c100,c200"]"#, None),
            (r#""SecurityOpt":["no-new-privileges"]"#, None),
            (
                r#""MaskedPaths":[],"ReadonlyPaths":[]"#,
                Some(Breach::SystemPathsUnconfined),
            ),
            (r#""MaskedPaths":null"#, None),
            (
                r#""ReadonlyPaths":["/proc/sys"]"#,
                Some(Breach::SystemPathsUnconfined),
            ),
            (
                r#""ReadonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger","/x"]"#,
                None,
            ),
            // Mounts.
            (r#""Binds":["/:/host"]"#, Some(host_path("/", "/"))),
            (
                r#""Binds":["/tmp/rootlink:/host"]"#,
                Some(host_path("/tmp/rootlink", "/")),
            ),
            (r#""Binds":["/proc:/p"]"#, Some(host_path("/proc", "/proc"))),
            (
                r#""Binds":["/proc/1/root:/p"]"#,
                Some(host_path("/proc/1/root", "/proc")),
            ),
            (
                r#""Binds":["/sys/fs/cgroup:/c"]"#,
                Some(host_path("/sys/fs/cgroup", "/sys/fs/cgroup")),
            ),
            (
                r#""Binds":["/sys/fs/bpf:/b:ro"]"#,
                Some(host_path("/sys/fs/bpf", "/sys/fs/bpf")),
            ),
            (
                r#""Binds":["/sys/kernel:/k"]"#,
                Some(host_path("/sys/kernel", "/sys")),
            ),
            (r#""Binds":["/dev:/dev"]"#, Some(host_path("/dev", "/dev"))),
            (
                r#""Binds":["/var/lib:/l"]"#,
                Some(host_path("/var/lib", "/var/lib/docker")),
            ),
            (
                r#""Binds":["/var/lib/docker/volumes:/v"]"#,
                Some(host_path("/var/lib/docker/volumes", "/var/lib/docker")),
            ),
            (
                r#""Binds":["/var/run/docker:/e"]"#,
                Some(host_path("/var/run/docker", "/var/run/docker")),
            ),
            (
                r#""Binds":["/run:/r"]"#,
                Some(host_path("/run", "/run/containerd")),
            ),
            (
                r#""Binds":["/etc/eci:/e"]"#,
                Some(host_path("/etc/eci", "/etc/eci")),
            ),
            (
                r#""Binds":["/run/containerd/containerd.sock:/c.sock"]"#,
                Some(Breach::HostSocket {
                    source: "/run/containerd/containerd.sock".into(),
                }),
            ),
            (
                r#""Binds":["/srv/app.sock:/a.sock"]"#,
                Some(Breach::HostSocket {
                    source: "/srv/app.sock".into(),
                }),
            ),
            // The public socket is the image check's business.
            (
                r#""Binds":["/var/run/docker.sock:/var/run/docker.sock"]"#,
                None,
            ),
            (r#""Binds":["/srv/data:/d","/home/u:/h"]"#, None),
            (
                r#""Binds":["/var:/v"]"#,
                Some(host_path("/var", "/var/run/containerd")),
            ),
            (
                r#""Binds":["/locked:/l"]"#,
                Some(Breach::Unverifiable {
                    mount: "host path \"/locked\"".into(),
                }),
            ),
            (
                r#""Mounts":[{"Type":"bind","Source":"/sys","Target":"/s"}]"#,
                Some(host_path("/sys", "/sys/fs/cgroup")),
            ),
            (r#""Mounts":[{"Type":"tmpfs","Target":"/t"}]"#, None),
            (
                r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Name":"local","Options":{"type":"none","o":"bind","device":"/"}}}}]"#,
                Some(host_path("/", "/")),
            ),
            (
                r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"type":"proc","device":"proc"}}}}]"#,
                Some(Breach::HostFilesystemVolume {
                    name: String::new(),
                    fs: "proc".into(),
                }),
            ),
            (
                r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"type":"ext4","device":"/dev/sda1"}}}}]"#,
                Some(Breach::HostFilesystemVolume {
                    name: String::new(),
                    fs: "ext4".into(),
                }),
            ),
            (
                r#""Mounts":[{"Type":"volume","Target":"/v","VolumeOptions":{"DriverConfig":{"Options":{"type":"tmpfs","device":"tmpfs","o":"size=1m"}}}}]"#,
                None,
            ),
            (r#""Mounts":[{"Type":"volume","Target":"/v"}]"#, None),
            (
                r#""Binds":["named:/v"]"#,
                Some(Breach::Unverifiable {
                    mount: "volume \"named\"".into(),
                }),
            ),
        ];
        for (fields, want) in cases {
            let body = hc(fields);
            assert_eq!(judge(&p, &body).err(), want, "{body}");
        }
    }

    fn host_path(source: &str, reaches: &str) -> Breach {
        let what = layout()
            .protected
            .iter()
            .find(|p| p.path == reaches)
            .map(|p| p.what)
            .unwrap();
        Breach::HostPath {
            source: source.into(),
            reaches: reaches.into(),
            what,
        }
    }

    #[test]
    fn every_field_relaxes_its_option() {
        let relaxed = ContainerProfile {
            allow_privileged: true,
            allow_host_namespaces: Namespace::ALL.to_vec(),
            allow_capabilities: vec!["ALL".into()],
            allow_devices: true,
            allow_unconfined: Confinement::ALL.to_vec(),
            allow_any_cgroup_parent: true,
            allow_host_paths: vec!["/sys".into(), "/srv/app.sock".into()],
            protected_paths: vec![],
            engine_exec_root: None,
        };
        let body = hc(
            r#""Privileged":true,"PidMode":"host","IpcMode":"host","CgroupnsMode":"host","UsernsMode":"host",
               "CapAdd":["ALL","SYS_ADMIN"],"Devices":[{}],"DeviceCgroupRules":["a"],"DeviceRequests":[{}],
               "SecurityOpt":["seccomp=unconfined","apparmor=unconfined","label=disable"],"MaskedPaths":[],
               "Binds":["/sys:/s","/srv/app.sock:/a"]"#,
        );
        assert_eq!(judge(&relaxed, &body), Ok(()));
        let strict = ContainerProfile::default();
        let b = decode_create_body(body.as_bytes()).unwrap();
        let mounts = b.mounts();
        let req = CreateRequest {
            host_config: b.host_config.as_ref(),
            mounts: &mounts,
            parent: ParentPlacement::Outside("/elsewhere".into()),
            joined: &[],
            origin: Origin::Request,
        };
        let all = strict.breaches(&req, &layout(), &host());
        assert_eq!(all.len(), 17, "{all:#?}");
        assert!(relaxed.breaches(&req, &layout(), &host()).is_empty());
        // One capability relaxed, the others still refused.
        let one = ContainerProfile {
            allow_capabilities: vec!["CAP_SYS_PTRACE".into()],
            ..ContainerProfile::default()
        };
        assert_eq!(judge(&one, &hc(r#""CapAdd":["sys_ptrace"]"#)), Ok(()));
        assert!(judge(&one, &hc(r#""CapAdd":["sys_admin"]"#)).is_err());
        // Extra protected paths.
        let extra = HostLayout::new("", "", &[], &["/etc".into()], None);
        let b = decode_create_body(hc(r#""Binds":["/etc/cron.d:/c"]"#).as_bytes()).unwrap();
        let mounts = b.mounts();
        assert!(matches!(
            strict.check(
                &CreateRequest {
                    host_config: b.host_config.as_ref(),
                    mounts: &mounts,
                    parent: ParentPlacement::ContainerParent,
                    joined: &[],
                    origin: Origin::Request,
                },
                &extra,
                &host()
            ),
            Err(Breach::HostPath { .. })
        ));
    }

    #[test]
    fn capabilities_normalise_like_the_engine() {
        for (raw, want) in [
            ("sys_admin", "CAP_SYS_ADMIN"),
            ("CAP_SYS_ADMIN", "CAP_SYS_ADMIN"),
            ("cap_bpf", "CAP_BPF"),
            ("All", "ALL"),
        ] {
            assert_eq!(normalize_capability(raw), want);
        }
        for c in REFUSED_CAPABILITIES {
            assert!(KNOWN_CAPABILITIES.contains(c), "{c}");
        }
    }

    /// Every breach of `body`'s HostConfig, with these joins, from this origin.
    fn breaches_of(
        p: &ContainerProfile,
        body: &str,
        joined: &[Joined],
        origin: Origin,
    ) -> Vec<Breach> {
        let b = decode_create_body(body.as_bytes()).unwrap();
        p.breaches(
            &CreateRequest {
                host_config: b.host_config.as_ref(),
                mounts: &[],
                parent: ParentPlacement::ContainerParent,
                joined,
                origin,
            },
            &layout(),
            &host(),
        )
    }

    #[test]
    fn joining_a_host_namespace_container_is_joining_the_host() {
        let strict = ContainerProfile::default();
        let body = hc(r#""PidMode":"container:h","NetworkMode":"container:n""#);
        let b = decode_create_body(body.as_bytes()).unwrap();
        let config = b.host_config.as_ref().unwrap();
        assert_eq!(Namespace::Pid.joins(config), Some("h"));
        assert_eq!(Namespace::Network.joins(config), Some("n"));
        assert_eq!(Namespace::Ipc.joins(config), None);
        assert_eq!(Namespace::Cgroup.joins(config), None);
        let joined = |ns, container: &str, mode: &str| Joined {
            ns,
            container: container.into(),
            mode: mode.into(),
        };
        let judge = |p: &ContainerProfile, joined: &[Joined]| {
            breaches_of(p, &body, joined, Origin::Request)
        };
        assert_eq!(
            judge(
                &strict,
                &[
                    joined(Namespace::Pid, "h", "host"),
                    joined(Namespace::Network, "n", "host")
                ]
            ),
            [
                Breach::JoinedNamespace {
                    ns: Namespace::Pid,
                    container: "h".into()
                },
                Breach::JoinedNamespace {
                    ns: Namespace::Network,
                    container: "n".into()
                }
            ]
        );
        // An ordinary container's namespaces are no host power.
        assert!(
            judge(
                &strict,
                &[
                    joined(Namespace::Pid, "h", ""),
                    joined(Namespace::Network, "n", "none")
                ]
            )
            .is_empty()
        );
        // Relaxed like the host namespace itself.
        let pid_ok = ContainerProfile {
            allow_host_namespaces: vec![Namespace::Pid],
            ..ContainerProfile::default()
        };
        assert_eq!(judge(&pid_ok, &[joined(Namespace::Pid, "h", "host")]), []);
    }

    #[test]
    fn a_stored_configuration_is_judged_with_the_engines_defaults() {
        let strict = ContainerProfile::default();
        let v1 = Origin::Stored {
            cgroupns_host_default: true,
        };
        let v2 = Origin::Stored {
            cgroupns_host_default: false,
        };
        // What a 20.10 engine on cgroup v1 stores for a plain container.
        let plain = hc(
            r#""CgroupnsMode":"host","IpcMode":"private","NetworkMode":"none",
            "MaskedPaths":["/proc/asound","/proc/acpi","/proc/kcore","/proc/keys","/proc/latency_stats",
              "/proc/timer_list","/proc/timer_stats","/proc/sched_debug","/proc/scsi","/sys/firmware"],
            "ReadonlyPaths":["/proc/bus","/proc/fs","/proc/irq","/proc/sys","/proc/sysrq-trigger"]"#,
        );
        let judge = |body: &str, origin| breaches_of(&strict, body, &[], origin);
        assert_eq!(judge(&plain, v1), []);
        // On a cgroup v2 engine the host's cgroup namespace was asked for.
        assert_eq!(
            judge(&plain, v2),
            [Breach::HostNamespace(Namespace::Cgroup)]
        );
        // `label=disable` is the engine's own for a container in the host's PID namespace.
        let pid_host = hc(r#""PidMode":"host","SecurityOpt":["label=disable"]"#);
        assert_eq!(
            judge(&pid_host, v1),
            [Breach::HostNamespace(Namespace::Pid)]
        );
        assert_eq!(
            judge(&pid_host, Origin::Request),
            [Breach::HostNamespace(Namespace::Pid), Breach::LabelDisabled]
        );
        // Asked for in a create body, the short list unmasks what today's engines mask.
        assert_eq!(
            judge(&plain, Origin::Request),
            [
                Breach::HostNamespace(Namespace::Cgroup),
                Breach::SystemPathsUnconfined
            ]
        );
    }

    #[test]
    fn exec_privileged_is_refused_unless_privileged_is_allowed() {
        assert_eq!(
            ContainerProfile::default().exec_breach(true),
            Some(Breach::PrivilegedExec)
        );
        assert_eq!(ContainerProfile::default().exec_breach(false), None);
        let relaxed = ContainerProfile {
            allow_privileged: true,
            ..ContainerProfile::default()
        };
        assert_eq!(relaxed.exec_breach(true), None);
    }
}

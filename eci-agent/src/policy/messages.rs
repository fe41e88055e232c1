//! The only place that spells Docker Desktop's ECI refusal texts, and the stable reason codes
//! that logs and metrics use. The sidecar turns them into a 403 JSON body; nothing else should
//! build these strings.
//!
//! The texts must never contain "permission denied" or "no such file": the docker CLI changes
//! its exit code when it sees them (cli `toStatusError`).

use std::fmt;

use super::profile::{Breach, ContainerUse, Namespace};

/// `enhanced container isolation: docker command "<raw target>" is blocked; …`
///
/// `raw_target` is the request target exactly as the client sent it, version prefix and query
/// included (e.g. `/v1.43/images/myimage/push?tag=latest`).
pub fn command_blocked(raw_target: &str, settings_location: &str) -> String {
    format!(
        "enhanced container isolation: docker command \"{raw_target}\" is blocked; if you wish to allow it, configure the docker socket command list in {settings_location}"
    )
}

/// `enhanced container isolation: docker socket mount denied for container with image "<name>"; …`
///
/// `image_name` is the normalised repository name without tag or digest
/// (`docker.io/library/docker`); see [`super::image_ref::RepoName`].
pub fn socket_mount_denied(image_name: &str, settings_location: &str) -> String {
    format!(
        "enhanced container isolation: docker socket mount denied for container with image \"{image_name}\"; image is not in the allowed list; if you wish to allow it, configure the docker socket image list in {settings_location}"
    )
}

/// The container-caller profile's refusal, one text per option:
/// `enhanced container isolation: privileged containers are not allowed for containers that use
/// the docker socket; if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in …`
pub fn profile_refused(breach: &Breach, settings_location: &str) -> String {
    profile_text("", breach, settings_location)
}

/// The profile's refusal of a container caller's use of an existing container, naming it:
/// `enhanced container isolation: starting container "web": privileged containers are not
/// allowed for containers that use the docker socket; if you wish to allow it, set …`
pub fn profile_refused_use(
    what: ContainerUse,
    container: &str,
    breach: &Breach,
    settings_location: &str,
) -> String {
    let context = format!("{} container {container:?}: ", what.doing());
    profile_text(&context, breach, settings_location)
}

fn profile_text(context: &str, breach: &Breach, settings_location: &str) -> String {
    let option = profile_option(breach);
    let verb = if profile_option_is_plural(breach) {
        "are"
    } else {
        "is"
    };
    format!(
        "enhanced container isolation: {context}{option} {verb} not allowed for containers that use the docker socket; if you wish to allow it, set eciAgent.containerProfile.{field} in {settings_location}",
        field = breach.relax_field()
    )
}

/// What the refused option is, as the refusal names it.
pub fn profile_option(breach: &Breach) -> String {
    match breach {
        Breach::Privileged => "privileged containers".into(),
        Breach::HostNamespace(ns) => {
            let (what, flag) = namespace_names(*ns);
            format!("containers in the host's {what} namespace (--{flag}=host)")
        }
        Breach::JoinedNamespace { ns, container } => {
            let (what, flag) = namespace_names(*ns);
            format!(
                "joining the host's {what} namespace through container {container:?} (--{flag}=container:{container})"
            )
        }
        Breach::PrivilegedExec => "privileged processes (docker exec --privileged)".into(),
        Breach::Capability(cap) if cap == "ALL" => "all capabilities (--cap-add ALL)".into(),
        Breach::Capability(cap) => format!(
            "the capability {cap} (--cap-add {})",
            cap.trim_start_matches("CAP_")
        ),
        Breach::Devices => "host devices (--device)".into(),
        Breach::DeviceCgroupRules => "device cgroup rules (--device-cgroup-rule)".into(),
        Breach::DeviceRequests => "device requests (--gpus)".into(),
        Breach::SeccompUnconfined => {
            "unconfined seccomp (--security-opt seccomp=unconfined)".into()
        }
        Breach::SeccompCustom => "custom seccomp profiles (--security-opt seccomp=FILE)".into(),
        Breach::AppArmorUnconfined => {
            "unconfined AppArmor (--security-opt apparmor=unconfined)".into()
        }
        Breach::LabelDisabled => "disabled SELinux labels (--security-opt label=disable)".into(),
        Breach::SystemPathsUnconfined => {
            "unmasked system paths (--security-opt systempaths=unconfined)".into()
        }
        Breach::CgroupParent(p) => {
            format!("the cgroup parent {p:?} outside the container parents (--cgroup-parent)")
        }
        Breach::HostPath {
            source,
            reaches,
            what,
        } => format!("mounts of host path {source:?} (it reaches {reaches}: {what})"),
        Breach::HostSocket { source } => format!("mounts of the host unix socket {source:?}"),
        Breach::HostFilesystemVolume { name, fs } => {
            format!("volume {name:?} mounting a host filesystem ({fs})")
        }
        Breach::Unverifiable { mount } => format!("mounts that cannot be verified ({mount})"),
    }
}

/// A namespace as the refusal names it, and its `docker run` flag.
fn namespace_names(ns: Namespace) -> (&'static str, &'static str) {
    match ns {
        Namespace::Pid => ("PID", "pid"),
        Namespace::Ipc => ("IPC", "ipc"),
        Namespace::Cgroup => ("cgroup", "cgroupns"),
        Namespace::User => ("user", "userns"),
        Namespace::Network => ("network", "network"),
    }
}

fn profile_option_is_plural(breach: &Breach) -> bool {
    !matches!(
        breach,
        Breach::Capability(_)
            | Breach::CgroupParent(_)
            | Breach::HostFilesystemVolume { .. }
            | Breach::JoinedNamespace { .. }
    )
}

/// Stable snake_case codes for every refusal, for audit lines and metrics.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReasonCode {
    CommandListed,
    CommandNotListed,
    CommandUnknownRoute,
    /// A plugin or swarm route under a deny list: closed to containers.
    CommandClosed,
    ImageNotAllowed,
    ImageNoDigestsYet,
    DerivedBaseNotAllowed,
    MountUnresolvable,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CommandListed => "command_listed",
            Self::CommandNotListed => "command_not_listed",
            Self::CommandUnknownRoute => "command_unknown_route",
            Self::CommandClosed => "command_closed",
            Self::ImageNotAllowed => "image_not_allowed",
            Self::ImageNoDigestsYet => "image_no_digests_yet",
            Self::DerivedBaseNotAllowed => "derived_base_not_allowed",
            Self::MountUnresolvable => "mount_unresolvable",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<super::command::CommandDenyReason> for ReasonCode {
    fn from(r: super::command::CommandDenyReason) -> Self {
        use super::command::CommandDenyReason as R;
        match r {
            R::Listed(_) => Self::CommandListed,
            R::NotListed => Self::CommandNotListed,
            R::UnknownRoute => Self::CommandUnknownRoute,
            R::Closed => Self::CommandClosed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_docker_desktop() {
        assert_eq!(
            command_blocked(
                "/v1.43/images/myimage/push?tag=latest",
                "the Docker Desktop settings or admin-settings."
            ),
            "enhanced container isolation: docker command \"/v1.43/images/myimage/push?tag=latest\" is blocked; if you wish to allow it, configure the docker socket command list in the Docker Desktop settings or admin-settings."
        );
        assert_eq!(
            socket_mount_denied("docker.io/library/docker", "the Docker Desktop settings."),
            "enhanced container isolation: docker socket mount denied for container with image \"docker.io/library/docker\"; image is not in the allowed list; if you wish to allow it, configure the docker socket image list in the Docker Desktop settings."
        );
    }

    #[test]
    fn texts_avoid_phrases_that_change_cli_exit_codes() {
        for t in [
            command_blocked("/x", "/etc/eci/admin-settings.json"),
            socket_mount_denied("docker.io/library/x", "/etc/eci/admin-settings.json"),
            profile_refused(&Breach::Privileged, "/etc/eci/admin-settings.json"),
            profile_refused(
                &Breach::HostSocket {
                    source: "/run/x.sock".into(),
                },
                "/etc/eci/admin-settings.json",
            ),
        ] {
            let lower = t.to_lowercase();
            for bad in [
                "permission denied",
                "no such file",
                "executable file not found",
                "is a directory",
                "cannot find the file",
            ] {
                assert!(!lower.contains(bad), "{t:?} contains {bad:?}");
            }
        }
    }

    #[test]
    fn every_breach_has_a_distinct_text_naming_the_option() {
        let all = [
            Breach::Privileged,
            Breach::HostNamespace(Namespace::Pid),
            Breach::HostNamespace(Namespace::Ipc),
            Breach::HostNamespace(Namespace::Cgroup),
            Breach::HostNamespace(Namespace::User),
            Breach::HostNamespace(Namespace::Network),
            Breach::JoinedNamespace {
                ns: Namespace::Pid,
                container: "x".into(),
            },
            Breach::PrivilegedExec,
            Breach::Capability("CAP_SYS_ADMIN".into()),
            Breach::Devices,
            Breach::DeviceCgroupRules,
            Breach::DeviceRequests,
            Breach::SeccompUnconfined,
            Breach::SeccompCustom,
            Breach::AppArmorUnconfined,
            Breach::LabelDisabled,
            Breach::SystemPathsUnconfined,
            Breach::CgroupParent("/x".into()),
            Breach::HostPath {
                source: "/".into(),
                reaches: "/".into(),
                what: "the host's root",
            },
            Breach::HostSocket {
                source: "/a.sock".into(),
            },
            Breach::HostFilesystemVolume {
                name: "v".into(),
                fs: "proc".into(),
            },
            Breach::Unverifiable {
                mount: "volume \"v\"".into(),
            },
        ];
        let texts: std::collections::HashSet<String> = all
            .iter()
            .map(|b| profile_refused(b, "/etc/eci/admin-settings.json"))
            .collect();
        assert_eq!(texts.len(), all.len());
        assert_eq!(
            profile_refused(&Breach::Privileged, "/etc/eci/admin-settings.json"),
            "enhanced container isolation: privileged containers are not allowed for containers that use the docker socket; \
             if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in /etc/eci/admin-settings.json"
        );
    }

    #[test]
    fn use_of_a_container_names_it_and_the_option() {
        assert_eq!(
            profile_refused_use(
                ContainerUse::Start,
                "web",
                &Breach::Privileged,
                "/etc/eci/admin-settings.json"
            ),
            "enhanced container isolation: starting container \"web\": privileged containers are not allowed for containers that use the docker socket; \
             if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in /etc/eci/admin-settings.json"
        );
        assert_eq!(
            profile_refused_use(
                ContainerUse::Exec,
                "web",
                &Breach::PrivilegedExec,
                "/etc/eci/admin-settings.json"
            ),
            "enhanced container isolation: running a command in container \"web\": privileged processes (docker exec --privileged) are not allowed for containers that use the docker socket; \
             if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in /etc/eci/admin-settings.json"
        );
        assert_eq!(
            profile_refused(
                &Breach::JoinedNamespace {
                    ns: Namespace::Network,
                    container: "h".into()
                },
                "/etc/eci/admin-settings.json"
            ),
            "enhanced container isolation: joining the host's network namespace through container \"h\" (--network=container:h) is not allowed for containers that use the docker socket; \
             if you wish to allow it, set eciAgent.containerProfile.allowHostNamespaces in /etc/eci/admin-settings.json"
        );
    }
}

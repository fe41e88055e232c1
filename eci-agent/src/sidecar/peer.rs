//! Who is calling: the kernel's credentials of the connecting process (`SO_PEERCRED`, read once
//! per connection at accept) → its cgroups (`/proc/PID/cgroup`) → the container it runs in, or
//! the host.
//!
//! Identity comes from the kernel, never from anything the client sends. The decision sits
//! behind [`IdentifyCaller`] so the pipeline can be exercised without root or real containers.

use std::path::{Path, PathBuf};

use crate::ids::ContainerId;

/// A connection's caller, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The connecting process (in the agent's pid namespace); `None` if the kernel gave none.
    pub pid: Option<i32>,
    /// The cgroup v2 path (the `0::` line), when the process has one.
    pub cgroup: Option<String>,
    pub kind: CallerKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A process in a trusted host cgroup: nothing is filtered.
    TrustedHost,
    /// A process inside a container: the commandList applies.
    Container(ContainerId),
    /// Neither: refused outright (the kernel should already have stopped it).
    Unknown,
}

/// Says who the process behind a connection is.
pub trait IdentifyCaller: Send + Sync + 'static {
    fn identify(&self, pid: Option<i32>) -> Caller;
}

/// Host cgroups (cgroup v2 paths, as in `/proc/PID/cgroup`) whose processes are trusted.
/// `/` trusts every process that is not in a container.
#[derive(Debug, Clone, Default)]
pub struct TrustedCgroups(Vec<PathBuf>);

impl TrustedCgroups {
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        // Paths are compared as given in /proc/PID/cgroup, which are rooted.
        Self(paths.into_iter().map(|p| Path::new("/").join(p)).collect())
    }

    /// `cgroup` is a rooted cgroup v2 path; it is trusted when it is one of the trusted cgroups
    /// or below one (component-wise, so `/a` does not trust `/ab`).
    pub fn contains(&self, cgroup: &str) -> bool {
        let cgroup = Path::new(cgroup);
        self.0.iter().any(|trusted| cgroup.starts_with(trusted))
    }
}

/// Identifies callers from procfs.
#[derive(Debug, Clone)]
pub struct ProcIdentity {
    proc_root: PathBuf,
    trusted: TrustedCgroups,
}

impl ProcIdentity {
    pub fn new(trusted: TrustedCgroups) -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            trusted,
        }
    }
}

impl IdentifyCaller for ProcIdentity {
    fn identify(&self, pid: Option<i32>) -> Caller {
        let Some(pid) = pid.filter(|pid| *pid > 0) else {
            return Caller {
                pid,
                cgroup: None,
                kind: CallerKind::Unknown,
            };
        };
        // A process that exited before we looked can no longer be vouched for.
        let Ok(text) = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup"))
        else {
            return Caller {
                pid: Some(pid),
                cgroup: None,
                kind: CallerKind::Unknown,
            };
        };
        classify_cgroups(Some(pid), &text, &self.trusted)
    }
}

/// Decides from the text of `/proc/PID/cgroup`. Any hierarchy line naming a container makes the
/// caller that container (hybrid v1/v2 hosts may name it only in v1 lines); otherwise the cgroup
/// v2 line must be trusted.
pub fn classify_cgroups(pid: Option<i32>, proc_cgroup: &str, trusted: &TrustedCgroups) -> Caller {
    let mut unified = None;
    let mut container = None;
    for line in proc_cgroup.lines() {
        // hierarchy-ID:controller-list:cgroup-path; the path may itself contain ':'.
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            unified = Some(path.to_owned());
        }
        if container.is_none() {
            container = container_in_path(path);
        }
    }
    let kind = match container {
        Some(id) => CallerKind::Container(id),
        None if unified.as_deref().is_some_and(|cg| trusted.contains(cg)) => {
            CallerKind::TrustedHost
        }
        None => CallerKind::Unknown,
    };
    Caller {
        pid,
        cgroup: unified,
        kind,
    }
}

/// Finds the container in a cgroup path as dockerd's cgroup drivers name it: systemd
/// `…/docker-<id>.scope`, cgroupfs `…/docker/<id>` (also below a `--cgroup-parent`).
pub fn container_in_path(path: &str) -> Option<ContainerId> {
    let segments: Vec<&str> = path.split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        let systemd = segment
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"));
        let cgroupfs = (i > 0 && segments[i - 1] == "docker").then_some(*segment);
        if let Some(id) = systemd.or(cgroupfs).and_then(ContainerId::parse) {
            return Some(id);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8a6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";

    fn trusted(paths: &[&str]) -> TrustedCgroups {
        TrustedCgroups::new(paths.iter().map(PathBuf::from))
    }

    #[test]
    fn pure_v2_systemd_driver() {
        let text = format!("0::/system.slice/docker-{ID}.scope\n");
        let caller = classify_cgroups(Some(7), &text, &trusted(&["/"]));
        assert_eq!(
            caller.kind,
            CallerKind::Container(ContainerId::parse(ID).unwrap())
        );
        assert_eq!(
            caller.cgroup.as_deref(),
            Some(&*format!("/system.slice/docker-{ID}.scope"))
        );
    }

    #[test]
    fn cgroupfs_driver_and_nested_cgroups() {
        let text = format!("0::/docker/{ID}/init\n");
        assert!(matches!(
            classify_cgroups(None, &text, &trusted(&[])).kind,
            CallerKind::Container(_)
        ));
        let text = format!("0::/my-parent/docker/{ID}\n");
        assert!(matches!(
            classify_cgroups(None, &text, &trusted(&[])).kind,
            CallerKind::Container(_)
        ));
    }

    #[test]
    fn hybrid_host_names_the_container_in_a_v1_line() {
        let text = format!(
            "12:memory:/docker/{ID}\n4:pids:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        let caller = classify_cgroups(Some(1), &text, &trusted(&["/"]));
        assert!(
            matches!(caller.kind, CallerKind::Container(_)),
            "{caller:?}"
        );
    }

    #[test]
    fn host_callers_are_trusted_only_in_trusted_cgroups() {
        let text = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(
            classify_cgroups(None, text, &trusted(&["/user.slice"])).kind,
            CallerKind::TrustedHost
        );
        assert_eq!(
            classify_cgroups(None, text, &trusted(&["user.slice"])).kind,
            CallerKind::TrustedHost
        );
        assert_eq!(
            classify_cgroups(None, text, &trusted(&["/"])).kind,
            CallerKind::TrustedHost
        );
        assert_eq!(
            classify_cgroups(None, text, &trusted(&["/user"])).kind,
            CallerKind::Unknown
        );
        assert_eq!(
            classify_cgroups(None, text, &trusted(&[])).kind,
            CallerKind::Unknown
        );
        assert_eq!(
            classify_cgroups(None, "", &trusted(&["/"])).kind,
            CallerKind::Unknown
        );
    }

    #[test]
    fn lookalikes_are_not_containers() {
        for path in [
            "/docker/abc",
            &format!("/docker-{ID}"),
            &format!("/notdocker/{ID}"),
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/system.slice/docker-{ID}x.scope"),
        ] {
            assert_eq!(container_in_path(path), None, "{path}");
        }
    }

    #[test]
    fn a_vanished_process_is_unknown() {
        let identity = ProcIdentity {
            proc_root: PathBuf::from("/nonexistent"),
            trusted: trusted(&["/"]),
        };
        assert_eq!(identity.identify(Some(1)).kind, CallerKind::Unknown);
        assert_eq!(identity.identify(None).kind, CallerKind::Unknown);
    }
}

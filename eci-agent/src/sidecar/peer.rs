//! Who is calling: the connecting process, pinned at accept (`SO_PEERCRED`, and a pidfd so a
//! recycled pid cannot stand in for it: [`crate::process`]) → its cgroup (`/proc/PID/cgroup`,
//! trusted only while the pidfd's process lives) → the container whose *recorded* cgroup it is
//! or lies below, or the host.
//!
//! The container table ([`crate::gate::table`]) decides who is a container: a caller is
//! container C when its cgroup, or an ancestor, is C's recorded cgroup. The shape of a path
//! (`docker/<id>`, `docker-<id>.scope`) never makes a caller a container, nor a trusted host:
//! it only names a candidate for the gate to verify with the engine, and until it is verified
//! the caller is unknown (refused). A container under any `--cgroup-parent` is therefore still
//! that container.
//!
//! Identity comes from the kernel and the engine, never from anything the client sends. The
//! decision sits behind [`IdentifyCaller`] so the pipeline can be exercised without root or
//! real containers.

use std::path::{Path, PathBuf};

use crate::{
    gate::SocketMountGate,
    ids::{CallerKind, ContainerId},
    process::Peer,
};

/// A connection's caller, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The connecting process (in the agent's pid namespace); `None` if the kernel gave none.
    pub pid: Option<i32>,
    /// The cgroup v2 path (the `0::` line), when the process has one.
    pub cgroup: Option<String>,
    pub kind: CallerKind,
    /// When the caller is unknown and its cgroups are shaped like a container's: the container
    /// the gate should look up before the caller is identified again.
    pub candidate: Option<ContainerId>,
}

/// Which container, if any, has `cgroup` (a rooted cgroup v2 path) or one of its ancestors as
/// its recorded cgroup.
pub trait ContainerAt: Sync {
    fn container_at(&self, cgroup: &str) -> Option<ContainerId>;
}

impl ContainerAt for SocketMountGate {
    fn container_at(&self, cgroup: &str) -> Option<ContainerId> {
        let tree = &self.cgroups()?.tree;
        let mut dir = Path::new(cgroup);
        loop {
            if dir == Path::new("/") || dir.as_os_str().is_empty() {
                return None;
            }
            if let Ok(id) = tree.id(dir)
                && let Some(container) = self.table.at_cgroup(id)
            {
                return Some(container);
            }
            dir = dir.parent()?;
        }
    }
}

/// Says who the process behind a connection is.
pub trait IdentifyCaller: Send + Sync + 'static {
    /// Identifies `peer`; `containers` is the container table's view (`None`: no container is
    /// known, so no caller is one).
    fn identify(&self, peer: &Peer, containers: Option<&dyn ContainerAt>) -> Caller;
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
    fn identify(&self, peer: &Peer, containers: Option<&dyn ContainerAt>) -> Caller {
        let unknown = |pid| Caller {
            pid,
            cgroup: None,
            kind: CallerKind::Unknown,
            candidate: None,
        };
        let Some(pid) = peer.pid() else {
            return unknown(None);
        };
        let Ok(text) = std::fs::read_to_string(self.proc_root.join(pid.to_string()).join("cgroup"))
        else {
            return unknown(Some(pid));
        };
        // What was read is the peer's own only if the peer still lives: otherwise its pid may
        // already name another process.
        if !peer.still_alive() {
            return unknown(Some(pid));
        }
        classify_cgroups(Some(pid), &text, &self.trusted, containers)
    }
}

/// Decides from the text of `/proc/PID/cgroup`: the container whose recorded cgroup holds the
/// cgroup v2 path; otherwise, if any hierarchy line is shaped like a container's, unknown (with
/// that candidate for the gate to verify); otherwise trusted if the v2 path is.
pub fn classify_cgroups(
    pid: Option<i32>,
    proc_cgroup: &str,
    trusted: &TrustedCgroups,
    containers: Option<&dyn ContainerAt>,
) -> Caller {
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
    let recorded = unified
        .as_deref()
        .zip(containers)
        .and_then(|(cgroup, containers)| containers.container_at(cgroup));
    let (kind, candidate) = match (recorded, container) {
        (Some(id), _) => (CallerKind::Container(id), None),
        (None, Some(shaped)) => (CallerKind::Unknown, Some(shaped)),
        (None, None) if unified.as_deref().is_some_and(|cg| trusted.contains(cg)) => {
            (CallerKind::TrustedHost, None)
        }
        (None, None) => (CallerKind::Unknown, None),
    };
    Caller {
        pid,
        cgroup: unified,
        kind,
        candidate,
    }
}

/// A candidate container in a cgroup path, as dockerd's cgroup drivers name one: systemd
/// `…/docker-<id>.scope`, cgroupfs `…/<id>` under any parent. Only a candidate: the gate
/// verifies it with the engine before anyone is taken for that container.
pub fn container_in_path(path: &str) -> Option<ContainerId> {
    path.split('/').find_map(|segment| {
        let name = segment
            .strip_prefix("docker-")
            .and_then(|s| s.strip_suffix(".scope"))
            .unwrap_or(segment);
        ContainerId::parse(name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8a6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f";

    fn trusted(paths: &[&str]) -> TrustedCgroups {
        TrustedCgroups::new(paths.iter().map(PathBuf::from))
    }

    /// The table's view: `at` (and below) is container `ID`'s recorded cgroup.
    struct Recorded(String);

    impl ContainerAt for Recorded {
        fn container_at(&self, cgroup: &str) -> Option<ContainerId> {
            Path::new(cgroup)
                .starts_with(&self.0)
                .then(|| ContainerId::parse(ID).unwrap())
        }
    }

    fn kind(text: &str, t: &[&str], recorded: Option<&str>) -> CallerKind {
        let r = recorded.map(|p| Recorded(p.to_owned()));
        classify_cgroups(None, text, &trusted(t), r.as_ref().map(|r| r as _)).kind
    }

    fn container() -> CallerKind {
        CallerKind::Container(ContainerId::parse(ID).unwrap())
    }

    #[test]
    fn a_recorded_cgroup_makes_the_container_under_any_parent() {
        for path in [
            format!("/system.slice/docker-{ID}.scope"),
            format!("/docker/{ID}"),
            format!("/anything/x/{ID}"),
            "/no-shape/at-all".to_owned(),
        ] {
            let text = format!("0::{path}\n");
            assert_eq!(kind(&text, &["/"], Some(&path)), container(), "{path}");
            // Nested cgroups inside it are still it.
            let text = format!("0::{path}/init\n");
            assert_eq!(kind(&text, &["/"], Some(&path)), container());
        }
    }

    #[test]
    fn a_container_shape_that_is_not_recorded_is_unknown_never_trusted() {
        // The `--cgroup-parent=/anything/x` escape: a trusted root must not trust it.
        for path in [
            format!("/anything/x/{ID}"),
            format!("/docker/{ID}"),
            format!("/x.slice/docker-{ID}.scope"),
        ] {
            let text = format!("0::{path}\n");
            let caller = classify_cgroups(None, &text, &trusted(&["/"]), None);
            assert_eq!(caller.kind, CallerKind::Unknown, "{path}");
            assert_eq!(caller.candidate, ContainerId::parse(ID), "{path}");
        }
    }

    #[test]
    fn hybrid_host_names_the_candidate_in_a_v1_line() {
        let text = format!("12:memory:/docker/{ID}\n4:pids:/docker/{ID}\n0::/\n");
        let caller = classify_cgroups(Some(1), &text, &trusted(&["/"]), None);
        assert_eq!(caller.kind, CallerKind::Unknown);
        assert_eq!(caller.candidate, ContainerId::parse(ID));
    }

    #[test]
    fn host_callers_are_trusted_only_in_trusted_cgroups() {
        let text = "0::/user.slice/user-1000.slice/session-2.scope\n";
        assert_eq!(kind(text, &["/user.slice"], None), CallerKind::TrustedHost);
        assert_eq!(kind(text, &["user.slice"], None), CallerKind::TrustedHost);
        assert_eq!(kind(text, &["/"], None), CallerKind::TrustedHost);
        assert_eq!(kind(text, &["/user"], None), CallerKind::Unknown);
        assert_eq!(kind(text, &[], None), CallerKind::Unknown);
        assert_eq!(kind("", &["/"], None), CallerKind::Unknown);
        // A recorded container elsewhere changes nothing for the host.
        assert_eq!(
            kind(text, &["/"], Some("/docker/x")),
            CallerKind::TrustedHost
        );
    }

    #[test]
    fn lookalikes_are_not_candidates() {
        for path in [
            "/docker/abc",
            &format!("/docker-{ID}"),
            &format!("/docker/{}", ID.to_uppercase()),
            &format!("/system.slice/docker-{ID}x.scope"),
        ] {
            assert_eq!(container_in_path(path), None, "{path}");
        }
    }

    #[test]
    fn a_vanished_or_unpinned_process_is_unknown() {
        let identity = ProcIdentity {
            proc_root: PathBuf::from("/proc"),
            trusted: trusted(&["/"]),
        };
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let peer = Peer::from_pid(Some(i32::try_from(child.id()).unwrap()));
        child.wait().unwrap();
        assert_eq!(identity.identify(&peer, None).kind, CallerKind::Unknown);
        assert_eq!(
            identity.identify(&Peer::from_pid(None), None).kind,
            CallerKind::Unknown
        );
        let me = Peer::from_pid(Some(i32::try_from(std::process::id()).unwrap()));
        assert_ne!(identity.identify(&me, None).kind, CallerKind::Unknown);
    }
}

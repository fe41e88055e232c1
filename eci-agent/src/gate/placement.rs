//! Where a container's cgroup will be, from the engine's own answers (its cgroup driver, the
//! container's `CgroupParent` and ID), and which parents the gate refuses. Pure: paths are
//! relative to the cgroup2 mount, without a leading `/`.
//!
//! The identity of a container is its cgroup, so the cgroup must be where the engine says it
//! is and nowhere a container could borrow standing from: the agent's own cgroup, a trusted
//! host cgroup, or another container's cgroup.

use std::path::{Component, Path, PathBuf};

use crate::ids::ContainerId;

/// dockerd's defaults: `docker` under the cgroupfs driver, `system.slice` under systemd.
pub const DEFAULT_CGROUPFS_PARENT: &str = "docker";
pub const DEFAULT_SYSTEMD_PARENT: &str = "system.slice";

/// Why a `CgroupParent` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("cgroup parent {0:?} is not a plain path")]
    NotPlain(String),
    #[error(
        "cgroup parent {0:?} is not a systemd slice (the engine uses the systemd cgroup driver)"
    )]
    NotASlice(String),
    #[error("cgroup parent {0:?} is inside the eci-agent's own cgroup")]
    InsideAgent(String),
    #[error("cgroup parent {0:?} is inside the trusted host cgroup {1:?}")]
    InsideTrusted(String, String),
    #[error("cgroup parent {0:?} is inside the cgroup of container {1}")]
    InsideContainer(String, ContainerId),
    #[error("the engine's cgroup driver {0:?} is not known")]
    UnknownDriver(String),
}

impl PlacementError {
    /// A stable snake_case code, for metrics and the audit log.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotPlain(_) | Self::NotASlice(_) | Self::UnknownDriver(_) => {
                "cgroup_parent_invalid"
            }
            Self::InsideAgent(_) => "cgroup_parent_agent",
            Self::InsideTrusted(..) => "cgroup_parent_trusted",
            Self::InsideContainer(..) => "cgroup_parent_container",
        }
    }
}

/// The cgroup the engine (runc, or systemd for the systemd driver) puts container `id` in.
pub fn container_cgroup(
    driver: &str,
    cgroup_parent: &str,
    id: &ContainerId,
) -> Result<PathBuf, PlacementError> {
    let parent = parent_path(driver, cgroup_parent)?;
    Ok(match driver {
        "systemd" => parent.join(format!("docker-{id}.scope")),
        _ => parent.join(id.as_str()),
    })
}

/// The parent directory a `CgroupParent` names under `driver`.
pub fn parent_path(driver: &str, cgroup_parent: &str) -> Result<PathBuf, PlacementError> {
    match driver {
        "cgroupfs" => {
            let trimmed = cgroup_parent.trim_matches('/');
            let rel = if trimmed.is_empty() {
                DEFAULT_CGROUPFS_PARENT
            } else {
                trimmed
            };
            plain(rel).ok_or_else(|| PlacementError::NotPlain(cgroup_parent.to_owned()))
        }
        "systemd" => {
            let slice = if cgroup_parent.is_empty() {
                DEFAULT_SYSTEMD_PARENT
            } else {
                cgroup_parent
            };
            expand_slice(slice).ok_or_else(|| PlacementError::NotASlice(cgroup_parent.to_owned()))
        }
        other => Err(PlacementError::UnknownDriver(other.to_owned())),
    }
}

/// A relative path of normal components only (no `..`, `.`, empty or root components).
fn plain(rel: &str) -> Option<PathBuf> {
    let path = Path::new(rel);
    let ok = !rel.is_empty()
        && !rel.split('/').any(str::is_empty)
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    ok.then(|| path.to_owned())
}

/// systemd's slice nesting: `a-b-c.slice` lives at `a.slice/a-b.slice/a-b-c.slice`, `-.slice`
/// is the root.
fn expand_slice(slice: &str) -> Option<PathBuf> {
    let name = slice.strip_suffix(".slice")?;
    if name == "-" {
        return Some(PathBuf::new());
    }
    if name.is_empty()
        || name.contains('/')
        || name.starts_with('-')
        || name.ends_with('-')
        || name.contains("--")
    {
        return None;
    }
    let mut path = PathBuf::new();
    let mut prefix = String::new();
    for part in name.split('-') {
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(part);
        path.push(format!("{prefix}.slice"));
    }
    Some(path)
}

/// Refuses a parent inside the agent's cgroup or inside a trusted cgroup. A trusted cgroup
/// contains its descendants except the root, which is trusted only exactly (as in the kernel).
/// The check against other containers' cgroups needs their ids and is the gate's.
///
/// Under the systemd driver a trusted slice is no borrowed standing: the container's cgroup is
/// always a `docker-<id>.scope`, which the kernel's `cgroup_mkdir` program denies explicitly the
/// moment it is made, wherever it is, so it never inherits the slice's allow. And the engine's
/// own default, `system.slice`, is where the engine and runc run, so hosts trust it: refusing it
/// refused every container there.
pub fn check_parent(
    driver: &str,
    parent: &Path,
    cgroup_parent: &str,
    agent: Option<&Path>,
    trusted: &[PathBuf],
) -> Result<(), PlacementError> {
    // Both forms name the same cgroup: a leading `/` must not turn the check off.
    if let Some(agent) = agent.map(|a| a.strip_prefix("/").unwrap_or(a))
        && !agent.as_os_str().is_empty()
        && parent.starts_with(agent)
    {
        return Err(PlacementError::InsideAgent(cgroup_parent.to_owned()));
    }
    let scoped = driver == "systemd";
    for t in trusted.iter().filter(|_| !scoped) {
        let t = t.strip_prefix("/").unwrap_or(t);
        if !t.as_os_str().is_empty() && parent.starts_with(t) {
            return Err(PlacementError::InsideTrusted(
                cgroup_parent.to_owned(),
                format!("/{}", t.display()),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> ContainerId {
        ContainerId::parse(&"a".repeat(64)).unwrap()
    }

    #[test]
    fn cgroupfs_paths() {
        let a = "a".repeat(64);
        for (parent, want) in [
            ("", format!("docker/{a}")),
            ("/", format!("docker/{a}")),
            ("/ci/", format!("ci/{a}")),
            ("/anything/x", format!("anything/x/{a}")),
        ] {
            assert_eq!(
                container_cgroup("cgroupfs", parent, &id()).unwrap(),
                PathBuf::from(want),
                "{parent:?}"
            );
        }
        for bad in ["/a/../eci-agent", "a//b", "./a"] {
            assert!(
                matches!(
                    container_cgroup("cgroupfs", bad, &id()),
                    Err(PlacementError::NotPlain(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn systemd_slices_nest() {
        let a = "a".repeat(64);
        assert_eq!(
            container_cgroup("systemd", "", &id()).unwrap(),
            PathBuf::from(format!("system.slice/docker-{a}.scope"))
        );
        assert_eq!(
            container_cgroup("systemd", "ci-runners.slice", &id()).unwrap(),
            PathBuf::from(format!("ci.slice/ci-runners.slice/docker-{a}.scope"))
        );
        assert_eq!(
            container_cgroup("systemd", "-.slice", &id()).unwrap(),
            PathBuf::from(format!("docker-{a}.scope"))
        );
        for bad in ["/anything/x", "a--b.slice", "-a.slice", "a/b.slice"] {
            assert!(container_cgroup("systemd", bad, &id()).is_err(), "{bad}");
        }
        assert!(matches!(
            container_cgroup("other", "", &id()),
            Err(PlacementError::UnknownDriver(_))
        ));
    }

    #[test]
    fn parents_inside_the_agent_or_trusted_cgroups_are_refused() {
        let agent = Path::new("eci-agent");
        let trusted = [PathBuf::from("/"), PathBuf::from("/user.slice")];
        let check = |p: &str| check_parent("cgroupfs", Path::new(p), p, Some(agent), &trusted);
        assert_eq!(
            check("eci-agent").unwrap_err().code(),
            "cgroup_parent_agent"
        );
        // The agent's cgroup as `/proc/self/cgroup` spells it.
        let absolute = check_parent(
            "cgroupfs",
            Path::new("eci-agent/x"),
            "/eci-agent/x",
            Some(Path::new("/eci-agent")),
            &[],
        );
        assert_eq!(absolute.unwrap_err().code(), "cgroup_parent_agent");
        assert_eq!(
            check("eci-agent/x").unwrap_err().code(),
            "cgroup_parent_agent"
        );
        assert_eq!(
            check("user.slice/u").unwrap_err().code(),
            "cgroup_parent_trusted"
        );
        // The root is trusted exactly; the agent's name is compared by component.
        assert!(check("docker").is_ok());
        assert!(check("eci-agent2").is_ok());
        assert!(check("anything/x").is_ok());
    }

    #[test]
    fn systemd_scopes_under_a_trusted_slice_are_placed() {
        // The engine's default under the systemd driver, trusted on every systemd host: each
        // container gets its own docker-<id>.scope, denied by the kernel when it is made.
        let trusted = [PathBuf::from("/system.slice"), PathBuf::from("/user.slice")];
        for slice in ["", "system.slice", "user-ci.slice"] {
            let parent = parent_path("systemd", slice).unwrap();
            assert!(
                check_parent("systemd", &parent, slice, None, &trusted).is_ok(),
                "{slice}"
            );
        }
        // The agent's own cgroup stays refused under either driver.
        let agent = Path::new("system.slice/eci-agent.service/eci-agent");
        let parent = parent_path("systemd", "system.slice").unwrap();
        assert!(
            check_parent(
                "systemd",
                &parent,
                "system.slice",
                Some(Path::new("system.slice")),
                &[]
            )
            .is_err()
        );
        assert!(check_parent("systemd", &parent, "system.slice", Some(agent), &[]).is_ok());
        // Under cgroupfs a parent inside a trusted cgroup would inherit its allow.
        assert_eq!(
            check_parent(
                "cgroupfs",
                Path::new("system.slice/x"),
                "system.slice/x",
                None,
                &trusted
            )
            .unwrap_err()
            .code(),
            "cgroup_parent_trusted"
        );
    }
}

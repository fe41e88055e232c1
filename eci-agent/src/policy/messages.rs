//! The only place that spells Docker Desktop's ECI refusal texts, and the stable reason codes
//! that logs and metrics use. The sidecar turns them into a 403 JSON body; nothing else should
//! build these strings.
//!
//! The texts must never contain "permission denied" or "no such file": the docker CLI changes
//! its exit code when it sees them (cli `toStatusError`).

use std::fmt;

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

/// Stable snake_case codes for every refusal, for audit lines and metrics.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ReasonCode {
    CommandListed,
    CommandNotListed,
    CommandUnknownRoute,
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
}

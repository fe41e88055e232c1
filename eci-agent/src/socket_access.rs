//! Who may open the public socket: what dockerd does for its own (`--group`, default `docker`,
//! mode 0660), so that members of the `docker` group keep working when the agent takes over the
//! socket path.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;

/// The group as the settings name it, resolved from the group database file.
pub fn group_id(group_file: &Path, name: &str) -> anyhow::Result<Option<u32>> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Some(gid));
    }
    let text = std::fs::read_to_string(group_file)
        .with_context(|| format!("reading {}", group_file.display()))?;
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (n, _, gid) = (fields.next()?, fields.next()?, fields.next()?);
        (n == name).then(|| gid.parse().ok()).flatten()
    }))
}

/// Gives the socket at `path` to `group` with mode 0660. An unknown group is a warning when it
/// is the default (dockerd behaves the same), an error when it was asked for.
pub fn apply(path: &Path, group: &str, explicit: bool) -> anyhow::Result<()> {
    let group_file = PathBuf::from("/etc/group");
    match group_id(&group_file, group)? {
        Some(gid) => std::os::unix::fs::chown(path, None, Some(gid))
            .with_context(|| format!("giving {} to group {group}", path.display()))?,
        None if explicit => anyhow::bail!("--group {group}: no such group"),
        None => tracing::warn!(
            socket = %path.display(),
            "group {group} not found: the socket is for root only"
        ),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name_or_number() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\ndockerish:x:7:\ndocker:x:998:alice,bob\n").unwrap();
        assert_eq!(group_id(&file, "docker").unwrap(), Some(998));
        assert_eq!(group_id(&file, "nobody-here").unwrap(), None);
        assert_eq!(group_id(&file, "1234").unwrap(), Some(1234));
    }

    #[test]
    fn socket_gets_group_and_mode() {
        use std::os::unix::fs::MetadataExt as _;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        apply(&sock, "0", true).unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 0));
        assert!(apply(&sock, "no-such-group-eci", true).is_err());
        assert!(apply(&sock, "no-such-group-eci", false).is_ok());
    }
}

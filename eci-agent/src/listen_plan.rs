//! How `run` comes by its public socket, decided apart from doing it: systemd's socket
//! (`eci-agent.socket`, the same inode across agent restarts) or one it binds itself, and
//! whether the kernel tags it.

/// What the kernel is told about the public socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tag {
    /// Tagged: only allowed cgroups may connect (tag systemd's socket again in case
    /// `eci-agent load` did not run; bind our own between bind and listen).
    Protect,
    /// A dry run refuses no client: the socket systemd bound (tagged at birth by its protected
    /// name) loses its tag.
    Untag,
    /// A socket we bind untagged: the name an earlier run protected must not tag it at birth.
    UntagName,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Clear the path first (a stale socket, or the empty directory the engine makes for a
    /// container's bind mount when the socket is missing); only when we bind it ourselves.
    pub clear_path: bool,
    pub tag: Tag,
}

/// `activated`: systemd passed the socket; `kernel`: the programs are loaded; `dry_run`: refuse
/// nothing.
pub fn plan(activated: bool, kernel: bool, dry_run: bool) -> Plan {
    let tag = match (kernel && !dry_run, activated) {
        (true, _) => Tag::Protect,
        (false, true) => Tag::Untag,
        (false, false) => Tag::UntagName,
    };
    Plan {
        clear_path: !activated,
        tag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case() {
        use Tag::*;
        // (activated, kernel, dry_run) → (clear_path, tag). Without the kernel the tag calls
        // are skipped; the plan still says what a kernel would be told.
        let cases = [
            ((true, true, false), (false, Protect)),
            ((true, true, true), (false, Untag)),
            ((true, false, false), (false, Untag)),
            ((false, true, false), (true, Protect)),
            ((false, true, true), (true, UntagName)),
            ((false, false, false), (true, UntagName)),
        ];
        for ((activated, kernel, dry_run), (clear_path, tag)) in cases {
            assert_eq!(
                plan(activated, kernel, dry_run),
                Plan { clear_path, tag },
                "activated={activated} kernel={kernel} dry_run={dry_run}"
            );
        }
    }

    #[test]
    fn systemd_socket_is_never_cleared_and_ours_always_is() {
        for kernel in [false, true] {
            for dry_run in [false, true] {
                assert!(!plan(true, kernel, dry_run).clear_path);
                assert!(plan(false, kernel, dry_run).clear_path);
            }
        }
    }
}

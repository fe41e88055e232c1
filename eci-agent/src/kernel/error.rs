//! The kernel layer's errors: each names the syscall or file operation, the map or the program,
//! and the path it was about, as aya's `SyscallError`/`ProgramError` do, so that an operator
//! reading one line knows what the kernel refused and where. The cause is part of each message
//! and not also a `source()`: `{:#}` (anyhow's chain) would print it twice. The cause's own
//! sources (aya keeps the errno there) follow it in the message ([`chain`]).

use std::{io, path::PathBuf};

use super::btf::BtfError;
use crate::error_chain::chain;

/// Why the programs could not be loaded: the reasons a kernel cannot enforce at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built with `AYA_BUILD_SKIP=1`.
    #[error(
        "this eci-agent was built without its BPF object (AYA_BUILD_SKIP); build it with `cargo xtask build`"
    )]
    NoObject,
    /// `bpf` is not among the active LSMs.
    #[error(
        "BPF LSM is not active on this kernel (/sys/kernel/security/lsm: {active:?}); boot with `lsm=...,bpf` on the kernel command line"
    )]
    LsmInactive { active: String },
    /// The running kernel's BTF lacks a struct member the programs walk (or has it with another
    /// type): the programs would read the wrong memory, so they are not loaded at all.
    #[error(
        "this kernel's BTF ({path}) does not give the layout the programs need: {}; eci-agent cannot enforce on this kernel", chain(.cause)
    )]
    Offsets { path: &'static str, cause: BtfError },
    /// The kernel refused to load or attach a program.
    #[error(
        "this kernel refused the BPF LSM program {program} ({}); it cannot enforce here: use a kernel with BPF LSM (or `cargo xtask run --vm`)", chain(.cause)
    )]
    Refused {
        program: &'static str,
        cause: aya::programs::ProgramError,
    },
}

/// Everything else the kernel layer can fail at.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A file operation (the name says which) on a pin, a cgroup, a socket or their directory.
    #[error("{op} {}: {}", .path.display(), chain(.cause))]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: io::Error,
    },
    /// A map operation the kernel refused (`bpf(BPF_MAP_*)`).
    #[error("{op} in map {map}: {}", chain(.cause))]
    Map {
        map: &'static str,
        op: String,
        cause: aya::maps::MapError,
    },
    /// Pinning a program's link (`bpf(BPF_OBJ_PIN)`).
    #[error("pinning the {program} link at {}: {}", .path.display(), chain(.cause))]
    Pin {
        program: &'static str,
        path: PathBuf,
        cause: aya::pin::PinError,
    },
    /// Loading the object (`bpf(BPF_MAP_CREATE)` for its maps, BTF, relocations).
    #[error("loading the BPF object: {}", chain(&**.0))]
    Object(Box<aya::EbpfError>),
    /// A program or map this agent expects is not in its object (a build mismatch), or has
    /// another type.
    #[error("the BPF object has no {what} {name}")]
    Missing { what: &'static str, name: String },
    /// The kernel's BTF could not be read or parsed.
    #[error("kernel BTF {}: {}", .path.display(), chain(&**.cause))]
    Btf {
        path: PathBuf,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A program's link could not be taken over from aya.
    #[error("taking the link of {program}: {}", chain(.cause))]
    Link {
        program: &'static str,
        cause: aya::programs::ProgramError,
    },
    /// A path the kernel layer cannot use as given.
    #[error("{}: {why}", path.display())]
    BadPath { path: PathBuf, why: String },
    /// A cgroup named on the command line (`--trust-cgroup`, a container parent).
    #[error("{role} {}: {}", .path.display(), chain(&**.cause))]
    Cgroup {
        role: &'static str,
        path: PathBuf,
        cause: Box<KernelError>,
    },
    /// The kernel's id of one of our objects (`bpf(BPF_OBJ_GET_INFO_BY_FD)`), for the guard.
    #[error("reading the id of {object}: {}", chain(&**.cause))]
    Info {
        object: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The ring buffer of denials could not be watched.
    #[error("watching the ring buffer of denials: {}", chain(.0))]
    Events(io::Error),
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;

impl KernelError {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |cause| Self::Io { op, path, cause }
    }

    /// Whether the kernel refused a new entry because the map is full (`E2BIG` from a full
    /// hash map, `ENOSPC` from storage maps).
    pub fn is_map_full(&self) -> bool {
        match self {
            Self::Map {
                cause: aya::maps::MapError::SyscallError(err),
                ..
            } => matches!(
                err.io_error.raw_os_error(),
                Some(libc::E2BIG | libc::ENOSPC)
            ),
            _ => false,
        }
    }

    pub(super) fn map(
        map: &'static str,
        op: impl Into<String>,
    ) -> impl FnOnce(aya::maps::MapError) -> Self {
        let op = op.into();
        move |cause| Self::Map { map, op, cause }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_printed_once_in_a_chain() {
        // What `eci-agent unload` printed from an untrusted cgroup: the errno twice.
        let err = KernelError::io("joining the agent's cgroup through", "/x/cgroup.procs")(
            io::Error::from_raw_os_error(libc::EPERM),
        );
        let text = format!("{:#}", anyhow::Error::from(err).context("unload"));
        assert_eq!(
            text,
            "unload: joining the agent's cgroup through /x/cgroup.procs: Operation not permitted (os error 1)"
        );
    }

    #[test]
    fn an_aya_cause_keeps_its_errno() {
        // aya keeps the errno in its error's source, which a chain of ours no longer walks.
        let err = KernelError::map("ECI_APPROVALS", "withdrawing an approval")(
            aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: io::Error::from_raw_os_error(libc::ENOENT),
            }),
        );
        let text = format!("{:#}", anyhow::Error::from(err));
        assert!(
            text.ends_with("`bpf_map_delete_elem` failed: No such file or directory (os error 2)"),
            "{text}"
        );
        assert_eq!(text.matches("No such file").count(), 1, "{text}");
    }
}

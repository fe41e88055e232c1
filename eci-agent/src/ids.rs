//! The domain's identities, shared by every layer: who a container is and which cgroup a
//! process runs in. A leaf: it imports nothing of the crate.

use std::fmt;

/// A full 64-hex container id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerId(String);

impl ContainerId {
    pub fn parse(s: &str) -> Option<Self> {
        (s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cgroup v2 id (what `bpf_get_current_cgroup_id()` returns).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CgroupId(pub u64);

impl fmt::Display for CgroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Who is behind a connection, as the sidecar and the gate act on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKind {
    /// A process in a trusted host cgroup: nothing is filtered.
    TrustedHost,
    /// A process inside a container: the commandList applies.
    Container(ContainerId),
    /// Neither: refused outright (the kernel should already have stopped it).
    Unknown,
}

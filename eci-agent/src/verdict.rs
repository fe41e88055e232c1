//! What became of a request or a container start: the outcome the audit log, the metrics and the
//! logs all name. A leaf, so that whoever counts or records outcomes need not import the sidecar.

/// What became of a request (or a container start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Deny,
    /// `--dry-run`: the policy refuses it, the agent let it through.
    WouldDeny,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny => "deny",
            Self::WouldDeny => "would_deny",
        }
    }
}

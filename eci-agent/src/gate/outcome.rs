//! What the gate answers: a pass and why, or a refusal with the ECI-style text the client sees and
//! a stable reason code for metrics, `explain` and the audit log.

use crate::{
    engine::EngineError,
    ids::ContainerId,
    policy::{
        image::AllowedBy,
        image_ref::AnyReference,
        messages::{self, ReasonCode},
        mount::Reach,
        profile::{Breach, ContainerUse},
        wire::InspectedContainer,
    },
};

use super::placement;

/// Why a container may not start (or be created) as asked.
#[derive(Clone, Debug)]
pub enum GateRefusal {
    /// Docker Desktop's refusal: the image may not mount the socket.
    ImageNotAllowed { message: String, reason: ReasonCode },
    /// Refused for what it asks, whatever its image: an ECI-style `message` naming the reason,
    /// and a snake_case `reason` code.
    Refused {
        message: String,
        reason: &'static str,
    },
    /// The request or the engine's answer could not be read, or the engine could not be asked:
    /// nothing is let through unverified.
    Unverifiable { message: String },
}

impl GateRefusal {
    pub(super) fn unverifiable(what: impl std::fmt::Display) -> Self {
        Self::Unverifiable {
            message: format!(
                "enhanced container isolation: cannot verify the container's socket mounts: {what}"
            ),
        }
    }

    /// The container-caller profile refused an option.
    pub fn profile(breach: &Breach, settings_location: &str) -> Self {
        Self::Refused {
            message: messages::profile_refused(breach, settings_location),
            reason: breach.code(),
        }
    }

    /// The container-caller profile refused a use of an existing container.
    pub fn profile_use(
        what: ContainerUse,
        container: &str,
        breach: &Breach,
        settings_location: &str,
    ) -> Self {
        Self::Refused {
            message: messages::profile_refused_use(what, container, breach, settings_location),
            reason: breach.code(),
        }
    }

    /// The kernel could not take the container: its approval or the verdict its cgroup needs
    /// could not be written (a full map), so it is not started rather than started unjudged.
    pub(super) fn kernel(id: &ContainerId, err: &crate::kernel::KernelError) -> Self {
        let (why, reason) = if err.is_map_full() {
            (
                "the kernel's map of container verdicts is full",
                "kernel_map_full",
            )
        } else {
            (
                "the kernel refused the container's verdict",
                "kernel_unavailable",
            )
        };
        tracing::error!(container = %id, reason, "start refused: {why}: {err}");
        Self::Refused {
            message: format!(
                "enhanced container isolation: container {id} cannot be started: {why} ({err}); \
                 ask the administrator to check the eci-agent log"
            ),
            reason,
        }
    }

    pub(super) fn placement(err: &placement::PlacementError) -> Self {
        Self::Refused {
            message: format!("enhanced container isolation: container cgroup refused: {err}"),
            reason: err.code(),
        }
    }

    /// The ECI-style text the client sees.
    pub fn message(&self) -> &str {
        match self {
            Self::ImageNotAllowed { message, .. }
            | Self::Refused { message, .. }
            | Self::Unverifiable { message } => message,
        }
    }

    /// The snake_case reason code, for metrics and the audit log.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ImageNotAllowed { reason, .. } => reason.as_str(),
            Self::Refused { reason, .. } => reason,
            Self::Unverifiable { .. } => "mount_unverifiable",
        }
    }
}

/// A container the gate let through, and why.
#[derive(Clone, Debug)]
pub enum GatePass {
    /// No mount reaches a protected socket (or the engine will refuse the request itself).
    Clear,
    /// ECI is off: socket mounts are not restricted.
    EciOff,
    /// Its mounts reach the socket and its image is allowed.
    Allowed { reach: Box<Reach>, by: AllowedBy },
}

impl GatePass {
    /// Whether the container may reach the socket (and so gets the allow verdict).
    pub fn reaches_socket(&self) -> bool {
        matches!(self, Self::Allowed { .. })
    }
}

/// A container judged from the engine's own view of it.
#[derive(Clone, Debug)]
pub struct Judgement {
    pub container: InspectedContainer,
    pub outcome: Result<GatePass, GateRefusal>,
}

impl Judgement {
    /// Whether the container may use the socket (ECI off counts: nothing is restricted).
    pub fn allowed(&self) -> bool {
        matches!(&self.outcome, Ok(p) if p.reaches_socket() || matches!(p, GatePass::EciOff))
    }
}

/// The image as the refusal names it: the normalised repository without tag or digest
/// (`docker.io/library/docker`), or the ID as given.
pub fn display_name(image: &str) -> String {
    match AnyReference::parse(image) {
        Ok(AnyReference::Named(r)) => r.name.to_string(),
        Ok(AnyReference::Id(d)) => d.to_string(),
        Err(_) => image.to_owned(),
    }
}

/// The rule that let a container through, for the table and logs.
pub fn rule_of(pass: &GatePass) -> String {
    match pass {
        GatePass::Clear => "no socket mount".into(),
        GatePass::EciOff => "eci off".into(),
        GatePass::Allowed { by, .. } => match by {
            AllowedBy::EveryImage => "\"*\"".into(),
            AllowedBy::Digest { entry, .. } => entry.to_string(),
            AllowedBy::Derived { entry, base } => format!("{entry} (derived from {base})"),
        },
    }
}

/// A stable snake_case code for a pass, for metrics and `explain`.
pub fn pass_reason(pass: &GatePass) -> &'static str {
    match pass {
        GatePass::Clear => "no_socket_mount",
        GatePass::EciOff => "eci_disabled",
        GatePass::Allowed { by, .. } => allowed_reason(by),
    }
}

/// A stable snake_case code for why an image passed.
pub fn allowed_reason(by: &AllowedBy) -> &'static str {
    match by {
        AllowedBy::EveryImage => "every_image",
        AllowedBy::Digest { .. } => "image_allowed",
        AllowedBy::Derived { .. } => "derived_image",
    }
}

impl From<EngineError> for GateRefusal {
    fn from(err: EngineError) -> Self {
        Self::unverifiable(err)
    }
}

/// A stable snake_case code for an outcome.
pub fn outcome_reason(outcome: &Result<GatePass, GateRefusal>) -> &'static str {
    match outcome {
        Ok(pass) => pass_reason(pass),
        Err(refusal) => refusal.reason(),
    }
}

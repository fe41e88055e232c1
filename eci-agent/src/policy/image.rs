//! The image verdict for a container that can reach the socket: allowed by digest, as a derived
//! local-only image, or by `"*"`.

use super::image_ref::ImagePattern;

/// The compiled `imageList`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    pub patterns: Vec<ImagePattern>,
    pub allow_derived_images: bool,
}

/// (being written)
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(DenyReason),
}

/// (being written)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyReason {
    NotAllowed,
}

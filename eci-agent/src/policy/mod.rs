//! The pure decision logic: typed values in, a verdict out. No I/O, no async, no sockets:
//! this module imports only std, serde and eci-common (CI greps for tokio/hyper/aya/reqwest).
//!
//! - [`image_ref`]: image references and imageList entries (distribution/reference rules).
//! - [`vocabulary`]: the docker CLI's command names and group wildcards.
//! - [`command`]: the commandList rules and the compiled allow/deny matcher.
//! - [`route`]: the Engine API route table and the request classifier.
//! - [`image`]: the image verdict for a container that mounts the socket.
//! - [`path_clean`]: Go's `path.Clean`, the one copy (the sidecar routes with it too).
//! - [`go_query`]: a form value as Go's `url.ParseQuery` reads it (routes split by query).
//! - [`go_json`]: JSON decoded with Go's `encoding/json` rules, field by field.
//! - [`wire`]: the Engine API bodies the gate reads (create, exec, inspect), decoded as the
//!   engine decodes them, and the mounts they ask for.
//! - [`mount`]: whether a container's mounts can reach a protected socket.
//! - [`profile`]: the container-caller profile (what a socket holder may not create).
//! - [`messages`]: the exact ECI refusal texts.
#![forbid(unsafe_code)]

pub mod command;
#[cfg(test)]
mod fake_host;
pub mod go_json;
pub mod go_query;
pub mod image;
pub mod image_ref;
pub mod messages;
pub mod mount;
pub mod path_clean;
pub mod profile;
pub mod route;
pub mod vocabulary;
pub mod wire;

pub use command::{CommandPolicy, CommandVerdict};
pub use image::{DenyReason, ImagePolicy, Verdict};
pub use image_ref::{Digest, ImagePattern, ImageRef, RepoName};

/// The compiled `dockerSocketMount` section: built once per settings load, shared read-only.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    pub images: ImagePolicy,
    pub commands: CommandPolicy,
    /// `eciAgent.containerProfile`: what container callers may not create.
    pub profile: profile::ContainerProfile,
}

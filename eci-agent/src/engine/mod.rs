//! The agent's own view of the real engine: a small API client and the decoding of what the
//! engine answers into the facts the policy judges.
#![forbid(unsafe_code)]

pub mod api;
pub mod decode;
#[cfg(test)]
pub mod fake;

pub use api::{EngineApi, EngineError};

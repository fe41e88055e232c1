//! Fixtures shared by the integration tests (dockerd, registry, cgroups) and the kernel-VM suite.

pub mod agent;
pub mod bpfsys;
pub mod dockerd;
pub mod images;
pub mod registry;
pub mod sidecar;

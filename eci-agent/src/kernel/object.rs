//! The BPF object built by `eci-agent/build.rs` from eci-ebpf.

/// Empty when the crate was built with `AYA_BUILD_SKIP=1` (checks and unit tests only).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eci"));

/// The programs in the object: (symbol, LSM hook name).
pub const PROGRAMS: &[(&str, &str)] = &[("inode_permission", "inode_permission")];

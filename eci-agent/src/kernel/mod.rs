//! Kernel enforcement: the BPF LSM programs of eci-ebpf, their pinned maps and links, and the
//! cgroup identities they judge by.
//!
//! - `object.rs`: the embedded BPF object and its programs.
//! - `btf.rs`: kernel struct member offsets from the running kernel's BTF, for the programs.
//! - `loader.rs`: load, attach and pin (and adopt what an earlier agent pinned).
//! - `maps.rs`: the only writer of the maps (protected inodes, cgroup verdicts).
//! - `events.rs`: denials reported by the programs.
//! - `admission.rs`: container cgroups start denied (the existing ones, at start).
//! - `cgroup.rs`: cgroup v2 paths and ids.
//! - `probe.rs`: whether this kernel can enforce at all.
//! - `admin.rs`: `eci-agent status` and `eci-agent unload`.

mod admin;
pub mod admission;
pub mod btf;
pub mod cgroup;
pub mod events;
pub mod loader;
pub mod maps;
mod object;
pub mod probe;

pub use admin::{status, unload};
pub use loader::{Enforcer, LoadError, PinLayout};
pub use maps::KernelMaps;

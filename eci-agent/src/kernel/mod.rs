//! Kernel enforcement: the BPF LSM programs of eci-ebpf, their pinned maps and links, and the
//! cgroup identities they judge by.
//!
//! - `object.rs`: the embedded BPF object and its programs.
//! - `btf.rs`: kernel struct member offsets from the running kernel's BTF, for the programs.
//! - `error.rs`: what the kernel refused, and where (typed; `anyhow` only above this layer).
//! - `lsm.rs`: which LSMs are active.
//! - `pins.rs`: where enforcement is pinned, and removing it.
//! - `guard.rs`: the agent's own maps, programs, links and pins are the agent's cgroup's alone.
//! - `loader.rs`: load, attach and pin (and adopt what an earlier agent pinned).
//! - `enforce.rs`: what `run` sets up in the kernel before serving (verdicts, parents, engine).
//! - `sockets.rs`: the protected socket paths (bound protected, watched when re-created).
//! - `maps.rs`: the only writer of the maps (protected inodes, cgroup verdicts).
//! - `verdicts.rs`: the verdict map as the gate uses it (a trait: the kernel's, or one in memory).
//! - `events.rs`: denials reported by the programs.
//! - `admission.rs`: container cgroups start denied (the existing ones, at start).
//! - `cgroup.rs`: cgroup v2 paths and ids.
//! - `probe.rs`: whether this kernel can enforce at all.
//! - `admin.rs`: `eci-agent status` and `eci-agent unload`.

mod admin;
pub mod admission;
pub mod btf;
pub mod cgroup;
pub mod enforce;
pub mod error;
pub mod events;
pub mod guard;
pub mod loader;
pub mod lsm;
pub mod maps;
mod object;
pub mod pins;
pub mod probe;
pub mod sockets;
pub mod verdicts;

pub use admin::{status, unload};
pub use error::{KernelError, LoadError};
pub use loader::Enforcer;
pub use maps::KernelMaps;
pub use pins::PinLayout;

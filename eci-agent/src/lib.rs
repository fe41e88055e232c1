//! eci-agent: decides which containers may talk to the Docker Engine socket, and enforces it twice:
//! in the kernel (BPF LSM programs, `kernel/`) and at the HTTP layer (the sidecar, `sidecar/`).
//!
//! The decision logic is pure (`settings/` → `policy/` → verdict) and knows nothing of sockets,
//! BPF or registries; the edges (`kernel/`, `sidecar/`, `registry/`) feed it typed values.

pub mod agent;
pub mod check;
pub mod cli;
pub mod denials;
pub mod engine;
pub mod error_chain;
pub mod explain;
pub mod gate;
pub mod host_args;
pub mod ids;
pub mod kernel;
pub mod listen_plan;
pub mod load;
pub mod logging;
pub mod metrics;
pub mod node_install;
pub mod policy;
pub mod process;
pub mod registry;
pub mod reload;
pub mod settings;
pub mod sidecar;
pub mod socket_access;
pub mod socket_path;
pub mod state;
pub mod status;
pub mod systemd;
pub mod verdict;

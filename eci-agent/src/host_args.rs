//! The flags that say where the agent sits on this host (its sockets, pins and cgroups), shared
//! by the subcommands that must agree on them: `load` pins what `run` adopts, and `status` and
//! `unload` read the pins both leave.

use std::path::PathBuf;

use clap::Args;

/// Default place of the pinned BPF maps and links; kept across agent restarts.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eci";

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PinArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// The sockets, pins and cgroups of `run` and `load`: the early `load` protects the names and
/// trusts the cgroups that `run` later serves and adopts, so both take them from one place.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct HostArgs {
    /// The public socket the sidecar listens on (what clients use as DOCKER_HOST).
    #[arg(long)]
    pub listen: PathBuf,
    /// The real engine socket; only the agent may reach it.
    #[arg(long)]
    pub engine: PathBuf,
    #[command(flatten)]
    pub pin: PinArgs,
    /// A host cgroup (relative to the cgroup2 mount) whose processes are trusted; repeatable.
    /// `load` skips one that does not exist yet (denied until `run` trusts it).
    #[arg(long = "trust-cgroup", value_name = "PATH")]
    pub trust_cgroups: Vec<PathBuf>,
    /// Where the cgroup2 hierarchy is mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
}

//! The pin directory flag, shared by `run`, `status` and `unload`: they must agree on where the
//! kernel state lives.

use std::path::PathBuf;

use clap::Args;

/// Default place of the pinned BPF maps and links; kept across agent restarts.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eci";

#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

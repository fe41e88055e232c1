//! `eci-agent run`: loads the kernel programs, then serves the sidecar (being written).

use crate::cli::RunArgs;

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("run is not implemented yet: {args:?}")
}

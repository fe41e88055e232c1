//! Kernel enforcement (being written).

use std::path::Path;

pub fn status(pin_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("status is not implemented yet ({})", pin_dir.display())
}

pub fn unload(pin_dir: &Path) -> anyhow::Result<()> {
    anyhow::bail!("unload is not implemented yet ({})", pin_dir.display())
}

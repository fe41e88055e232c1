//! Whether this kernel can enforce. `bpf` in `/sys/kernel/security/lsm` is necessary but not
//! sufficient (some kernels list it and still refuse every LSM program with EPERM), so the final
//! word is loading the programs: `Enforcer::load` reports `LoadError::Refused` then.

use std::path::Path;

use super::{
    error::Result,
    loader::Enforcer,
    pins::{self, PinLayout},
};

/// The final word: loads and attaches the programs into a throwaway pin directory under
/// `bpffs`, then removes them. Nothing is protected meanwhile (no inode is tagged, no container
/// parent registered), so the programs refuse nothing while they are attached.
pub fn try_load(bpffs: &Path) -> Result<()> {
    let pins = PinLayout::new(&bpffs.join(format!("eci-probe-{}", std::process::id())));
    let loaded = Enforcer::load(&pins);
    let removed = pins::unload(&pins);
    loaded?;
    removed.map(drop)
}

//! Whether this kernel can enforce. `bpf` in `/sys/kernel/security/lsm` is necessary but not
//! sufficient (some kernels list it and still refuse every LSM program with EPERM), so the final
//! word is loading the programs: `Enforcer::load` reports `LoadError::Refused` then.

use std::{fs, io};

pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

pub fn active_lsms() -> io::Result<String> {
    fs::read_to_string(LSM_LIST).map(|s| s.trim().to_owned())
}

pub fn lsm_list_has_bpf(list: &str) -> bool {
    list.split(',').any(|name| name.trim() == "bpf")
}

/// The final word: loads and attaches the programs into a throwaway pin directory under
/// `bpffs`, then removes them. Nothing is protected meanwhile (no inode is tagged, no container
/// parent registered), so the programs refuse nothing while they are attached.
pub fn try_load(bpffs: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let pins = super::PinLayout::new(&bpffs.join(format!("eci-probe-{}", std::process::id())));
    let loaded = super::Enforcer::load(&pins);
    let removed = super::loader::unload(&pins)
        .with_context(|| format!("removing the probe's pins under {}", pins.root().display()));
    loaded?;
    removed.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_must_be_a_whole_entry() {
        assert!(lsm_list_has_bpf("lockdown,capability,landlock,bpf"));
        assert!(lsm_list_has_bpf("bpf"));
        assert!(!lsm_list_has_bpf("lockdown,capability,bpfx"));
        assert!(!lsm_list_has_bpf(""));
    }
}

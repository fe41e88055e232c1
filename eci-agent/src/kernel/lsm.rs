//! Which LSMs the running kernel has active. `bpf` among them is necessary, not sufficient: the
//! final word is loading the programs (`probe.rs`).

use std::{fs, io};

pub const LSM_LIST: &str = "/sys/kernel/security/lsm";

pub fn active_lsms() -> io::Result<String> {
    fs::read_to_string(LSM_LIST).map(|s| s.trim().to_owned())
}

pub fn lsm_list_has_bpf(list: &str) -> bool {
    list.split(',').any(|name| name.trim() == "bpf")
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

//! The verdict and approval maps as the gate uses them, behind a trait: the kernel's map in the agent
//! ([`KernelMaps`]), a map in memory in tests ([`MemoryVerdicts`]), so that the gate's kernel
//! decisions (which cgroup gets which verdict, which never gets one, what a full map does) are
//! table-tested without root or a BPF LSM kernel. The VM suite checks the real map.

use std::collections::BTreeMap;

use eci_common::{CgroupVerdict, MAP_APPROVALS, MAP_VERDICTS};

use super::{
    error::{KernelError, Result},
    maps::KernelMaps,
};
use crate::ids::{CgroupId, ContainerId};

/// The operations the gate makes on cgroup verdicts.
pub trait VerdictStore: Send {
    fn set_verdict(&mut self, id: CgroupId, verdict: CgroupVerdict) -> Result<()>;
    /// Removing a verdict that is not there is not an error.
    fn remove_verdict(&mut self, id: CgroupId) -> Result<()>;
    /// Every verdict, by cgroup id.
    fn verdicts(&self) -> Vec<(CgroupId, CgroupVerdict)>;
    /// Approves container `id`: its cgroup gets `verdict` when it is created (`cgroup_mkdir`).
    fn set_approval(&mut self, id: &ContainerId, verdict: CgroupVerdict) -> Result<()>;
    /// Withdrawing an approval that is not there is not an error.
    fn remove_approval(&mut self, id: &ContainerId) -> Result<()>;
    /// Every approval, by container id.
    fn approvals(&self) -> Vec<(String, CgroupVerdict)>;
}

impl VerdictStore for KernelMaps {
    fn set_verdict(&mut self, id: CgroupId, verdict: CgroupVerdict) -> Result<()> {
        KernelMaps::set_verdict(self, id, verdict)
    }

    fn remove_verdict(&mut self, id: CgroupId) -> Result<()> {
        KernelMaps::remove_verdict(self, id)
    }

    fn verdicts(&self) -> Vec<(CgroupId, CgroupVerdict)> {
        KernelMaps::verdicts(self)
    }

    fn set_approval(&mut self, id: &ContainerId, verdict: CgroupVerdict) -> Result<()> {
        KernelMaps::set_approval(self, id, verdict)
    }

    fn remove_approval(&mut self, id: &ContainerId) -> Result<()> {
        KernelMaps::remove_approval(self, id)
    }

    fn approvals(&self) -> Vec<(String, CgroupVerdict)> {
        KernelMaps::approvals(self)
    }
}

/// Verdicts and approvals in memory, for tests. With a `capacity`, a new entry beyond it fails
/// as the kernel's full hash map does (`E2BIG`); replacing an existing one still works.
#[derive(Clone, Debug, Default)]
pub struct MemoryVerdicts {
    pub entries: BTreeMap<CgroupId, CgroupVerdict>,
    pub capacity: Option<usize>,
    pub approved: BTreeMap<String, CgroupVerdict>,
    pub approvals_capacity: Option<usize>,
}

impl MemoryVerdicts {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: Some(capacity),
            ..Self::default()
        }
    }
}

/// The kernel's answer to a new entry in a full hash map.
fn full(map: &'static str, op: String) -> KernelError {
    KernelError::map(map, op)(aya::maps::MapError::SyscallError(aya::sys::SyscallError {
        call: "bpf_map_update_elem",
        io_error: std::io::Error::from_raw_os_error(libc::E2BIG),
    }))
}

impl VerdictStore for MemoryVerdicts {
    fn set_verdict(&mut self, id: CgroupId, verdict: CgroupVerdict) -> Result<()> {
        let full = self
            .capacity
            .is_some_and(|cap| self.entries.len() >= cap && !self.entries.contains_key(&id));
        if full {
            return Err(self::full(
                MAP_VERDICTS,
                format!("setting the verdict of cgroup {id}"),
            ));
        }
        self.entries.insert(id, verdict);
        Ok(())
    }

    fn remove_verdict(&mut self, id: CgroupId) -> Result<()> {
        self.entries.remove(&id);
        Ok(())
    }

    fn verdicts(&self) -> Vec<(CgroupId, CgroupVerdict)> {
        self.entries.iter().map(|(id, v)| (*id, *v)).collect()
    }

    fn set_approval(&mut self, id: &ContainerId, verdict: CgroupVerdict) -> Result<()> {
        let full = self.approvals_capacity.is_some_and(|cap| {
            self.approved.len() >= cap && !self.approved.contains_key(id.as_str())
        });
        if full {
            return Err(self::full(
                MAP_APPROVALS,
                format!("approving container {id}"),
            ));
        }
        self.approved.insert(id.to_string(), verdict);
        Ok(())
    }

    fn remove_approval(&mut self, id: &ContainerId) -> Result<()> {
        self.approved.remove(id.as_str());
        Ok(())
    }

    fn approvals(&self) -> Vec<(String, CgroupVerdict)> {
        self.approved
            .iter()
            .map(|(id, v)| (id.clone(), *v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_memory_map_refuses_new_entries_like_the_kernel() {
        let mut map = MemoryVerdicts::with_capacity(1);
        map.set_verdict(CgroupId(1), CgroupVerdict::DENY).unwrap();
        // Replacing is fine when full; a new key is not.
        map.set_verdict(CgroupId(1), CgroupVerdict::DENY).unwrap();
        let err = map
            .set_verdict(CgroupId(2), CgroupVerdict::DENY)
            .unwrap_err();
        assert!(err.to_string().contains(MAP_VERDICTS), "{err}");
        assert!(err.is_map_full(), "{err}");
        map.remove_verdict(CgroupId(3)).unwrap();
        assert_eq!(map.verdicts(), [(CgroupId(1), CgroupVerdict::DENY)]);
    }
}

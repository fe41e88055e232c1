//! The maps, as eci-common describes them.

use aya_ebpf::{
    btf_maps::{HashMap, InodeStorage, RingBuf},
    macros::btf_map,
};
use eci_common::{
    ApprovalKey, CgroupVerdict, DenyEvent, EVENTS_BYTES, InodeKey, MAX_ADMISSION_PARENTS,
    MAX_APPROVALS, MAX_GUARDED, MAX_PROTECTED, MAX_PROTECTED_DIRS, MAX_VERDICTS, Protected,
    ProtectedDir, ProtectedDirRecord,
};

#[btf_map(name = "ECI_PROTECTED")]
pub static PROTECTED: InodeStorage<Protected> = InodeStorage::new();

#[btf_map(name = "ECI_VERDICTS")]
pub static VERDICTS: HashMap<u64, CgroupVerdict, { MAX_VERDICTS as usize }> = HashMap::new();

#[btf_map(name = "ECI_EVENTS")]
pub static EVENTS: RingBuf<DenyEvent, { EVENTS_BYTES as usize }> = RingBuf::new();

/// Written and read by user space only; defined here so it is created and pinned with the rest.
#[btf_map(name = "ECI_PROTECTED_INDEX")]
pub static PROTECTED_INDEX: HashMap<InodeKey, Protected, { MAX_PROTECTED as usize }> =
    HashMap::new();

#[btf_map(name = "ECI_ADMISSION")]
pub static ADMISSION: HashMap<u64, u32, { MAX_ADMISSION_PARENTS as usize }> = HashMap::new();

#[btf_map(name = "ECI_PROTECTED_DIRS")]
pub static PROTECTED_DIRS: InodeStorage<ProtectedDir> = InodeStorage::new();

/// Written and read by user space only, like `PROTECTED_INDEX`.
#[btf_map(name = "ECI_PROTECTED_DIRS_IDX")]
pub static PROTECTED_DIRS_INDEX: HashMap<
    InodeKey,
    ProtectedDirRecord,
    { MAX_PROTECTED_DIRS as usize },
> = HashMap::new();

/// The agent's own maps, programs and links, and its cgroup (see `guard.rs`).
#[btf_map(name = "ECI_GUARD")]
pub static GUARD: HashMap<u64, u64, { MAX_GUARDED as usize }> = HashMap::new();

/// The pin directories (see `guard.rs`).
#[btf_map(name = "ECI_GUARD_DIRS")]
pub static GUARD_DIRS: InodeStorage<u32> = InodeStorage::new();

/// Containers the gate approved before their start: container id → the verdict their cgroup gets
/// at creation (`hooks/cgroup_mkdir.rs`).
#[btf_map(name = "ECI_APPROVALS")]
pub static APPROVALS: HashMap<ApprovalKey, CgroupVerdict, { MAX_APPROVALS as usize }> =
    HashMap::new();

//! Denials reported by the programs on the ring buffer, turned into log lines.

use aya::maps::{Map, MapData, RingBuf};
use eci_common::{DenyEvent, Hook};
use tokio::io::unix::AsyncFd;

use super::error::{KernelError, Result};

/// Decodes one ring buffer record; `None` for a record of another size (a newer program).
pub fn decode(bytes: &[u8]) -> Option<DenyEvent> {
    if bytes.len() != size_of::<DenyEvent>() {
        return None;
    }
    // SAFETY: the length matches and DenyEvent is plain data (any bit pattern is valid);
    // read_unaligned because the record need not be aligned for u64.
    Some(unsafe { bytes.as_ptr().cast::<DenyEvent>().read_unaligned() })
}

/// The task's command name without its NUL padding.
pub fn comm(event: &DenyEvent) -> String {
    let end = event
        .comm
        .iter()
        .position(|&b| b == 0)
        .unwrap_or(event.comm.len());
    String::from_utf8_lossy(&event.comm[..end]).into_owned()
}

/// Drains the records available now.
pub fn drain(ring: &mut RingBuf<MapData>) -> Vec<DenyEvent> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if let Some(event) = decode(&item) {
            events.push(event);
        }
    }
    events
}

/// Logs every denial, and hands it to `on_denial` (audit log, metrics), until the task is
/// dropped.
pub async fn log_denials(
    map: Map,
    mut on_denial: impl FnMut(&DenyEvent) + Send + 'static,
) -> Result<()> {
    let ring = RingBuf::try_from(map).map_err(KernelError::map(
        eci_common::MAP_EVENTS,
        "taking the ring buffer",
    ))?;
    // SAFETY: the ring buffer owns its fd and closes it only when dropped, which happens after
    // the AsyncFd deregisters it (the AsyncFd owns the ring buffer).
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|err| KernelError::Events(std::io::Error::other(err.to_string())))?;
    loop {
        let mut guard = fd.readable_mut().await.map_err(KernelError::Events)?;
        for event in drain(guard.get_inner_mut()) {
            let known = Hook::from_u32(event.hook);
            let hook = known.map_or("unknown", Hook::name);
            if let Some(Hook::DInstantiate | Hook::InodeRename) = known {
                // Not a denial of access: the kernel could not store the tag of an inode that
                // took a protected name.
                tracing::error!(
                    target: "eci::kernel",
                    pid = event.tgid,
                    comm = %comm(&event),
                    dev = event.dev,
                    ino = event.ino,
                    hook,
                    class = event.class,
                    "the kernel could not tag a socket that took a protected name (out of memory); \
                     a rename is refused, a new socket is tagged by the agent's watch"
                );
                continue;
            }
            if let Some(Hook::CgroupMkdir) = known {
                tracing::error!(
                    target: "eci::kernel",
                    pid = event.tgid,
                    comm = %comm(&event),
                    cgroup = event.ino,
                    hook,
                    "a new container cgroup got no verdict: the verdict map is full \
                     ({} entries); the cgroup inherits its ancestors' standing",
                    eci_common::MAX_VERDICTS
                );
                continue;
            }
            if let Some(Hook::FileOpen | Hook::TaskAlloc) = known {
                tracing::warn!(
                    target: "eci::kernel",
                    pid = event.tgid,
                    comm = %comm(&event),
                    cgroup_id = event.cgroup_id,
                    target_cgroup = event.ino,
                    hook,
                    "kernel refused a change of cgroup (a protected cgroup's file opened for \
                     writing, or clone3(CLONE_INTO_CGROUP)) by a process that may not change cgroups"
                );
                on_denial(&event);
                continue;
            }
            if let Some(Hook::Bpf | Hook::BpfMap | Hook::BpfProg | Hook::PinRemove) = known {
                // The guard (`guard.rs`): `ino` is the object's id (or the pin directory's inode),
                // `class` its kind.
                tracing::warn!(
                    target: "eci::kernel",
                    pid = event.tgid,
                    comm = %comm(&event),
                    cgroup_id = event.cgroup_id,
                    object = event.ino,
                    kind = event.class,
                    hook,
                    "kernel refused a process outside the agent's cgroup the agent's own BPF \
                     objects or pins"
                );
            } else {
                tracing::warn!(
                    target: "eci::kernel",
                    pid = event.tgid,
                    comm = %comm(&event),
                    cgroup_id = event.cgroup_id,
                    dev = event.dev,
                    ino = event.ino,
                    hook,
                    class = event.class,
                    "kernel denied access to a protected socket"
                );
            }
            on_denial(&event);
        }
        guard.clear_ready();
    }
}

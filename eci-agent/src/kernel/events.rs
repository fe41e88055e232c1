//! Denials reported by the programs on the ring buffer, turned into log lines.

use aya::maps::{Map, MapData, RingBuf};
use eci_common::{DenyEvent, Hook, MAX_VERDICTS};
use tokio::io::unix::AsyncFd;
use tracing::Level;

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

/// Logs every record (denials as warnings, the kernel's failures as errors, see [`meaning`]),
/// and hands each denial to `on_denial` (audit log, metrics) and each failure to `on_failure`
/// (metrics), until the task is dropped.
pub async fn log_denials(
    map: Map,
    mut on_denial: impl FnMut(&DenyEvent) + Send + 'static,
    mut on_failure: impl FnMut(&DenyEvent) + Send + 'static,
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
            let meaning = meaning(Hook::from_u32(event.hook));
            log(&event, &meaning);
            if meaning.denial {
                on_denial(&event);
            } else {
                on_failure(&event);
            }
        }
        guard.clear_ready();
    }
}

/// What a record's `ino` and `class` name, by hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// A socket inode (`dev`, `ino`) and its protection class.
    Socket,
    /// The cgroup a process tried to enter or write (`ino` is its id).
    TargetCgroup,
    /// A cgroup just made (`ino` is its id).
    NewCgroup,
    /// One of the agent's BPF objects (`ino` is its id, `class` its kind) or its pin directory.
    BpfObject,
}

/// How the agent reports one hook's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meaning {
    pub level: Level,
    /// A refused access: audited and counted. The others report a kernel failure.
    pub denial: bool,
    pub subject: Subject,
    pub message: &'static str,
}

/// The one table from hook to report; `None` is a record from a newer program.
pub fn meaning(hook: Option<Hook>) -> Meaning {
    let (level, denial, subject, message) = match hook {
        // Not a denial of access: the kernel could not store the tag of an inode that took a
        // protected name.
        Some(Hook::DInstantiate | Hook::InodeRename) => (
            Level::ERROR,
            false,
            Subject::Socket,
            "the kernel could not tag a socket that took a protected name (out of memory); \
             a rename is refused, a new socket is tagged by the agent's watch",
        ),
        Some(Hook::CgroupMkdir) => (
            Level::ERROR,
            false,
            Subject::NewCgroup,
            "a new container cgroup got no verdict: the verdict map is full; the cgroup \
             inherits its ancestors' standing",
        ),
        Some(Hook::FileOpen | Hook::TaskAlloc) => (
            Level::WARN,
            true,
            Subject::TargetCgroup,
            "kernel refused a change of cgroup (a protected cgroup's file opened for writing, \
             or clone3(CLONE_INTO_CGROUP)) by a process that may not change cgroups",
        ),
        // The guard (`guard.rs`).
        Some(Hook::Bpf | Hook::BpfMap | Hook::BpfProg | Hook::PinRemove) => (
            Level::WARN,
            true,
            Subject::BpfObject,
            "kernel refused a process outside the agent's cgroup the agent's own BPF objects or \
             pins",
        ),
        Some(Hook::FileReceive | Hook::UnixStreamConnect | Hook::UnixMaySend) | None => (
            Level::WARN,
            true,
            Subject::Socket,
            "kernel denied access to a protected socket",
        ),
    };
    Meaning {
        level,
        denial,
        subject,
        message,
    }
}

/// One log line for one record, with the fields its subject names.
fn log(event: &DenyEvent, meaning: &Meaning) {
    // tracing's macros take their level as a constant: pick the macro, keep one field list.
    macro_rules! at_level {
        ($($field:tt)*) => {
            if meaning.level == Level::ERROR {
                tracing::error!(target: "eci::kernel", $($field)*)
            } else {
                tracing::warn!(target: "eci::kernel", $($field)*)
            }
        };
    }
    let hook = Hook::from_u32(event.hook).map_or("unknown", Hook::name);
    let (pid, comm, cgroup_id) = (event.tgid, comm(event), event.cgroup_id);
    let message = meaning.message;
    match meaning.subject {
        Subject::Socket => at_level!(
            pid, %comm, cgroup_id, dev = event.dev, ino = event.ino, hook, class = event.class,
            "{message}"
        ),
        Subject::TargetCgroup => {
            at_level!(pid, %comm, cgroup_id, target_cgroup = event.ino, hook, "{message}");
        }
        Subject::NewCgroup => at_level!(
            pid, %comm, cgroup = event.ino, hook, capacity = MAX_VERDICTS, "{message}"
        ),
        Subject::BpfObject => at_level!(
            pid, %comm, cgroup_id, object = event.ino, kind = event.class, hook, "{message}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Hook; 12] = [
        Hook::FileReceive,
        Hook::DInstantiate,
        Hook::InodeRename,
        Hook::UnixStreamConnect,
        Hook::UnixMaySend,
        Hook::FileOpen,
        Hook::TaskAlloc,
        Hook::CgroupMkdir,
        Hook::Bpf,
        Hook::BpfMap,
        Hook::BpfProg,
        Hook::PinRemove,
    ];

    #[test]
    fn only_refused_accesses_are_audited() {
        let reports: Vec<Hook> = ALL
            .into_iter()
            .filter(|&h| !meaning(Some(h)).denial)
            .collect();
        assert_eq!(
            reports,
            [Hook::DInstantiate, Hook::InodeRename, Hook::CgroupMkdir]
        );
    }

    #[test]
    fn kernel_failures_are_errors_and_refusals_warnings() {
        for hook in ALL {
            let m = meaning(Some(hook));
            let expected = if m.denial { Level::WARN } else { Level::ERROR };
            assert_eq!(m.level, expected, "{hook:?}");
        }
    }

    #[test]
    fn a_record_from_a_newer_program_is_reported_as_a_socket_denial() {
        let m = meaning(None);
        assert!(m.denial);
        assert_eq!(m.subject, Subject::Socket);
    }

    #[test]
    fn every_hook_number_is_in_the_table() {
        // The match above makes every hook have a row; this makes the tests above judge it.
        for n in 0..64 {
            if let Some(hook) = Hook::from_u32(n) {
                assert!(ALL.contains(&hook), "{hook:?} has no row in ALL");
            }
        }
    }
}

//! The BPF object built by `eci-agent/build.rs` from eci-ebpf, and the programs in it.

/// Empty when the crate was built with `AYA_BUILD_SKIP=1` (checks and unit tests only).
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/eci"));

/// How a program attaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// A BPF LSM hook (`bpf_lsm_<name>`).
    Lsm,
    /// A BTF-enabled raw tracepoint (`btf_trace_<name>`).
    BtfTracePoint,
}

/// A program in the object: its symbol (also the name of its pinned link) and what it attaches to.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    pub symbol: &'static str,
    pub target: &'static str,
    pub attach: Attach,
}

/// The programs, in the order they are attached. The admission tracepoint comes first, so that no
/// container cgroup is created without a deny between it and the others, and the removal one next
/// (it only drops verdicts of removed cgroups); `unix_stream_connect`
/// (which judges connects and tags connected client sockets) before `file_receive` (which judges
/// those sockets handed over). The two that
/// tag sockets re-created at a protected path come next: until the agent writes the directory
/// tags, they have nothing to do. The guard over the agent's own objects comes after them: it
/// refuses nothing until the agent has recorded what is its own (`guard.rs`).
pub const PROGRAMS: &[Program] = &[
    Program {
        symbol: "cgroup_mkdir",
        target: "cgroup_mkdir",
        attach: Attach::BtfTracePoint,
    },
    Program {
        symbol: "cgroup_rmdir",
        target: "cgroup_rmdir",
        attach: Attach::BtfTracePoint,
    },
    Program {
        symbol: "unix_stream_connect",
        target: "unix_stream_connect",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "unix_may_send",
        target: "unix_may_send",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "file_receive",
        target: "file_receive",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "d_instantiate",
        target: "d_instantiate",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "inode_rename",
        target: "inode_rename",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "bpf",
        target: "bpf",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "bpf_map",
        target: "bpf_map",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "bpf_prog",
        target: "bpf_prog",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "inode_unlink",
        target: "inode_unlink",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "inode_rmdir",
        target: "inode_rmdir",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "file_open",
        target: "file_open",
        attach: Attach::Lsm,
    },
    Program {
        symbol: "task_alloc",
        target: "task_alloc",
        attach: Attach::Lsm,
    },
];

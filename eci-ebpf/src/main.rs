//! The BPF LSM programs of eci-agent. Which cgroups may reach which protected socket inode is data
//! (the maps described in eci-common); the programs only look it up.
//!
//! Why these hooks (kernel facts, checked in the VM suite):
//! - `connect(2)` on a pathname unix socket resolves the path to an inode, finds the socket bound
//!   to that inode (`unix_find_bsd()`), and only then calls `security_unix_stream_connect()` with
//!   that listener (stream and seqpacket), or `security_unix_may_send()` with the receiver
//!   (datagram `connect(2)` and every datagram sent). Whatever path leads there (bind mount, hard
//!   link, symlink, relative path, `/proc/PID/root`, `/proc/self/fd/N` of an `O_PATH` fd), it is
//!   the same socket, bound to the same file inode, and inode local storage tags that inode object
//!   itself. So `unix_stream_connect` and `unix_may_send` judge a connect (or datagram) by the tag
//!   on the listener's bound file (`unix_sk(other)->path.dentry->d_inode`).
//! - Not `inode_permission`, although `unix_find_bsd()` checks write permission on the socket inode
//!   through it and it would need no struct walk: it runs for every component of every path walk on
//!   the system (a 26-directory `stat` cost 2.1× in the kernel bench), for a check that only unix
//!   connects need. Not `socket_connect` either: it sees only the caller's unresolved `sun_path`
//!   string, which every alias above bypasses. `connect(2)` never calls `file_open` (nor does an
//!   `O_PATH` open), and `open(2)` of a socket file fails with `ENXIO` anyway. An unlisted process
//!   may therefore `stat` or `O_PATH`-open the socket file; it cannot connect or send through it.
//! - A connected socket, or an `O_PATH` fd of the socket file, can be handed to another process
//!   without any connect (`SCM_RIGHTS`, `pidfd_getfd`). `unix_stream_connect` copies the
//!   listener's tag onto the connecting socket's own inode; `file_receive` judges the receiver of
//!   any tagged inode like a connecting process.
//! - A container's cgroup is made before the agent can know it: `cgroup_mkdir` (a BTF tracepoint)
//!   gives it an explicit deny at creation, so it never inherits a trusted ancestor's allow.
//! - The engine re-creates its socket when it restarts: a new inode, untagged. The directory of
//!   each protected socket carries the names it protects, and `d_instantiate` (an inode gets a
//!   name: `bind(2)` goes through `vfs_mknod()` before the socket can be found by `connect(2)`)
//!   and `inode_rename` (an inode is renamed into a name) tag the inode that appears under such a
//!   name, so it is protected from the moment it can be reached, whether the agent runs or not.
//! - The programs are only as strong as their pins and maps: `bpf`, `bpf_map` and `bpf_prog`
//!   refuse an fd of the agent's links, maps and programs to anyone outside the agent's cgroup,
//!   and `inode_unlink`, `inode_rmdir` and `inode_rename` refuse to remove or move its pins
//!   (`guard.rs`).
//!
//! - Which cgroup a process is in is its standing, so who may move processes into which cgroup is
//!   judged too: `file_open` refuses a write open of a protected cgroup's files, `task_alloc` a
//!   `clone3(CLONE_INTO_CGROUP)`, to callers that may not change cgroups (`cgroupfs.rs`).
//!
//! Every program walks kernel structs; the offsets come from the running kernel's BTF at load
//! time (`kernel.rs` explains why that is safe without CO-RE).
// The programs exist only for the BPF target; on the host (`cargo build --workspace`, clippy)
// this crate is an empty binary, so workspace-wide commands need no exclusions.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod cgroupfs;
#[cfg(target_arch = "bpf")]
mod guard;
#[cfg(target_arch = "bpf")]
mod hooks;
#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod names;
#[cfg(target_arch = "bpf")]
mod verdict;

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!(
        "eci-ebpf is built for bpfel-unknown-none by eci-agent/build.rs; there is nothing to run"
    );
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that could reach here, so this never runs.
    loop {}
}

/// LSM programs must be GPL-compatible (`bpf_lsm_verify_prog`).
#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

//! The BPF LSM programs of eci-agent. Which cgroups may reach which protected socket inode is data
//! (the maps described in eci-common); the programs only look it up.
//!
//! Why these hooks (kernel facts, checked in the VM suite):
//! - `connect(2)` on a pathname unix socket resolves the path, then checks write permission on the
//!   socket inode: `unix_find_bsd()` → `path_permission(MAY_WRITE)` → `security_inode_permission()`.
//!   Whatever path leads there (bind mount, hard link, symlink, relative path, `/proc/PID/root`,
//!   `/proc/self/fd/N` of an `O_PATH` fd), the inode is the same, and inode local storage tags the
//!   inode object itself. `inode_permission` therefore needs no kernel struct offsets — which
//!   matters because aya emits no CO-RE relocations, so baked offsets would be wrong on other
//!   kernels.
//! - `socket_connect` sees only the caller's unresolved `sun_path` string (every alias above
//!   bypasses it), and `connect(2)` never calls `file_open` (nor does an `O_PATH` open); `open(2)`
//!   of a socket file is already covered by `inode_permission` (`may_open`). So neither is used.
//! - A connected socket, or an `O_PATH` fd of the socket file, can be handed to another process
//!   without any path walk (`SCM_RIGHTS`, `pidfd_getfd`). `unix_stream_connect` sees the listener,
//!   and copies its tag onto the connecting socket's own inode; `file_receive` judges the receiver
//!   of any tagged inode like a connecting process.
//! - A container's cgroup is made before the agent can know it: `cgroup_mkdir` (a BTF tracepoint)
//!   gives it an explicit deny at creation, so it never inherits a trusted ancestor's allow.
//! - The engine re-creates its socket when it restarts: a new inode, untagged. The directory of
//!   each protected socket carries the names it protects, and `d_instantiate` (an inode gets a
//!   name: `bind(2)` goes through `vfs_mknod()` before the socket can be found by `connect(2)`)
//!   and `inode_rename` (an inode is renamed into a name) tag the inode that appears under such a
//!   name, so it is protected from the moment it can be reached, whether the agent runs or not.
//!
//! All but `inode_permission` walk kernel structs; the offsets come from the running kernel's BTF at load time
//! (`kernel.rs` explains why that is safe without CO-RE).
// The programs exist only for the BPF target; on the host (`cargo build --workspace`, clippy)
// this crate is an empty binary, so workspace-wide commands need no exclusions.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

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

//! The process behind a connection, pinned when the connection is accepted.
//!
//! `SO_PEERCRED` gives a pid, and a pid is only a number: once that process exits, the number
//! can name another one, and `/proc/PID/cgroup` would then describe a stranger. A pidfd names
//! the process itself. The kernel hands one out for the peer directly (`SO_PEERPIDFD`, Linux
//! 6.5); older kernels get one from `pidfd_open(pid)` right at accept, which leaves only the
//! window between the peer's exit and that call. Whatever is read under `/proc/PID` is trusted
//! only if the pidfd's process is still alive afterwards: while it lives, its pid cannot be
//! reused.
//!
//! The one place in the sidecar's path that needs `unsafe` (three syscalls libc and tokio do
//! not wrap); a leaf, so every layer can use it.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd as _, OwnedFd};

/// `SO_PEERPIDFD` (uapi `asm-generic/socket.h`); the libc crate does not export it here.
const SO_PEERPIDFD: libc::c_int = 77;

/// A connection's peer process: its pid as the kernel gave it, and a pidfd when one could be
/// had.
#[derive(Debug)]
pub struct Peer {
    pid: Option<i32>,
    pidfd: Option<OwnedFd>,
}

impl Peer {
    /// The peer of the unix socket `fd`, whose `SO_PEERCRED` pid is `pid`.
    pub fn of_socket(fd: BorrowedFd<'_>, pid: Option<i32>) -> Self {
        let pid = pid.filter(|pid| *pid > 0);
        let pidfd = peer_pidfd(fd).or_else(|| pid.and_then(pidfd_open));
        Self { pid, pidfd }
    }

    /// A peer known only by its pid (tests, and callers that have no socket).
    pub fn from_pid(pid: Option<i32>) -> Self {
        let pid = pid.filter(|pid| *pid > 0);
        Self {
            pid,
            pidfd: pid.and_then(pidfd_open),
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Whether the pinned process still runs, so that what was just read under `/proc/PID`
    /// was its own. Without a pidfd nothing can be vouched for.
    ///
    /// A pidfd turns readable once its process has exited (pidfd_open(2)), so one `poll` with
    /// no timeout asks the kernel without signalling anything. An exited process that is not
    /// reaped yet (a zombie, whose pid cannot be reused) already counts as gone: stricter than
    /// `pidfd_send_signal(0)`, which still reaches a zombie, and it is a call that valgrind
    /// (3.19) runs, so the sidecar can be profiled with callers identified.
    pub fn still_alive(&self) -> bool {
        let Some(pidfd) = &self.pidfd else {
            return false;
        };
        let mut poll = libc::pollfd {
            fd: pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid `pollfd` we own, for an fd we own, count 1, no timeout: the kernel
        // writes only `revents`.
        let rc = unsafe { libc::poll(&mut poll, 1, 0) };
        rc == 0
    }
}

fn peer_pidfd(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    let mut raw: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `raw` and `len` are valid for writes of the sizes given; `fd` is a live socket
    // borrowed for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            std::ptr::from_mut(&mut raw).cast(),
            &mut len,
        )
    };
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    (rc == 0 && raw >= 0).then(|| unsafe { OwnedFd::from_raw_fd(raw) })
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: a raw syscall with scalar arguments.
    let rc = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let raw = libc::c_int::try_from(rc).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: on success the kernel installed a new fd that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(raw) })
}

#[cfg(test)]
mod tests {
    use std::os::{fd::AsFd as _, unix::net::UnixStream};

    use super::*;

    #[test]
    fn a_socket_peer_is_pinned_and_alive() {
        let (a, _b) = UnixStream::pair().unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let peer = Peer::of_socket(a.as_fd(), Some(me));
        assert_eq!(peer.pid(), Some(me));
        assert!(peer.still_alive());
    }

    #[test]
    fn an_exited_process_is_not_vouched_for() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let peer = Peer::from_pid(Some(pid));
        child.wait().unwrap();
        assert!(!peer.still_alive());
        assert!(!Peer::from_pid(None).still_alive());
    }

    #[test]
    fn an_exited_process_is_gone_before_it_is_reaped() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let peer = Peer::from_pid(Some(pid));
        // Wait for the zombie without reaping it.
        let stat = format!("/proc/{pid}/stat");
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!peer.still_alive());
        child.wait().unwrap();
    }
}

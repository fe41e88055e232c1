//! The agent as a systemd service: the public socket handed over by `eci-agent.socket`
//! (`LISTEN_FDS`), readiness (`sd_notify`), and where the agent's own cgroup goes when systemd
//! runs it.
//!
//! Hand-written rather than a crate (`sd-notify`, `listenfd`): the protocol is three environment
//! variables and one datagram, and taking the descriptor still needs its own checks here (a
//! listening unix stream socket, bound to the `--listen` file) and the one `unsafe` that makes it
//! owned. The decisions are pure functions over the values read, tested without systemd.

use std::{
    io,
    os::{
        fd::{FromRawFd as _, OwnedFd, RawFd},
        unix::{
            fs::MetadataExt as _,
            net::{SocketAddr, UnixDatagram, UnixListener},
        },
    },
    path::{Path, PathBuf},
};

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// Why a handed-over socket cannot be used. Each names what systemd passed and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    #[error("{var}={value:?} is not a number (set by systemd's socket activation)")]
    BadNumber { var: &'static str, value: String },
    #[error(
        "systemd passed {count} sockets (LISTEN_FDS); eci-agent.socket must have exactly one ListenStream="
    )]
    Count { count: u32 },
    #[error("the socket systemd passed (fd {fd}) is not {what}: {detail}")]
    NotListening {
        fd: RawFd,
        what: &'static str,
        detail: String,
    },
    #[error(
        "the socket systemd passed is bound to {bound}, not to --listen {listen}: ListenStream= and --listen must name the same file"
    )]
    OtherPath { bound: PathBuf, listen: PathBuf },
}

/// The activation variables as systemd sets them (`None` when unset).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListenEnv {
    pub pid: Option<String>,
    pub fds: Option<String>,
}

impl ListenEnv {
    pub fn from_env() -> Self {
        Self {
            pid: std::env::var("LISTEN_PID").ok(),
            fds: std::env::var("LISTEN_FDS").ok(),
        }
    }

    /// How many descriptors were passed to this process (`own_pid`): 0 when none were, or they
    /// were meant for another process (a parent that exec'ed us without clearing them).
    pub fn count_for(&self, own_pid: u32) -> Result<u32, ActivationError> {
        let (Some(pid), Some(fds)) = (&self.pid, &self.fds) else {
            return Ok(0);
        };
        let number = |var, value: &str| {
            value
                .trim()
                .parse::<u32>()
                .map_err(|_| ActivationError::BadNumber {
                    var,
                    value: value.to_owned(),
                })
        };
        if number("LISTEN_PID", pid)? != own_pid {
            return Ok(0);
        }
        number("LISTEN_FDS", fds)
    }
}

/// The public socket systemd bound and handed over, when it did: exactly one descriptor, a
/// listening unix stream socket, bound to the same file as `listen`. `Ok(None)` without socket
/// activation (the agent binds `listen` itself).
pub fn take_listener(listen: &Path) -> Result<Option<UnixListener>, ActivationError> {
    match ListenEnv::from_env().count_for(std::process::id())? {
        0 => return Ok(None),
        1 => {}
        count => return Err(ActivationError::Count { count }),
    }
    let fd = LISTEN_FDS_START;
    check_listening_unix_stream(fd)?;
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID is ours, LISTEN_FDS=1), nothing
    // in this process opened or owns it, and this is the only place that takes it, once: the
    // environment is read by this function alone, and it is called once, before serving.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // systemd passes it inheritable; the agent's children (none today) must not keep it.
    set_cloexec(fd).map_err(|err| not_listening(fd, "usable", err.to_string()))?;
    let listener = UnixListener::from(owned);
    let bound = listener
        .local_addr()
        .ok()
        .and_then(|addr| addr.as_pathname().map(Path::to_path_buf))
        .ok_or_else(|| not_listening(fd, "bound to a path", "it has no file name".into()))?;
    if !same_file(&bound, listen) {
        return Err(ActivationError::OtherPath {
            bound,
            listen: listen.to_owned(),
        });
    }
    Ok(Some(listener))
}

fn not_listening(fd: RawFd, what: &'static str, detail: String) -> ActivationError {
    ActivationError::NotListening { fd, what, detail }
}

/// Both paths name one existing file (`/var/run/docker.sock` is `/run/docker.sock`).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

fn sockopt(fd: RawFd, option: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `value`, a live c_int on our stack.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&raw mut value).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn check_listening_unix_stream(fd: RawFd) -> Result<(), ActivationError> {
    let get =
        |option, what| sockopt(fd, option).map_err(|err| not_listening(fd, what, err.to_string()));
    let domain = get(libc::SO_DOMAIN, "a socket")?;
    if domain != libc::AF_UNIX {
        return Err(not_listening(
            fd,
            "a unix socket",
            format!("domain {domain}"),
        ));
    }
    let kind = get(libc::SO_TYPE, "a socket")?;
    if kind != libc::SOCK_STREAM {
        return Err(not_listening(
            fd,
            "a stream socket (ListenStream=)",
            format!("type {kind}"),
        ));
    }
    if get(libc::SO_ACCEPTCONN, "a socket")? == 0 {
        return Err(not_listening(
            fd,
            "listening",
            "Accept=yes passes connections; eci-agent.socket needs Accept=no".into(),
        ));
    }
    Ok(())
}

fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl(2) on a descriptor this process owns; F_GETFD/F_SETFD touch only its flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tells systemd (`Type=notify`) how the service is doing, e.g. `READY=1\nSTATUS=serving`.
/// Nothing happens outside systemd (no `NOTIFY_SOCKET`); a failure to send is logged: the unit's
/// start timeout is then what the operator sees.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(err) = send_notify(Path::new(&target), state) {
        tracing::warn!(notify_socket = %Path::new(&target).display(), %err, "cannot notify systemd");
    }
}

fn send_notify(target: &Path, state: &str) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_os_str().as_encoded_bytes();
    // `@name` is a socket in the abstract namespace (systemd's default for services).
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(target)?,
    };
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

/// Whether systemd runs this process as a service: it sets `INVOCATION_ID` for every unit it
/// starts.
pub fn is_service() -> bool {
    std::env::var_os("INVOCATION_ID").is_some()
}

/// The agent's own cgroup (relative to the cgroup2 mount), from the one it started in.
///
/// Under systemd (`service`), a child of the unit's cgroup (the unit has `Delegate=yes`, so the
/// subtree is the agent's to manage): systemd keeps accounting, `systemctl status` and
/// `journalctl -u` see the agent, and a restart finds the same cgroup (and its verdict) again.
/// Elsewhere (a DaemonSet pod, a shell) a cgroup of its own at the top, `default`.
pub fn agent_cgroup(started_in: &Path, service: bool, default: &str) -> PathBuf {
    let rel = started_in.strip_prefix("/").unwrap_or(started_in);
    let unit = rel
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".service"));
    if service && unit {
        rel.join(default)
    } else if service
        && rel.file_name().and_then(|n| n.to_str()) == Some(default)
        && rel
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(".service"))
    {
        // Already there (the agent re-executed itself, or a test moved it): stay.
        rel.to_path_buf()
    } else {
        PathBuf::from(default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: Option<&str>, fds: Option<&str>) -> ListenEnv {
        ListenEnv {
            pid: pid.map(str::to_owned),
            fds: fds.map(str::to_owned),
        }
    }

    #[test]
    fn descriptors_count_only_for_this_process() {
        assert_eq!(env(None, None).count_for(42).unwrap(), 0);
        assert_eq!(env(Some("42"), None).count_for(42).unwrap(), 0);
        assert_eq!(env(Some("42"), Some("1")).count_for(42).unwrap(), 1);
        // Meant for the process that exec'ed us.
        assert_eq!(env(Some("41"), Some("1")).count_for(42).unwrap(), 0);
        assert_eq!(env(Some("42"), Some("2")).count_for(42).unwrap(), 2);
        let err = env(Some("42"), Some("one")).count_for(42).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS=\"one\""), "{err}");
        let err = env(Some("x"), Some("1")).count_for(42).unwrap_err();
        assert!(err.to_string().contains("LISTEN_PID"), "{err}");
    }

    #[test]
    fn under_systemd_the_agent_cgroup_is_a_child_of_its_unit() {
        let unit = Path::new("/system.slice/eci-agent.service");
        assert_eq!(
            agent_cgroup(unit, true, "eci-agent"),
            Path::new("system.slice/eci-agent.service/eci-agent")
        );
        assert_eq!(
            agent_cgroup(
                Path::new("/system.slice/eci-agent.service/eci-agent"),
                true,
                "eci-agent"
            ),
            Path::new("system.slice/eci-agent.service/eci-agent")
        );
        // Not a service (a pod, a shell, `systemd-run --scope`): a cgroup of its own.
        assert_eq!(
            agent_cgroup(unit, false, "eci-agent"),
            Path::new("eci-agent")
        );
        assert_eq!(
            agent_cgroup(Path::new("/user.slice/session-1.scope"), true, "eci-agent"),
            Path::new("eci-agent")
        );
        assert_eq!(
            agent_cgroup(Path::new("/"), true, "eci-agent"),
            Path::new("eci-agent")
        );
    }

    #[test]
    fn a_passed_socket_must_listen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        use std::os::fd::AsRawFd as _;
        check_listening_unix_stream(listener.as_raw_fd()).unwrap();
        let dgram = UnixDatagram::bind(dir.path().join("d")).unwrap();
        let err = check_listening_unix_stream(dgram.as_raw_fd()).unwrap_err();
        assert!(err.to_string().contains("stream"), "{err}");
        assert!(same_file(&path, &dir.path().join(".").join("s")));
        assert!(!same_file(&path, &dir.path().join("d")));
    }

    #[test]
    fn notify_reaches_a_datagram_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        send_notify(&path, "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}

//! `kernel-tests probe CGROUP OP PATH [ARG]`: joins CGROUP (relative to the cgroup2 mount), then
//! tries OP on PATH and exits with what happened. Running each attempt in a fresh process keeps the
//! suite's own cgroup out of the way.
//!
//! The fd-passing ops use their stdin, a unix socket the suite made with `socketpair(2)`:
//! `send-*` put one fd of PATH on it (`SCM_RIGHTS`), `recv-fd` takes what arrives (`recv-fd-send`
//! also sends a datagram on it). `hold` connects to PATH, prints the connected fd's number and
//! waits for stdin to close; `getfd PID FD` takes fd FD of process PID with `pidfd_getfd(2)`. `rebind PATH` re-creates a listener at PATH as a
//! restarting engine does (unlink, bind), `rebind-rename PATH TMP` binds it at TMP and renames it
//! onto PATH; both print `bound` and listen until stdin closes.
//!
//! The `bpf-*` ops attack the agent's own objects with raw `bpf(2)` calls (`tests/src/bpfsys.rs`):
//! `bpf-get PIN` (`BPF_OBJ_GET`), `bpf-by-id map|prog|link ID` (`*_GET_FD_BY_ID`),
//! `bpf-write-verdict MAP_ID` (an allow for the probe's own cgroup, written by id),
//! `bpf-detach PIN` (`BPF_LINK_DETACH` of a pinned link), `bpf-ids PIN` (prints the object's id
//! and, for a link, its program's). `unlink PATH`, `rename PATH TO` and `rmdir PATH` attack pins.

use std::{
    fs::{self, OpenOptions},
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
        unix::{
            fs::OpenOptionsExt as _,
            net::{UnixDatagram, UnixListener, UnixStream},
        },
    },
    path::Path,
    process::ExitCode,
};

use eci_tests::bpfsys;

/// Exit codes of a probe.
pub const CONNECTED: u8 = 0;
pub const EPERM: u8 = 10;
pub const REFUSED: u8 = 12;
pub const OTHER: u8 = 13;
/// `recv-fd`: the message came without its fd and with `MSG_CTRUNC` (the kernel refused it).
pub const TRUNCATED: u8 = 14;
/// `EOPNOTSUPP`: the kernel has no such operation for this object (`bpf-detach` of a tracing link).
pub const NOTSUPP: u8 = 15;

pub fn main(args: &[String]) -> ExitCode {
    let [cgroup, op, path, rest @ ..] = args else {
        eprintln!("usage: kernel-tests probe CGROUP OP PATH [DIR]");
        return ExitCode::from(OTHER);
    };
    let procs = Path::new(crate::fixture::CGROUP_ROOT)
        .join(cgroup.trim_start_matches('/'))
        .join("cgroup.procs");
    if let Err(err) = fs::write(&procs, std::process::id().to_string()) {
        eprintln!("probe: joining {}: {err}", procs.display());
        return ExitCode::from(OTHER);
    }
    let arg = |i: usize, what: &str| {
        rest.get(i)
            .cloned()
            .ok_or_else(|| io::Error::other(format!("{op} needs {what}")))
    };
    let result = match op.as_str() {
        "connect" => UnixStream::connect(path).map(drop),
        // Connect through a relative path from DIR.
        "connect-rel" => rest
            .first()
            .ok_or_else(|| io::Error::other("connect-rel needs DIR"))
            .and_then(std::env::set_current_dir)
            .and_then(|()| UnixStream::connect(path).map(drop)),
        // Connect through /proc/self/fd/N of an O_PATH fd (which itself opens nothing).
        "connect-opath" => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .and_then(|file| {
                use std::os::fd::AsRawFd as _;
                UnixStream::connect(format!("/proc/self/fd/{}", file.as_raw_fd())).map(drop)
            }),
        "connect-seqpacket" => seqpacket_socket().and_then(|fd| {
            with_sockaddr(Path::new(path), |addr, len| {
                // SAFETY: a valid socket fd and an address of `len` bytes.
                unsafe { libc::connect(fd.as_raw_fd(), addr, len) }
            })
        }),
        "send-dgram" => UnixDatagram::unbound().and_then(|s| s.send_to(b"x", path).map(drop)),
        "connect-dgram" => UnixDatagram::unbound().and_then(|s| s.connect(path)),
        "read" => fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut Vec::new()))
            .map(drop),
        "send-connected" => UnixStream::connect(path).and_then(|s| send_fd(s.as_raw_fd())),
        "send-opath" => OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open(path)
            .and_then(|f| send_fd(f.as_raw_fd())),
        "send-file" => fs::File::open(path).and_then(|f| send_fd(f.as_raw_fd())),
        "send-dgram-connected" => UnixDatagram::unbound().and_then(|s| {
            s.connect(path)?;
            send_fd(s.as_raw_fd())
        }),
        "recv-fd" => match recv_fd() {
            Ok(Received::Fd(fd)) => {
                drop(fd);
                Ok(())
            }
            Ok(Received::Truncated) => return ExitCode::from(TRUNCATED),
            Err(err) => Err(err),
        },
        // Receives a connected datagram socket and sends one datagram on it.
        "recv-fd-send" => match recv_fd() {
            Ok(Received::Fd(fd)) => UnixDatagram::from(fd).send(b"x").map(drop),
            Ok(Received::Truncated) => return ExitCode::from(TRUNCATED),
            Err(err) => Err(err),
        },
        "hold" => UnixStream::connect(path).and_then(|s| {
            println!("{}", s.as_raw_fd());
            io::stdout().flush()?;
            io::stdin().read_to_end(&mut Vec::new()).map(drop)
        }),
        "rebind" => {
            let _ = fs::remove_file(path);
            UnixListener::bind(path).and_then(serve_until_stdin_closes)
        }
        "rebind-rename" => rest
            .first()
            .ok_or_else(|| io::Error::other("rebind-rename needs TMP"))
            .and_then(|tmp| {
                let _ = fs::remove_file(tmp);
                let listener = UnixListener::bind(tmp)?;
                fs::rename(tmp, path)?;
                serve_until_stdin_closes(listener)
            }),
        "getfd" => rest
            .first()
            .and_then(|fd| fd.parse().ok())
            .zip(path.parse().ok())
            .ok_or_else(|| io::Error::other("getfd needs PID and FD"))
            .and_then(|(fd, pid)| pidfd_getfd(pid, fd))
            .map(drop),
        "bpf-get" => bpfsys::obj_get(Path::new(path)).map(drop),
        "bpf-by-id" => arg(0, "ID")
            .and_then(|id| id.parse().map_err(io::Error::other))
            .and_then(|id| {
                let kind = match path.as_str() {
                    "map" => bpfsys::Kind::Map,
                    "prog" => bpfsys::Kind::Prog,
                    _ => bpfsys::Kind::Link,
                };
                bpfsys::fd_by_id(kind, id)
            })
            .map(drop),
        "bpf-write-verdict" => path
            .parse()
            .map_err(io::Error::other)
            .and_then(|id| bpfsys::fd_by_id(bpfsys::Kind::Map, id))
            .and_then(|map| {
                use std::os::unix::fs::MetadataExt as _;
                let own = fs::metadata(procs.parent().unwrap_or(Path::new("/")))?.ino();
                // CgroupVerdict { classes: CLASS_PUBLIC, flags: 0 }, little-endian.
                bpfsys::update(&map, own, u64::from(eci_common::CLASS_PUBLIC))
            }),
        "bpf-detach" => bpfsys::obj_get(Path::new(path)).and_then(|link| bpfsys::detach(&link)),
        "bpf-ids" => bpfsys::obj_get(Path::new(path))
            .and_then(|obj| bpfsys::ids(&obj))
            .map(|(id, prog)| println!("{id} {prog}")),
        "unlink" => fs::remove_file(path),
        "rename" => arg(0, "TO").and_then(|to| fs::rename(path, to)),
        "rmdir" => fs::remove_dir(path),
        // Opens a cgroup file for writing (nothing written: `cgroup.subtree_control` would
        // want controllers).
        "open-write" => OpenOptions::new().write(true).open(path).map(drop),
        // Moves itself into the cgroup whose `cgroup.procs` PATH is.
        "write-pid" => fs::write(path, std::process::id().to_string()),
        // The same from a cgroup namespace of its own, rooted at its cgroup (as a container in
        // Docker's default private cgroup namespace is).
        "cgroupns-write-pid" => {
            // SAFETY: a plain syscall on this single-threaded process.
            if unsafe { libc::unshare(libc::CLONE_NEWCGROUP) } != 0 {
                Err(io::Error::last_os_error())
            } else {
                fs::write(path, std::process::id().to_string())
            }
        }
        // Makes the cgroup PATH, then moves itself into it.
        "mkdir-join" => fs::create_dir(path).and_then(|()| {
            fs::write(
                Path::new(path).join("cgroup.procs"),
                std::process::id().to_string(),
            )
        }),
        // Starts a child in the cgroup PATH with clone3(CLONE_INTO_CGROUP).
        "clone-into" => clone_into(Path::new(path)),
        _ => Err(io::Error::other(format!("unknown probe op {op}"))),
    };
    ExitCode::from(match result {
        Ok(()) => CONNECTED,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => EPERM,
        Err(err) if err.raw_os_error() == Some(libc::ECONNREFUSED) => REFUSED,
        Err(err) if err.raw_os_error() == Some(libc::EOPNOTSUPP) => NOTSUPP,
        Err(err) => {
            eprintln!("probe {op} {path}: {err}");
            OTHER
        }
    })
}

/// A new `SOCK_SEQPACKET` unix socket (std has no type for one).
pub fn seqpacket_socket() -> io::Result<OwnedFd> {
    // SAFETY: a plain syscall; the returned fd is owned exactly once.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Calls `f` with a `sockaddr_un` for `path` and its length; `f` returns a syscall's result.
pub fn with_sockaddr(
    path: &Path,
    f: impl FnOnce(*const libc::sockaddr, libc::socklen_t) -> libc::c_int,
) -> io::Result<()> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::other("socket path too long"));
    }
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len =
        (std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1) as libc::socklen_t;
    if f((&raw const addr).cast(), len) < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Says `bound`, then leaves connections in the listener's backlog (connecting needs no accept)
/// until stdin closes.
fn serve_until_stdin_closes(listener: UnixListener) -> io::Result<()> {
    println!("bound");
    io::stdout().flush()?;
    io::stdin().read_to_end(&mut Vec::new())?;
    drop(listener);
    Ok(())
}

/// Sends `fd` over stdin (a unix socket) with `SCM_RIGHTS`, one byte of payload.
fn send_fd(fd: RawFd) -> io::Result<()> {
    let mut byte = [b'x'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: the message points at live buffers; the CMSG macros stay within `control`, which is
    // larger than CMSG_SPACE(sizeof(int)).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize;
        libc::CMSG_DATA(cmsg).cast::<RawFd>().write_unaligned(fd);
        if libc::sendmsg(0, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

enum Received {
    Fd(OwnedFd),
    /// The payload arrived, the fd did not, and the kernel said so with `MSG_CTRUNC`.
    Truncated,
}

/// Receives one message from stdin (a unix socket) and the fd it carries.
fn recv_fd() -> io::Result<Received> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 8];
    // SAFETY: as in `send_fd`; the kernel fills at most msg_controllen bytes of `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        let n = libc::recvmsg(0, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Err(io::Error::other("the sender sent nothing"));
        }
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if !cmsg.is_null()
            && (*cmsg).cmsg_level == libc::SOL_SOCKET
            && (*cmsg).cmsg_type == libc::SCM_RIGHTS
        {
            let fd = libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned();
            return Ok(Received::Fd(OwnedFd::from_raw_fd(fd)));
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Ok(Received::Truncated);
        }
        Err(io::Error::other(
            "a message without fd and without MSG_CTRUNC",
        ))
    }
}

/// Takes a duplicate of fd `fd` of process `pid` (`pidfd_open` + `pidfd_getfd`).
fn pidfd_getfd(pid: libc::pid_t, fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain syscalls with integer arguments; each returned fd is owned exactly once.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        if pidfd < 0 {
            return Err(io::Error::last_os_error());
        }
        let pidfd = OwnedFd::from_raw_fd(pidfd as RawFd);
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(got as RawFd))
    }
}

/// `clone3(2)` with `CLONE_INTO_CGROUP` into the cgroup directory `dir`; the child exits at once.
fn clone_into(dir: &Path) -> io::Result<()> {
    let cgroup = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(dir)?;
    // struct clone_args (CLONE_ARGS_SIZE_VER2): flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let mut args = [0u64; 11];
    args[0] = 0x2_0000_0000; // CLONE_INTO_CGROUP
    args[4] = libc::SIGCHLD as u64;
    args[10] = cgroup.as_raw_fd() as u64;
    // SAFETY: clone3 with no stack: the child runs on a copy of this stack and only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone3, args.as_ptr(), size_of_val(&args)) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: the child leaves at once, touching nothing of the parent's.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just made.
    unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    Ok(())
}

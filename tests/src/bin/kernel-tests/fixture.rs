//! What the suite creates, each piece removed on drop: cgroups, listeners, bind mounts, the agent
//! child process.

use std::{
    ffi::CString,
    fs,
    io::{BufRead as _, BufReader},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::net::{UnixDatagram, UnixListener},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The agent's cgroup (`kernel::enforce::AGENT_CGROUP`), which the suite joins to open the pins.
pub const AGENT_CGROUP: &str = "/eci-agent";

/// Moves the suite itself into the cgroup `rel`. The suite runs in the agent's cgroup while the
/// agent runs: the agent's maps are that cgroup's alone, and the suite writes verdicts as the
/// agent does (its probes each join a cgroup of their own).
pub fn join(rel: &str) {
    let procs = Path::new(CGROUP_ROOT)
        .join(rel.trim_start_matches('/'))
        .join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string())
        .unwrap_or_else(|e| panic!("joining {}: {e}", procs.display()));
}

/// Makes `cmd` start in the root cgroup, whatever the suite's own: an agent then moves itself into
/// its cgroup, and the CLI joins it, as when an admin shell starts them.
pub fn in_root_cgroup(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    let procs = CString::new(format!("{CGROUP_ROOT}/cgroup.procs")).expect("no NUL");
    // SAFETY: between fork and exec only async-signal-safe calls (open, write, close), on memory
    // made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0": the writing process itself.
            let written = libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
            if written != 1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}
/// A trusted host cgroup (the agent trusts it), and the container parent inside it (denied).
pub const TRUSTED: &str = "/t-trusted";
pub const CONTAINER_PARENT: &str = "/t-trusted/docker";

/// A cgroup made for the suite; on drop its processes go back to the root and it is removed.
pub struct Cgroup {
    pub rel: String,
    dir: PathBuf,
}

impl Cgroup {
    pub fn create(rel: &str) -> Self {
        let dir = Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/'));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        Self {
            rel: rel.to_owned(),
            dir,
        }
    }

    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        fs::metadata(&self.dir).map(|m| m.ino()).unwrap_or(0)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Deepest first: children were created after parents, so their guards drop first only if
        // declared later; remove any leftover children here too.
        fn remove(dir: &Path) {
            if let Ok(entries) = fs::read_dir(dir) {
                for entry in entries.flatten() {
                    if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        remove(&entry.path());
                    }
                }
            }
            if let Ok(pids) = fs::read_to_string(dir.join("cgroup.procs")) {
                for pid in pids.lines() {
                    let _ = fs::write(Path::new(CGROUP_ROOT).join("cgroup.procs"), pid);
                }
            }
            let _ = fs::remove_dir(dir);
        }
        remove(&self.dir);
    }
}

/// A unix listener that accepts (and drops) connections on a thread until the process ends.
pub fn listen(path: &Path) -> PathBuf {
    let _ = fs::remove_file(path);
    let listener =
        UnixListener::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    path.to_owned()
}

/// A seqpacket listener that accepts (and drops) connections on a thread until the process ends.
pub fn listen_seqpacket(path: &Path) -> PathBuf {
    let _ = fs::remove_file(path);
    let listener = crate::probe::seqpacket_socket()
        .and_then(|fd| {
            crate::probe::with_sockaddr(path, |addr, len| {
                // SAFETY: a valid socket fd and an address of `len` bytes.
                unsafe { libc::bind(fd.as_raw_fd(), addr, len) }
            })?;
            // SAFETY: a valid socket fd.
            if unsafe { libc::listen(fd.as_raw_fd(), 64) } < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(fd)
        })
        .unwrap_or_else(|e| panic!("seqpacket listener at {}: {e}", path.display()));
    thread::spawn(move || {
        loop {
            // SAFETY: a valid listening socket; the accepted fd is owned at once.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: a fresh fd owned by nobody else.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    });
    path.to_owned()
}

/// A datagram socket bound at `path` that reads (and drops) what arrives on a thread until the
/// process ends, so that senders never block on a full queue.
pub fn receive_datagrams(path: &Path) -> PathBuf {
    let _ = fs::remove_file(path);
    let socket =
        UnixDatagram::bind(path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
    thread::spawn(move || {
        let mut buf = [0u8; 64];
        while socket.recv(&mut buf).is_ok() {}
    });
    path.to_owned()
}

/// A bind mount, unmounted on drop.
pub struct BindMount {
    target: CString,
}

impl BindMount {
    pub fn new(source: &Path, target: &Path) -> Self {
        let c =
            |p: &Path| CString::new(p.as_os_str().as_encoded_bytes()).expect("path without NUL");
        let (src, dst) = (c(source), c(target));
        // SAFETY: valid C strings that outlive the call; a bind mount takes no data argument.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        assert_eq!(
            rc,
            0,
            "bind mount {} on {}: {}",
            source.display(),
            target.display(),
            std::io::Error::last_os_error()
        );
        Self { target: dst }
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        // SAFETY: a valid C string; failure only leaves a mount in a throwaway guest.
        unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The agent child (`kernel-tests agent …`); killed on drop.
pub struct Agent {
    child: Child,
}

impl Agent {
    pub fn start(pin_dir: &Path, engine: &Path, public: &Path) -> Self {
        Self::try_start(pin_dir, engine, public).unwrap_or_else(|err| panic!("{err}"))
    }

    /// [`Agent::start`] for a case that expects the agent may fail: the failure is the answer.
    pub fn try_start(pin_dir: &Path, engine: &Path, public: &Path) -> Result<Self, String> {
        let mut child = in_root_cgroup(&mut Command::new(
            std::env::current_exe().expect("own path"),
        ))
        .arg("agent")
        .args([pin_dir, engine, public])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn the agent: {e}"))?;
        let stdout = child.stdout.take().expect("agent stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line == "agent: ready" => break,
                Some(Ok(line)) => {
                    println!("{line}");
                    said.push(line);
                }
                _ => {
                    let _ = child.wait();
                    return Err(format!(
                        "the agent exited before it was ready: {}",
                        said.join(" | ")
                    ));
                }
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("the agent was not ready within 60 s".into());
            }
        }
        // Keep echoing what the agent prints, so a failure shows its log.
        thread::spawn(move || lines.map_while(Result::ok).for_each(|l| println!("{l}")));
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a probe in `cgroup` and returns its exit code (see `probe.rs`).
pub fn probe(cgroup: &str, op: &str, path: &Path, dir: Option<&Path>) -> u8 {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.arg("probe").arg(cgroup).arg(op).arg(path);
    if let Some(dir) = dir {
        cmd.arg(dir);
    }
    let status = cmd.status().expect("spawn a probe");
    status.code().map_or(255, |c| c as u8)
}

/// Runs a probe in `cgroup` with `stdin` (one end of a socket pair, for the fd-passing ops) as its
/// standard input, and returns its exit code.
pub fn probe_with_stdin(cgroup: &str, op: &str, arg: &str, stdin: OwnedFd) -> u8 {
    let status = Command::new(std::env::current_exe().expect("own path"))
        .args(["probe", cgroup, op, arg])
        .stdin(Stdio::from(stdin))
        .status()
        .expect("spawn a probe");
    status.code().map_or(255, |c| c as u8)
}

/// A `probe CGROUP hold PATH` child: it holds a connection to PATH until dropped.
pub struct Holder {
    child: Child,
    /// The connected socket's fd number in the holder.
    pub fd: u32,
}

impl Holder {
    pub fn start(cgroup: &str, path: &Path) -> Result<Self, String> {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("probe")
            .arg(cgroup)
            .arg("hold")
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn a holder: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("holder stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        match line.trim().parse() {
            Ok(fd) => Ok(Self { child, fd }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait();
                Err(format!("the holder did not connect ({status:?})"))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // Closing its stdin ends it; kill in case it is stuck.
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `probe CGROUP rebind…` child: a listener it re-created at a path (as a restarting engine
/// does), listening until dropped.
pub struct Rebound {
    child: Child,
}

impl Rebound {
    /// Unlinks `path` and binds a listener there from a process in `cgroup`.
    pub fn at(cgroup: &str, path: &Path) -> Result<Self, String> {
        Self::start(cgroup, "rebind", path, None)
    }

    /// Binds a listener at `tmp` from a process in `cgroup` and renames it onto `path`.
    pub fn renamed(cgroup: &str, path: &Path, tmp: &Path) -> Result<Self, String> {
        Self::start(cgroup, "rebind-rename", path, Some(tmp))
    }

    fn start(cgroup: &str, op: &str, path: &Path, tmp: Option<&Path>) -> Result<Self, String> {
        let mut cmd = Command::new(std::env::current_exe().expect("own path"));
        cmd.arg("probe").arg(cgroup).arg(op).arg(path);
        if let Some(tmp) = tmp {
            cmd.arg(tmp);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn a rebinder: {e}"))?;
        let mut line = String::new();
        let stdout = child.stdout.take().expect("rebinder stdout");
        let _ = BufReader::new(stdout).read_line(&mut line);
        if line.trim() == "bound" {
            Ok(Self { child })
        } else {
            let _ = child.kill();
            let status = child.wait();
            Err(format!("{op} {} failed ({status:?})", path.display()))
        }
    }
}

impl Drop for Rebound {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

//! `kernel-bench`: what the BPF LSM programs cost, measured inside a QEMU guest (a benchmark run
//! by `cargo xtask bench`, never a test). vm-init runs it instead of the kernel suite when the
//! kernel command line says `eci.mode=bench`.
//!
//! Rounds alternate without/with the programs (off, on, off, on, …) so that drift in the guest
//! (TCG, a busy host) falls on both sides alike; within a round, each workload counts the fastest
//! of several short bursts (see [`BURSTS`]). "With" means the agent's kernel side, loaded by
//! a child process through the same library calls as `eci-agent run`; "without" means it was
//! killed and its pins removed, i.e. the programs detached. Each switch is checked: a probe from
//! an unlisted cgroup must be refused on the protected socket when the programs are on and
//! connect when they are off (waiting for the kernel to finish detaching), so a round can never
//! measure the wrong state.
//!
//! Output, one line each, parsed by the host:
//! `eci-bench <workload> <on|off> <round> <ns_per_op>`, then `eci-bench-done`.
//!
//! One binary, three roles chosen by the first argument:
//! - `ROUNDS SCALE`: the bench (SCALE multiplies the operation counts, e.g. 0.25 for --quick);
//! - `agent PIN_DIR ENGINE PUBLIC`: the agent's kernel side, `agent: ready`, then runs until killed;
//! - `probe CGROUP PATH`: joins CGROUP and connects to PATH; exit 0 connected, 10 EPERM, 13 other.

use std::{
    fs,
    io::{self, BufRead as _, BufReader},
    os::{
        fd::{AsFd as _, FromRawFd as _, OwnedFd},
        unix::net::{UnixDatagram, UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use eci_agent::{
    agent::{KernelConfig, enforce},
    kernel::{PinLayout, loader},
};
use eci_common::CLASS_PUBLIC;

const WORK: &str = "/tmp/eci-bench";
const PIN_DIR: &str = "/sys/fs/bpf/eci-bench";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Trusted by the agent (so the bench's own cgroup below it may connect to the public socket).
const TRUSTED: &str = "/b-trusted";
const BENCH_CGROUP: &str = "/b-trusted/bench";
/// Known to nobody: refused on the protected socket while the programs are attached.
const UNLISTED: &str = "/b-unlisted";
/// Where the cgroup loop makes and removes a child, again and again.
const MKDIR_CGROUP: &str = "/b-mkdir";
/// Directory levels above the file the open/stat loops walk to.
const DEPTH: usize = 24;

const EXIT_EPERM: u8 = 10;
const EXIT_OTHER: u8 = 13;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("agent") => agent(&args[1..]),
        Some("probe") => return probe(&args[1..]),
        _ => bench(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            println!("eci-bench-error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// One measured operation: what it does to the kernel, and how many times per round.
struct Workload {
    name: &'static str,
    ops: u64,
    /// Sets the workload up (outside the timing) and returns one operation; what it set up is
    /// undone when the operation is dropped.
    prepare: fn(&Paths) -> anyhow::Result<Op>,
}

type Op = Box<dyn FnMut() -> io::Result<()>>;

struct Paths {
    deep_file: PathBuf,
    shallow_file: PathBuf,
    unrelated: PathBuf,
    public: PathBuf,
    /// Where the datagram loop binds its receiver; nothing protects it.
    unrelated_dgram: PathBuf,
    /// The engine socket's directory, which protects the name `engine.sock`.
    protected_dir: PathBuf,
    /// A directory that protects nothing.
    plain_dir: PathBuf,
    /// Where the cgroup loop makes its cgroups (not a container parent).
    cgroup_parent: PathBuf,
}

/// Names in the protected directory as long as `engine.sock` (11 bytes): the programs compare
/// names of a protected length byte by byte, so these take their slowest way to "not protected".
const SCRATCH: &str = "scratch.txt";
const RENAME_A: &str = "rename-a.xx";
const RENAME_B: &str = "rename-b.xx";

/// Removes a file when dropped (what a workload leaves behind).
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Which program each workload exercises: `unix_stream_connect` the connects (and `d_instantiate`
/// their sockets' files), `unix_may_send` the datagrams, `d_instantiate` the creates and pipes,
/// `inode_rename` the renames, `file_receive` the passed fds, the `cgroup_mkdir` tracepoint the
/// cgroups. Open and stat run none of them (the retired
/// `inode_permission` ran on every path component they walk).
const WORKLOADS: &[Workload] = &[
    Workload {
        name: "open_deep",
        ops: 20_000,
        prepare: |p| {
            let path = p.deep_file.clone();
            Ok(Box::new(move || fs::File::open(&path).map(drop)))
        },
    },
    Workload {
        name: "stat_deep",
        ops: 20_000,
        prepare: |p| {
            let path = p.deep_file.clone();
            Ok(Box::new(move || fs::metadata(&path).map(drop)))
        },
    },
    // The same at depth 2: the difference to stat_deep divided by the extra levels is the cost
    // of one hook call per path component, if any hook ran there.
    Workload {
        name: "stat_shallow",
        ops: 20_000,
        prepare: |p| {
            let path = p.shallow_file.clone();
            Ok(Box::new(move || fs::metadata(&path).map(drop)))
        },
    },
    Workload {
        name: "connect_unrelated",
        ops: 4_000,
        prepare: |p| {
            let path = p.unrelated.clone();
            Ok(Box::new(move || UnixStream::connect(&path).map(drop)))
        },
    },
    Workload {
        name: "connect_protected_allowed",
        ops: 4_000,
        prepare: |p| {
            let path = p.public.clone();
            Ok(Box::new(move || UnixStream::connect(&path).map(drop)))
        },
    },
    // One datagram to a bound socket, and back out of its queue.
    Workload {
        name: "dgram_unrelated",
        ops: 10_000,
        prepare: |p| {
            let _ = fs::remove_file(&p.unrelated_dgram);
            let receiver = UnixDatagram::bind(&p.unrelated_dgram)?;
            let bound = Remove(p.unrelated_dgram.clone());
            let sender = UnixDatagram::unbound()?;
            sender.connect(&p.unrelated_dgram)?;
            let mut buf = [0u8; 8];
            Ok(Box::new(move || {
                let _ = &bound;
                sender.send(b"x")?;
                receiver.recv(&mut buf).map(drop)
            }))
        },
    },
    // Create and unlink a file where nothing is protected: `d_instantiate` finds no tag on the
    // directory (every file creation on the system).
    Workload {
        name: "create_unlink_plain_dir",
        ops: 4_000,
        prepare: |p| {
            let path = p.plain_dir.join(SCRATCH);
            Ok(Box::new(move || {
                drop(fs::File::create(&path)?);
                fs::remove_file(&path)
            }))
        },
    },
    // Create and unlink a file in the protected directory: `d_instantiate` finds the directory's
    // tag and compares the name.
    Workload {
        name: "create_unlink_protected_dir",
        ops: 4_000,
        prepare: |p| {
            let path = p.protected_dir.join(SCRATCH);
            Ok(Box::new(move || {
                drop(fs::File::create(&path)?);
                fs::remove_file(&path)
            }))
        },
    },
    // Rename a file back and forth in the protected directory (`inode_rename`, the name compare).
    Workload {
        name: "rename_protected_dir",
        ops: 10_000,
        prepare: |p| {
            let (a, b) = (
                p.protected_dir.join(RENAME_A),
                p.protected_dir.join(RENAME_B),
            );
            let _ = fs::remove_file(&b);
            fs::write(&a, b"x")?;
            let made = (Remove(a.clone()), Remove(b.clone()));
            let mut forth = true;
            Ok(Box::new(move || {
                let _ = &made;
                let (from, to) = if forth { (&a, &b) } else { (&b, &a) };
                forth = !forth;
                fs::rename(from, to)
            }))
        },
    },
    // One fd (a plain file) sent with SCM_RIGHTS and received.
    Workload {
        name: "pass_fd",
        ops: 10_000,
        prepare: |p| {
            let (sender, receiver) = UnixStream::pair()?;
            let file = fs::File::open(&p.shallow_file)?;
            Ok(Box::new(move || {
                scm::send_fd(&sender, file.as_fd())?;
                scm::recv_fd(&receiver).map(drop)
            }))
        },
    },
    // A pipe made and closed: its file is a pseudo file, which `d_instantiate` sees too (as it
    // sees every socket, accepted connection, eventfd, epoll instance…), and leaves at once.
    Workload {
        name: "pipe_open_close",
        ops: 10_000,
        prepare: |_| {
            Ok(Box::new(|| {
                let mut fds = [0; 2];
                // SAFETY: `fds` has room for the two fds pipe2 writes; each is owned once below.
                if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
                    return Err(io::Error::last_os_error());
                }
                // SAFETY: fresh fds owned by nobody else.
                drop(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) });
                Ok(())
            }))
        },
    },
    Workload {
        name: "cgroup_mkdir_rmdir",
        ops: 1_000,
        prepare: |p| {
            let dir = p.cgroup_parent.join("c");
            Ok(Box::new(move || {
                fs::create_dir(&dir)?;
                fs::remove_dir(&dir)
            }))
        },
    },
];

/// Bursts each workload is timed in, per round and mode; the fastest counts. A busy host stalls
/// the guest now and then (TCG is one host thread); a stall only ever adds time, so the fastest
/// of many short bursts is the one nearest the cost of the operation itself.
const BURSTS: u64 = 10;

/// ns per operation of the fastest of [`BURSTS`] bursts of `per_burst` operations.
fn fastest_burst(op: &mut Op, per_burst: u64) -> anyhow::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..BURSTS {
        let started = Instant::now();
        for _ in 0..per_burst {
            op()?;
        }
        best = best.min(started.elapsed().as_nanos() as f64 / per_burst as f64);
    }
    Ok(best)
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    let (rounds, scale): (u32, f64) = match args {
        [] => (5, 1.0),
        [rounds, scale] => (
            rounds.parse().context("ROUNDS")?,
            scale.parse().context("SCALE")?,
        ),
        _ => bail!("usage: kernel-bench [ROUNDS SCALE]"),
    };
    if rounds == 0 || scale.is_nan() || scale <= 0.0 {
        bail!("ROUNDS and SCALE must be positive");
    }
    let work = Path::new(WORK);
    let _ = fs::remove_dir_all(work);
    let mut deep = work.to_path_buf();
    for level in 0..DEPTH {
        deep.push(format!("level{level}"));
    }
    fs::create_dir_all(&deep).context("creating the deep path")?;
    let deep_file = deep.join("file");
    fs::write(&deep_file, b"x")?;
    let shallow_file = work.join("file");
    fs::write(&shallow_file, b"x")?;
    let engine_dir = work.join("run");
    fs::create_dir(&engine_dir)?;
    let paths = Paths {
        deep_file,
        shallow_file,
        unrelated: serve(&work.join("unrelated.sock"))?,
        public: serve(&work.join("docker.sock"))?,
        unrelated_dgram: work.join("unrelated-dgram.sock"),
        protected_dir: engine_dir.clone(),
        plain_dir: work.to_path_buf(),
        cgroup_parent: cgroup_dir(MKDIR_CGROUP),
    };
    let engine = serve(&engine_dir.join("engine.sock"))?;
    for cg in [BENCH_CGROUP, UNLISTED, MKDIR_CGROUP] {
        fs::create_dir_all(cgroup_dir(cg)).with_context(|| format!("creating cgroup {cg}"))?;
    }
    fs::write(
        cgroup_dir(BENCH_CGROUP).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .context("joining the bench cgroup")?;
    let pins = PinLayout::new(Path::new(PIN_DIR));
    let _ = loader::unload(&pins);

    let mut agent: Option<Child> = None;
    for round in 0..rounds {
        for on in [false, true] {
            if on {
                agent = Some(start_agent(&engine, &paths.public)?);
            } else if let Some(child) = agent.take() {
                stop_agent(child, &pins)?;
            }
            check_state(&paths.public, on)?;
            for w in WORKLOADS {
                let per_burst = ((w.ops as f64 * scale) as u64 / BURSTS).max(10);
                let mut op = (w.prepare)(&paths).with_context(|| w.name)?;
                for _ in 0..per_burst {
                    op().with_context(|| format!("{} warm-up", w.name))?;
                }
                let ns = fastest_burst(&mut op, per_burst).with_context(|| w.name)?;
                drop(op);
                println!(
                    "eci-bench {} {} {round} {ns:.1}",
                    w.name,
                    if on { "on" } else { "off" }
                );
            }
        }
    }
    if let Some(child) = agent.take() {
        stop_agent(child, &pins)?;
    }
    println!("eci-bench-done");
    Ok(())
}

fn cgroup_dir(rel: &str) -> PathBuf {
    Path::new(CGROUP_ROOT).join(rel.trim_start_matches('/'))
}

/// A unix listener that accepts and drops connections on a thread for the life of the process.
fn serve(path: &Path) -> anyhow::Result<PathBuf> {
    let _ = fs::remove_file(path);
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    thread::spawn(move || {
        for stream in listener.incoming() {
            drop(stream);
        }
    });
    Ok(path.to_owned())
}

fn start_agent(engine: &Path, public: &Path) -> anyhow::Result<Child> {
    let mut child = Command::new(std::env::current_exe()?)
        .arg("agent")
        .arg(PIN_DIR)
        .args([engine, public])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawning the agent")?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "agent: ready" => break,
            Some(Ok(line)) => println!("{line}"),
            _ => {
                let _ = child.wait();
                bail!("the agent exited before it was ready");
            }
        }
    }
    Ok(child)
}

/// Ends the agent and detaches the programs: the links live as long as their pins.
fn stop_agent(mut child: Child, pins: &PinLayout) -> anyhow::Result<()> {
    let _ = child.kill();
    let _ = child.wait();
    loader::unload(pins).context("unloading the programs")?;
    Ok(())
}

/// Waits until the programs are attached exactly when `on` says so (fails after 10 s).
/// Detaching is asynchronous on newer kernels: the last link reference is dropped from a
/// deferred work item (and bpffs frees unlinked pins after an RCU grace period), so the first
/// probe after an unload may still be refused.
fn check_state(public: &Path, on: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = Command::new(std::env::current_exe()?)
            .arg("probe")
            .arg(UNLISTED)
            .arg(public)
            .status()
            .context("spawning a probe")?;
        let code = status.code().map_or(255, |c| c as u8);
        match (on, code) {
            (true, EXIT_EPERM) | (false, 0) => return Ok(()),
            (true, 0) | (false, EXIT_EPERM) if Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(50));
            }
            (true, _) => bail!("programs on, yet an unlisted cgroup's connect got exit {code}"),
            (false, _) => {
                bail!("programs off for 10 s, yet an unlisted cgroup's connect got exit {code}")
            }
        }
    }
}

fn agent(args: &[String]) -> anyhow::Result<()> {
    let [pin_dir, engine, public] = args else {
        bail!("usage: kernel-bench agent PIN_DIR ENGINE PUBLIC");
    };
    let cfg = KernelConfig {
        pin_dir: pin_dir.into(),
        cgroup_root: CGROUP_ROOT.into(),
        engine: engine.into(),
        trust: vec!["/".into(), TRUSTED.into()],
        container_parents: Vec::new(),
    };
    let mut enforcer = enforce(&cfg)?;
    enforcer.maps.protect(Path::new(public), CLASS_PUBLIC)?;
    println!("agent: ready");
    loop {
        thread::sleep(Duration::from_secs(3600));
    }
}

fn probe(args: &[String]) -> ExitCode {
    let [cgroup, path] = args else {
        eprintln!("usage: kernel-bench probe CGROUP PATH");
        return ExitCode::from(EXIT_OTHER);
    };
    if let Err(err) = fs::write(
        cgroup_dir(cgroup).join("cgroup.procs"),
        std::process::id().to_string(),
    ) {
        eprintln!("probe: joining {cgroup}: {err}");
        return ExitCode::from(EXIT_OTHER);
    }
    match UnixStream::connect(path) {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => ExitCode::from(EXIT_EPERM),
        Err(err) => {
            eprintln!("probe: {path}: {err}");
            ExitCode::from(EXIT_OTHER)
        }
    }
}

/// `SCM_RIGHTS` in its smallest form, for the `pass_fd` workload.
mod scm {
    use std::{
        io,
        os::{
            fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
            unix::net::UnixStream,
        },
    };

    /// A control buffer with room for one fd, aligned for `cmsghdr`.
    type Control = [u64; 4];

    pub fn send_fd(socket: &UnixStream, fd: BorrowedFd<'_>) -> io::Result<()> {
        let mut byte = [b'x'];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control: Control = [0; 4];
        // SAFETY: the message points at live buffers; the CMSG macros stay within `control`,
        // which is larger than CMSG_SPACE(sizeof(int)).
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
            libc::CMSG_DATA(cmsg)
                .cast::<RawFd>()
                .write_unaligned(fd.as_raw_fd());
            if libc::sendmsg(socket.as_raw_fd(), &msg, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn recv_fd(socket: &UnixStream) -> io::Result<OwnedFd> {
        let mut byte = [0u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control: Control = [0; 4];
        // SAFETY: as in `send_fd`; the kernel fills at most msg_controllen bytes of `control`,
        // and the fd it installed is owned exactly once.
        unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = size_of_val(&control);
            if libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
                return Err(io::Error::last_os_error());
            }
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            if cmsg.is_null() || (*cmsg).cmsg_type != libc::SCM_RIGHTS {
                return Err(io::Error::other("a message without an fd"));
            }
            Ok(OwnedFd::from_raw_fd(
                libc::CMSG_DATA(cmsg).cast::<RawFd>().read_unaligned(),
            ))
        }
    }
}

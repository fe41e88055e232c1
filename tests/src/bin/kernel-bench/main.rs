//! `kernel-bench`: what the BPF LSM programs cost, measured inside a QEMU guest (a benchmark run
//! by `cargo xtask bench`, never a test). vm-init runs it instead of the kernel suite when the
//! kernel command line says `eci.mode=bench`.
//!
//! Each workload runs in short bursts, without and with the programs alternately (see [`BLOCKS`]),
//! so that drift in the guest (TCG, a busy host) falls on both sides alike. The programs are the
//! agent's kernel side, loaded and pinned by a child process through the same library calls as
//! `eci-agent run`; the bench then takes them over (`switch`) and attaches and detaches them
//! itself, which takes milliseconds instead of a load. Each round checks both modes: a probe from
//! an unlisted cgroup must be refused on the protected socket when the programs are on and
//! connect when they are off.
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

mod bpfmap;

use anyhow::{Context as _, bail};
use eci_agent::kernel::{
    PinLayout,
    enforce::{KernelConfig, enforce},
    pins,
};
use eci_common::CLASS_PUBLIC;

const WORK: &str = "/tmp/eci-bench";
const PIN_DIR: &str = "/sys/fs/bpf/eci-bench";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Trusted by the agent (so the bench's own cgroup below it may connect to the public socket).
const TRUSTED: &str = "/b-trusted";
const BENCH_CGROUP: &str = "/b-trusted/bench";
/// The agent's own cgroup (`kernel::enforce::AGENT_CGROUP`).
const AGENT_CGROUP: &str = "/eci-agent";
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
    /// Timed with the floor program alone instead of the agent's programs (see
    /// `switch::Programs::floor`): what any BPF LSM program on the hook costs.
    floor: bool,
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

/// Open and close an ordinary file 2 levels down, read-only.
fn open_shallow(p: &Paths) -> anyhow::Result<Op> {
    let path = p.shallow_file.clone();
    Ok(Box::new(move || fs::File::open(&path).map(drop)))
}

/// Which program each workload exercises: `file_open` every open (its fast path leaves at the
/// file mode for a read-only open, at the file system for a write open of an ordinary file; a
/// write open of a cgroup's file walks to the nearest verdict and judges the writer),
/// `unix_stream_connect` the connects (and `d_instantiate` their sockets' files), `unix_may_send`
/// the datagrams, `d_instantiate` the creates and pipes, `inode_rename` the renames,
/// `file_receive` the passed fds, the `cgroup_mkdir` and `cgroup_rmdir` tracepoints the cgroups,
/// the guard's `bpf` every `bpf(2)` command and its `bpf_map` an fd of a map by id. Stat runs none
/// (the retired `inode_permission` ran on every path component it walks).
const WORKLOADS: &[Workload] = &[
    // The open loop of issue 9's target: open and close an ordinary file, 2 levels down.
    Workload {
        name: "open_shallow",
        ops: 20_000,
        floor: false,
        prepare: open_shallow,
    },
    // The same open loop with a `file_open` program that only returns 0 attached, and none of
    // the agent's: the cost of any BPF LSM program on that hook (its trampoline), the floor
    // under `open_shallow`'s.
    Workload {
        name: "open_shallow_floor",
        ops: 20_000,
        floor: true,
        prepare: open_shallow,
    },
    Workload {
        name: "open_write_shallow",
        ops: 20_000,
        floor: false,
        prepare: |p| {
            let path = p.shallow_file.clone();
            Ok(Box::new(move || {
                fs::OpenOptions::new().write(true).open(&path).map(drop)
            }))
        },
    },
    Workload {
        name: "open_cgroupfs_read",
        ops: 20_000,
        floor: false,
        prepare: |p| {
            let path = p.cgroup_parent.join("cgroup.procs");
            Ok(Box::new(move || fs::File::open(&path).map(drop)))
        },
    },
    // A write open of the bench's own (trusted, so protected) cgroup's `cgroup.procs`, nothing
    // written: the slowest way through `file_open` that is allowed.
    Workload {
        name: "open_cgroupfs_write_protected",
        ops: 10_000,
        floor: false,
        prepare: |_| {
            let path = cgroup_dir(BENCH_CGROUP).join("cgroup.procs");
            Ok(Box::new(move || {
                fs::OpenOptions::new().write(true).open(&path).map(drop)
            }))
        },
    },
    Workload {
        name: "bpf_map_lookup",
        ops: 20_000,
        floor: false,
        prepare: |_| {
            let map = bpfmap::Map::create()?;
            Ok(Box::new(move || map.lookup()))
        },
    },
    Workload {
        name: "bpf_map_fd_by_id",
        ops: 10_000,
        floor: false,
        prepare: |_| {
            let map = bpfmap::Map::create()?;
            Ok(Box::new(move || map.fd_by_id()))
        },
    },
    Workload {
        name: "open_deep",
        ops: 20_000,
        floor: false,
        prepare: |p| {
            let path = p.deep_file.clone();
            Ok(Box::new(move || fs::File::open(&path).map(drop)))
        },
    },
    Workload {
        name: "stat_deep",
        ops: 20_000,
        floor: false,
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
        floor: false,
        prepare: |p| {
            let path = p.shallow_file.clone();
            Ok(Box::new(move || fs::metadata(&path).map(drop)))
        },
    },
    Workload {
        name: "connect_unrelated",
        ops: 4_000,
        floor: false,
        prepare: |p| {
            let path = p.unrelated.clone();
            Ok(Box::new(move || UnixStream::connect(&path).map(drop)))
        },
    },
    Workload {
        name: "connect_protected_allowed",
        ops: 4_000,
        floor: false,
        prepare: |p| {
            let path = p.public.clone();
            Ok(Box::new(move || UnixStream::connect(&path).map(drop)))
        },
    },
    // One datagram to a bound socket, and back out of its queue.
    Workload {
        name: "dgram_unrelated",
        ops: 10_000,
        floor: false,
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
        floor: false,
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
        floor: false,
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
        floor: false,
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
        floor: false,
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
        floor: false,
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
        floor: false,
        prepare: |p| {
            let dir = p.cgroup_parent.join("c");
            Ok(Box::new(move || {
                fs::create_dir(&dir)?;
                fs::remove_dir(&dir)
            }))
        },
    },
];

/// Each workload is timed in blocks without and with the programs, in this order (the mean time
/// of both modes falls at the same moment), each block [`BURSTS_PER_BLOCK`] short bursts; the
/// fastest burst of each mode counts. A busy host stalls the guest now and then (TCG is one host
/// thread), and a stall only ever adds time, so the fastest of several short bursts is the one
/// nearest the cost of the operation itself; interleaving the modes within a second or two puts
/// both in the same stretch of the host's load. A switch costs a few hundred milliseconds in TCG
/// (six links made or closed), hence blocks rather than alternating burst by burst.
///
/// Bursts are short for the guest's own periodic work too (the timer tick, RCU, the agent and
/// listener threads): under `--accel icount` a burst of ~2.7M instructions, as three per block
/// made them, rarely missed a tick, and 6.1's shallow open read +200..+300 instructions one run
/// and +24 the next. Twelve per block (~0.7M each) leave tick-free bursts in every block, and the
/// figures repeat to the instruction on both kernels.
const BLOCKS: [bool; 4] = [false, true, true, false];
const BURSTS_PER_BLOCK: u64 = 12;

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
    let _ = pins::unload(&pins);

    // The agent loads and pins the programs once; the bench takes them over and attaches and
    // detaches them itself from then on (see `switch`).
    let agent = start_agent(&engine, &paths.public)?;
    // The agent's objects and pins are its cgroup's alone (the guard), so the bench takes them
    // over from there.
    join(AGENT_CGROUP)?;
    let mut programs = switch::Programs::adopt(&pins.links_dir()).context("taking the programs")?;
    let mut floor = switch::Programs::floor("bpf_lsm_file_open").context("the floor program")?;
    join(BENCH_CGROUP)?;
    check_state(&paths.public, false)?;
    for round in 0..rounds {
        programs.set(true)?;
        check_state(&paths.public, true)?;
        programs.set(false)?;
        check_state(&paths.public, false)?;
        for w in WORKLOADS {
            let per_burst =
                ((w.ops as f64 * scale) as u64 / (BLOCKS.len() as u64 * BURSTS_PER_BLOCK)).max(10);
            let warm = (per_burst / 4).max(2);
            let mut op = (w.prepare)(&paths).with_context(|| w.name)?;
            let mut fastest = [f64::INFINITY; 2];
            for on in BLOCKS {
                let timed = if w.floor { &mut floor } else { &mut programs };
                timed.set(on)?;
                // Attaching rewrites kernel text, which TCG translates anew.
                run_ops(&mut op, warm).with_context(|| format!("{} warm-up", w.name))?;
                for _ in 0..BURSTS_PER_BLOCK {
                    let started = Instant::now();
                    run_ops(&mut op, per_burst).with_context(|| w.name)?;
                    let ns = started.elapsed().as_nanos() as f64 / per_burst as f64;
                    fastest[usize::from(on)] = fastest[usize::from(on)].min(ns);
                }
            }
            floor.set(false)?;
            if round == 0 && !w.floor {
                // Over a whole round's operations: reading the statistics makes bpf(2) calls
                // of its own, which a short burst would count as the operation's.
                let n = per_burst * BLOCKS.len() as u64 * BURSTS_PER_BLOCK;
                count_runs(w.name, &mut op, n, &mut programs)?;
            }
            programs.set(false)?;
            drop(op);
            for on in [false, true] {
                println!(
                    "eci-bench {} {} {round} {:.1}",
                    w.name,
                    if on { "on" } else { "off" },
                    fastest[usize::from(on)]
                );
            }
        }
    }
    drop(programs);
    stop_agent(agent, &pins)?;
    println!("eci-bench-done");
    Ok(())
}

/// Which programs one operation runs, and how long each run takes inside the program (the
/// trampoline around it not counted), from the kernel's BPF run statistics, which are on only
/// here (they cost time of their own): `eci-bench-runs <workload> <program>=<runs per op>x<ns per
/// run> …`. A workload that runs no program has nothing after its name.
fn count_runs(
    name: &str,
    op: &mut Op,
    n: u64,
    programs: &mut switch::Programs,
) -> anyhow::Result<()> {
    programs.set(true)?;
    let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime).context("BPF_ENABLE_STATS")?;
    // Reading the programs' statistics takes an fd of each by id: the guard allows that only in
    // the agent's cgroup. The operations themselves run in the bench's.
    join(AGENT_CGROUP)?;
    let before = programs.runs()?;
    join(BENCH_CGROUP)?;
    run_ops(op, n).with_context(|| format!("{name} counting runs"))?;
    join(AGENT_CGROUP)?;
    let after = programs.runs()?;
    join(BENCH_CGROUP)?;
    drop(stats);
    let mut line = format!("eci-bench-runs {name}");
    for ((program, count0, ns0), (_, count1, ns1)) in before.iter().zip(&after) {
        let runs = count1 - count0;
        if runs > 0 {
            line += &format!(
                " {program}={:.2}x{:.0}",
                runs as f64 / n as f64,
                (ns1 - ns0) as f64 / runs as f64
            );
        }
    }
    println!("{line}");
    Ok(())
}

fn run_ops(op: &mut Op, n: u64) -> io::Result<()> {
    for _ in 0..n {
        op()?;
    }
    Ok(())
}

/// Moves the bench process into the cgroup `rel`.
fn join(rel: &str) -> anyhow::Result<()> {
    fs::write(
        cgroup_dir(rel).join("cgroup.procs"),
        std::process::id().to_string(),
    )
    .with_context(|| format!("joining cgroup {rel}"))
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
    pins::unload(pins).context("unloading the programs")?;
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

/// Attaching and detaching the loaded programs in milliseconds, with the `bpf(2)` commands aya does
/// not offer on programs it did not load: the programs are found through the links the agent
/// pinned, and each "on" makes a new link per program (`BPF_RAW_TRACEPOINT_OPEN`, which attaches
/// LSM programs and BTF tracepoints to the target they were loaded for); closing a link's fd
/// detaches it before `close(2)` returns.
mod switch {
    use std::{
        fs, io,
        os::fd::{AsRawFd as _, OwnedFd},
        path::Path,
    };

    use eci_tests::bpfsys::{self, Attr, Kind};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
    const BPF_PROG_TYPE_LSM: u64 = 29;
    const BPF_LSM_MAC: u64 = 27;

    pub struct Programs {
        programs: Vec<OwnedFd>,
        /// Their kernel ids, to find their run counts.
        ids: Vec<u32>,
        /// Links made by `set(true)`; empty while off.
        links: Vec<OwnedFd>,
    }

    impl Programs {
        /// A program for LSM hook function `hook` that only returns 0, loaded by hand (two
        /// instructions, no object): timed instead of the agent's, it is what any BPF LSM
        /// program on the hook costs — the trampoline that calls it — under what the agent's
        /// fast path adds. Its runs are not counted.
        pub fn floor(hook: &str) -> io::Result<Self> {
            let btf = eci_agent::kernel::btf::Btf::from_sys_fs().map_err(io::Error::other)?;
            let target = btf
                .function(hook)
                .ok_or_else(|| io::Error::other(format!("no function {hook} in the BTF")))?;
            // r0 = 0; exit
            let insns: [u64; 2] = [0xb7, 0x95];
            let license = c"GPL";
            let mut attr: Attr = [0; 16];
            attr[0] = BPF_PROG_TYPE_LSM | ((insns.len() as u64) << 32);
            attr[1] = insns.as_ptr() as u64;
            attr[2] = license.as_ptr() as u64;
            // prog_name "eci_floor"; expected_attach_type; attach_btf_id (vmlinux's).
            attr[6] = u64::from_le_bytes(*b"eci_floo");
            attr[7] = u64::from(b'r');
            attr[8] = BPF_LSM_MAC << 32;
            attr[13] = u64::from(target) << 32;
            Ok(Self {
                programs: vec![bpfsys::bpf_fd(BPF_PROG_LOAD, &mut attr)?],
                ids: Vec::new(),
                links: Vec::new(),
            })
        }

        /// Takes the program of every link pinned in `dir` and removes the pins, which detaches
        /// the agent's links (bpffs releases them after an RCU grace period).
        pub fn adopt(dir: &Path) -> io::Result<Self> {
            let mut programs = Vec::new();
            let mut ids = Vec::new();
            for entry in fs::read_dir(dir)? {
                let path = entry?.path();
                let link = bpfsys::obj_get(&path)?;
                let (_, program) = bpfsys::ids(&link)?;
                programs.push(bpfsys::fd_by_id(Kind::Prog, program)?);
                ids.push(program);
                drop(link);
                fs::remove_file(&path)?;
            }
            if programs.is_empty() {
                return Err(io::Error::other(format!(
                    "no link pinned in {}",
                    dir.display()
                )));
            }
            Ok(Self {
                programs,
                ids,
                links: Vec::new(),
            })
        }

        /// Each program's name, run count and time spent running so far (counted only while
        /// `aya::sys::enable_stats` is held).
        pub fn runs(&self) -> io::Result<Vec<(String, u64, u64)>> {
            let mut runs = Vec::new();
            for info in aya::programs::loaded_programs() {
                let info = info.map_err(io::Error::other)?;
                if self.ids.contains(&info.id()) {
                    runs.push((
                        info.name_as_str().unwrap_or("?").to_owned(),
                        info.run_count(),
                        info.run_time().as_nanos() as u64,
                    ));
                }
            }
            runs.sort();
            Ok(runs)
        }

        /// Attaches every program (`on`) or detaches them all.
        pub fn set(&mut self, on: bool) -> io::Result<()> {
            if !on {
                self.links.clear();
                return Ok(());
            }
            if self.links.is_empty() {
                for program in &self.programs {
                    let mut attr: Attr = [0; 16];
                    // raw_tracepoint.name = NULL: the target the program was loaded for.
                    attr[1] = program.as_raw_fd() as u64;
                    self.links
                        .push(bpfsys::bpf_fd(BPF_RAW_TRACEPOINT_OPEN, &mut attr)?);
                }
            }
            Ok(())
        }
    }
}

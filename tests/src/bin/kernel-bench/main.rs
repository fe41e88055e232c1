//! `kernel-bench`: what the BPF LSM programs cost, measured inside a QEMU guest (a benchmark run
//! by `cargo xtask bench`, never a test). vm-init runs it instead of the kernel suite when the
//! kernel command line says `eci.mode=bench`.
//!
//! Rounds alternate without/with the programs (off, on, off, on, …) so that drift in the guest
//! (TCG, a busy host) falls on both sides alike. "With" means the agent's kernel side, loaded by
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
    io::{BufRead as _, BufReader},
    os::unix::net::{UnixListener, UnixStream},
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

/// One measured loop: what it does to the kernel, and how many times per round.
struct Workload {
    name: &'static str,
    ops: u64,
    run: fn(&Paths, u64) -> anyhow::Result<()>,
}

struct Paths {
    deep_file: PathBuf,
    shallow_file: PathBuf,
    unrelated: PathBuf,
    public: PathBuf,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        name: "open_deep",
        ops: 20_000,
        run: |p, n| {
            for _ in 0..n {
                drop(fs::File::open(&p.deep_file)?);
            }
            Ok(())
        },
    },
    Workload {
        name: "stat_deep",
        ops: 20_000,
        run: |p, n| {
            for _ in 0..n {
                fs::metadata(&p.deep_file)?;
            }
            Ok(())
        },
    },
    // The same at depth 2: the difference to stat_deep divided by the extra levels is the
    // cost of one hook call per path component.
    Workload {
        name: "stat_shallow",
        ops: 20_000,
        run: |p, n| {
            for _ in 0..n {
                fs::metadata(&p.shallow_file)?;
            }
            Ok(())
        },
    },
    Workload {
        name: "connect_unrelated",
        ops: 4_000,
        run: |p, n| {
            for _ in 0..n {
                drop(UnixStream::connect(&p.unrelated)?);
            }
            Ok(())
        },
    },
    Workload {
        name: "connect_protected_allowed",
        ops: 4_000,
        run: |p, n| {
            for _ in 0..n {
                drop(UnixStream::connect(&p.public)?);
            }
            Ok(())
        },
    },
];

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
    let paths = Paths {
        deep_file,
        shallow_file,
        unrelated: serve(&work.join("unrelated.sock"))?,
        public: serve(&work.join("docker.sock"))?,
    };
    let engine = serve(&work.join("engine.sock"))?;
    for cg in [BENCH_CGROUP, UNLISTED] {
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
                let ops = ((w.ops as f64 * scale) as u64).max(100);
                (w.run)(&paths, ops / 10).with_context(|| format!("{} warm-up", w.name))?;
                let started = Instant::now();
                (w.run)(&paths, ops).with_context(|| w.name)?;
                let ns = started.elapsed().as_nanos() as f64 / ops as f64;
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

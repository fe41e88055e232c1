//! `cargo xtask run`: the agent in front of a Docker engine with the shipped example settings.
//! Without `--engine` it starts a private dockerd (socket and data under target/run). Flags after
//! `--` go to `eci-agent run`. Ctrl-C stops what it started.
//!
//! Kernel enforcement needs a kernel that loads BPF LSM programs. With `--vm`, or when this
//! kernel has no active BPF LSM, the agent runs in the eci VM (Debian's engine and kernel under
//! QEMU) and the host reaches its sidecar through a unix socket relayed into the VM; both modes
//! print the same `export DOCKER_HOST=` line. `--host` forces the host: where the kernel refuses
//! the programs the agent then runs with `--allow-no-lsm` (the sidecar alone, said loudly).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    build, evm,
    process::{Guarded, Stop},
    setup,
};

#[derive(clap::Args)]
#[group(id = "run")]
pub struct Options {
    /// An engine socket to protect instead of starting a private dockerd.
    #[arg(long)]
    pub engine: Option<PathBuf>,
    /// Run the engine and the agent in the eci VM (the default where this kernel has no BPF LSM).
    #[arg(long, conflicts_with_all = ["host", "engine"])]
    pub vm: bool,
    /// Run the agent on this host even where its kernel cannot enforce.
    #[arg(long)]
    pub host: bool,
    /// How QEMU runs the eci VM's CPUs.
    #[arg(long, value_enum, default_value_t = evm::boot::Accel::TcgSingle)]
    pub accel: evm::boot::Accel,
    /// Flags passed through to `eci-agent run` (host mode only).
    #[arg(last = true)]
    pub agent_args: Vec<String>,
}

/// A dockerd we started; stopped by pid on drop, then its exec root (containerd's sockets and
/// state) removed.
struct PrivateEngine {
    dockerd: Guarded,
    exec_root: PathBuf,
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // SIGTERM (by our child's pid) lets dockerd stop its containerd and clean its exec root.
        self.dockerd.stop();
        let _ = fs::remove_dir_all(&self.exec_root);
    }
}

/// Ctrl-C reaches every process of the terminal's group: the agent and dockerd stop on their
/// own, and this process must live on to wait for them and clean up, instead of dying first.
/// A handler (not SIG_IGN, which children would inherit) that does nothing.
fn outlive_ctrl_c() {
    extern "C" fn noop(_: libc::c_int) {}
    // SAFETY: installs an async-signal-safe handler that does nothing; the sigaction struct is
    // zero-initialised and fully set before the call.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = noop as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
    }
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    outlive_ctrl_c();
    setup::build_tools()?;
    if opts.vm || (!opts.host && opts.engine.is_none() && !host_can_enforce(root)?) {
        if !opts.agent_args.is_empty() {
            bail!("flags after -- go to a host agent; the eci VM runs its own");
        }
        if !opts.vm {
            println!(
                "xtask run: this kernel cannot enforce: using the eci VM (--host to override)"
            );
        }
        return evm::serve::run(
            root,
            opts.accel,
            &root.join("examples/admin-settings.json"),
            &root.join("target/run/vm/docker.sock"),
        );
    }
    let agent = build::agent(root)?;
    let dir = root.join("target/run");
    fs::create_dir_all(&dir)?;
    let (engine, _private) = match &opts.engine {
        Some(engine) => (engine.clone(), None),
        None => {
            let (socket, engine) = start_dockerd(&dir)?;
            (socket, Some(engine))
        }
    };
    let listen = dir.join("docker.sock");
    let cgroup_root = setup::cgroup2_root().unwrap_or("/sys/fs/cgroup");
    let mut cmd = Command::new(&agent);
    cmd.arg("run")
        .arg("--settings")
        .arg(root.join("examples/admin-settings.json"))
        .arg("--listen")
        .arg(&listen)
        .arg("--engine")
        .arg(&engine)
        .args([
            "--cgroup-root",
            cgroup_root,
            "--trust-cgroup",
            "/",
            "--allow-no-lsm",
        ])
        .args(&opts.agent_args);
    println!("xtask run: {cmd:?}");
    println!(
        "xtask run: Ctrl-C stops the agent{}",
        if opts.engine.is_none() {
            " and the private dockerd"
        } else {
            ""
        }
    );
    let status = cmd.status().context("running eci-agent")?;
    let _ = fs::remove_file(&listen);
    if !status.success() && status.code() != Some(130) {
        bail!("eci-agent exited with {status}");
    }
    Ok(())
}

/// Whether the agent can enforce on this kernel. An unlisted `bpf` LSM certainly cannot; a
/// listed one may still refuse every program (EPERM), which only loading tells: the freshly
/// built agent's `probe` loads and removes the programs.
fn host_can_enforce(root: &Path) -> anyhow::Result<bool> {
    let listed = fs::read_to_string("/sys/kernel/security/lsm")
        .is_ok_and(|list| list.trim().split(',').any(|lsm| lsm == "bpf"));
    if !listed {
        return Ok(false);
    }
    let agent = build::agent(root)?;
    let out = Command::new(&agent)
        .arg("probe")
        .output()
        .with_context(|| format!("running {} probe", agent.display()))?;
    print!("xtask run: {}", String::from_utf8_lossy(&out.stdout));
    Ok(out.status.success())
}

fn start_dockerd(dir: &Path) -> anyhow::Result<(PathBuf, PrivateEngine)> {
    // containerd's own sockets live under the exec root: keep it short (108-byte socket paths).
    let exec_root = PathBuf::from(format!("/tmp/eci-run-{}", std::process::id()));
    let socket = dir.join("engine.sock");
    let _ = fs::remove_file(&socket);
    let log = fs::File::create(dir.join("dockerd.log"))?;
    let mut dockerd = Command::new("dockerd");
    dockerd
        .arg("--host")
        .arg(format!("unix://{}", socket.display()))
        .arg("--data-root")
        .arg(dir.join("docker-data"))
        .arg("--exec-root")
        .arg(&exec_root)
        .arg("--pidfile")
        .arg(dir.join("dockerd.pid"))
        .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let engine = PrivateEngine {
        // Its containers' shims outlive a killed dockerd: give it time to stop them.
        dockerd: Guarded::spawn(
            "dockerd (Debian's docker.io)",
            &mut dockerd,
            Stop::Term(Duration::from_secs(60)),
        )?,
        exec_root,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!(
                "dockerd did not create {} within 60 s; see {}",
                socket.display(),
                dir.join("dockerd.log").display()
            );
        }
        thread::sleep(Duration::from_millis(200));
    }
    println!(
        "xtask run: private dockerd on {} (log {})",
        socket.display(),
        dir.join("dockerd.log").display()
    );
    Ok((socket, engine))
}

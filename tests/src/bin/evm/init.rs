//! PID 1 of the eci VM (stage 2; stage 1 mounted the disk and the share and switched root here).
//!
//! Mounts what the engine and the agent need (cgroup v2 only), pins the kernel side (`eci-agent
//! load`) before any Docker socket exists, starts dockerd on the private
//! engine socket and a registry on the loopback, hands the host channel's network device to the
//! relay, then, by the kernel command line's `eci.mode=`:
//! - `serve`: starts eci-agent on /var/run/docker.sock and runs until QEMU is stopped;
//! - `e2e`: runs the end-to-end suite (which starts the agent itself) and powers off;
//! - `bench`: runs `evm bench` (`eci.runs=N` timed `docker run`s each way) and powers off.
//!
//! The host reads the serial console: `evm: t=… <step>` timings, `evm: t=… workload start` when
//! the machine is up and the project's part begins (what fails before it may be retried, see
//! xtask's evm/attempt.rs), `evm: ready` (serve), and `init: success|failure` at the end; logs go
//! back through the share's `out/`.

use std::{
    fs,
    os::unix::net::UnixDatagram,
    path::Path,
    process::{Command, ExitCode},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    guest::{
        self, CGROUP_ROOT, EARLY_PROBE_CGROUP, EARLY_PROBE_DIR, ENGINE_SOCK, HOST_CGROUP, LOG_DIR,
        PUBLIC_SOCK, REGISTRY,
    },
    sys,
};

const MOUNTS: &[(&str, &str, &str, Option<&str>)] = &[
    ("proc", "/proc", "proc", None),
    ("sysfs", "/sys", "sysfs", None),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        Some("gid=5,mode=620,ptmxmode=666"),
    ),
    ("tmpfs", "/dev/shm", "tmpfs", None),
    ("tmpfs", "/tmp", "tmpfs", None),
    ("tmpfs", "/run", "tmpfs", Some("mode=755")),
    ("cgroup2", "/sys/fs/cgroup", "cgroup2", Some("nsdelegate")),
    ("bpf", "/sys/fs/bpf", "bpf", None),
    ("securityfs", "/sys/kernel/security", "securityfs", None),
];

/// Where dockerd says `READY=1`.
const NOTIFY_SOCK: &str = "/run/eci/dockerd-notify.sock";

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Serve,
    E2e,
    Bench,
}

pub fn main() -> ExitCode {
    let ok = match run() {
        Ok(ok) => ok,
        Err(err) => {
            println!("init: error: {err:#}");
            false
        }
    };
    copy_logs_out();
    println!("init: {}", if ok { "success" } else { "failure" });
    sys::power_off()
}

fn run() -> anyhow::Result<bool> {
    for (source, target, fstype, data) in MOUNTS {
        sys::mount(source, target, fstype, *data)
            .with_context(|| format!("mounting {fstype} on {target}"))?;
    }
    // The kernel starts init with no PATH; every child inherits this one.
    sys::set_env_single_threaded(&[("PATH", PATH), ("HOME", "/root")]);
    let _ = sys::sethostname("eci-vm");
    guest::mark("init");
    let cmdline = fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let param = |key: &str| {
        cmdline
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
    };
    let mode = match param("eci.mode") {
        Some("serve") => Mode::Serve,
        Some("e2e") => Mode::E2e,
        Some("bench") => Mode::Bench,
        other => bail!("eci.mode= must be serve, e2e or bench, not {other:?}"),
    };
    let runs = param("eci.runs").unwrap_or("5").to_owned();
    println!(
        "evm: kernel {} lsm {} mode {mode:?}",
        fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim(),
        fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default()
    );
    fs::create_dir_all(LOG_DIR)?;
    run_quiet(Command::new("modprobe").args(["-a", "virtio_net", "virtio_rng", "overlay"]))?;
    run_quiet(Command::new("ip").args(["link", "set", "lo", "up"]))?;
    guest::mark("modules");

    if mode == Mode::E2e {
        start_early_probe()?;
    }
    // The kernel side before any Docker socket exists, as eci-agent-pins.service does on a
    // systemd host: the engine binds its socket under a name already tagged (`d_instantiate`),
    // and the containers it restores are denied at birth, so there is no window between the
    // engine's first listen and the agent's start. `run` adopts these pins later.
    load_pins()?;

    // dockerd supervises its own containerd. No bridge, no iptables: containers get their own
    // network namespace with a loopback only, and start twice as fast under TCG.
    fs::create_dir_all("/run/eci")?;
    // Readiness by sd_notify, as systemd learns it: with the pins loaded nothing but the agent's
    // cgroup may connect to the engine, the init included.
    let _ = fs::remove_file(NOTIFY_SOCK);
    let notify = UnixDatagram::bind(NOTIFY_SOCK).context("binding dockerd's notify socket")?;
    guest::spawn_logged(
        Command::new("dockerd")
            .env("NOTIFY_SOCKET", NOTIFY_SOCK)
            .arg("--host")
            .arg(format!("unix://{ENGINE_SOCK}"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--pidfile",
                "/run/eci/dockerd.pid",
            ]),
        "dockerd.log",
    )?;
    let registry_config = "/run/eci/registry.yml";
    fs::write(
        registry_config,
        format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  \
             filesystem:\n    rootdirectory: /var/lib/eci-registry\n  delete:\n    enabled: \
             true\nhttp:\n  addr: {REGISTRY}\n"
        ),
    )?;
    guest::spawn_logged(
        Command::new("docker-registry").args(["serve", registry_config]),
        "registry.log",
    )?;
    start_relay()?;
    wait_notified(&notify, "dockerd", Duration::from_secs(120))?;
    guest::mark("engine ready");
    guest::wait_for("registry", Duration::from_secs(30), || {
        std::net::TcpStream::connect(REGISTRY).is_ok()
    })?;

    // The machine is up: from here on a failure is the project's (see the module's comment).
    guest::mark("workload start");
    match mode {
        Mode::Serve => serve(),
        Mode::E2e => run_to_end(&["e2e"]),
        Mode::Bench => run_to_end(&["bench", &runs]),
    }
}

/// Waits for `READY=1` on `notify` (the `NOTIFY_SOCKET` protocol dockerd speaks to systemd).
fn wait_notified(notify: &UnixDatagram, what: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("{what}: not ready after {} s", limit.as_secs());
        }
        notify.set_read_timeout(Some(left))?;
        match notify.recv(&mut buf) {
            Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => return Ok(()),
            Ok(_) => {}
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("{what}: not ready after {} s", limit.as_secs())
            }
            Err(err) => {
                return Err(err).with_context(|| format!("{what}: reading its notify socket"));
            }
        }
    }
}

/// `eci-agent load`: the programs pinned, both socket names protected, the trusted host cgroup
/// made and trusted (the relay and the suite's host side join it later).
fn load_pins() -> anyhow::Result<()> {
    fs::create_dir_all(Path::new(CGROUP_ROOT).join(HOST_CGROUP))?;
    let out = Command::new(guest::share("bin/eci-agent"))
        .arg("load")
        .args(["--listen", PUBLIC_SOCK, "--engine", ENGINE_SOCK])
        .args(["--trust-cgroup", HOST_CGROUP])
        .env("NO_COLOR", "1")
        .output()
        .context("running eci-agent load")?;
    let _ = fs::write(
        guest::log_path("load.log"),
        [&out.stdout[..], &out.stderr[..]].concat(),
    );
    if !out.status.success() {
        bail!(
            "eci-agent load: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    guest::mark("pins loaded");
    Ok(())
}

/// An unlisted root process that probes both sockets from before either exists (the suite's
/// last case reads what it saw): fail closed from the first instant, not from the agent's start.
fn start_early_probe() -> anyhow::Result<()> {
    let probe = guest::spawn_logged(
        Command::new(guest::share("bin/evm"))
            .args(["shost", "probe-loop", EARLY_PROBE_DIR])
            .arg(format!("engine={ENGINE_SOCK}"))
            .arg(format!("public={PUBLIC_SOCK}")),
        "early-probe.log",
    )?;
    sys::join_cgroup(&Path::new(CGROUP_ROOT).join(EARLY_PROBE_CGROUP), probe.id())
        .context("moving the early probe into its unlisted cgroup")?;
    guest::mark("early probe started");
    Ok(())
}

/// The relay gets a network namespace of its own, and the only network device: nothing else in
/// the VM, containers with `--network host` included, has a route to it.
fn start_relay() -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(guest::share("bin/evm"));
    cmd.arg("relay");
    // SAFETY: unshare is async-signal-safe and touches no memory of the parent.
    unsafe { cmd.pre_exec(sys::unshare_net) };
    let relay = guest::spawn_logged(&mut cmd, "relay.log")?;
    if !Path::new("/sys/class/net/eth0").exists() {
        println!("evm: no network device; the host channel is off");
        return Ok(());
    }
    run_quiet(
        Command::new("ip")
            .args(["link", "set", "eth0", "netns"])
            .arg(relay.id().to_string()),
    )
}

fn serve() -> anyhow::Result<bool> {
    let settings = guest::share("settings.json");
    let agent = guest::start_agent(&settings)?;
    guest::mark("agent ready");
    println!("evm: ready (agent pid {})", agent.id());
    // Runs until QEMU is stopped; PID 1 reaps whatever is re-parented to it.
    while let Some((pid, code)) = sys::wait_any() {
        if pid == agent.id() as i32 {
            println!("evm: eci-agent exited with {code}");
            return Ok(false);
        }
    }
    Ok(false)
}

/// `evm ARGS…` (the suite or the bench) to its end: its exit status is the init's verdict.
fn run_to_end(args: &[&str]) -> anyhow::Result<bool> {
    let suite = Command::new(guest::share("bin/evm"))
        .args(args)
        .spawn()
        .with_context(|| format!("starting evm {}", args.join(" ")))?;
    let pid = suite.id() as i32;
    // Reap everything (orphaned shims and container processes end up here) until the suite ends.
    while let Some((reaped, code)) = sys::wait_any() {
        if reaped == pid {
            return Ok(code == 0);
        }
    }
    bail!("evm {} vanished without an exit status", args.join(" "))
}

fn run_quiet(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Logs go back to the host through the share (best effort: the serial lines already carry the
/// verdict).
fn copy_logs_out() {
    let out = guest::share("out");
    let _ = fs::create_dir_all(&out);
    if let Ok(entries) = fs::read_dir(LOG_DIR) {
        for entry in entries.flatten() {
            let _ = fs::copy(entry.path(), out.join(entry.file_name()));
        }
    }
}

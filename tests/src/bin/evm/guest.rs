//! The eci VM's layout and the helpers the init and the suite share: where things are, how the
//! agent is started, how readiness is checked.

use std::{
    fs,
    io::{Read as _, Write as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The host's 9p share: our binaries in `bin/`, settings, and `out/` for logs going back.
pub const SHARE: &str = "/mnt/eci";
/// The real engine: only the agent's cgroup reaches it once the agent runs.
pub const ENGINE_SOCK: &str = "/run/eci/engine.sock";
/// The sidecar: what `docker` uses inside the VM, and what the host channel relays to.
pub const PUBLIC_SOCK: &str = "/var/run/docker.sock";
pub const LOG_DIR: &str = "/run/eci/log";
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// The host's processes inside the VM: the channel relay and the suite's "host" side. The agent
/// trusts it (and what is below it) to reach the sidecar.
pub const HOST_CGROUP: &str = "eci-host";
/// The e2e boot's unlisted root process (`evm shost probe-loop`): it probes both sockets from
/// before the engine exists to the end of the suite, from a cgroup nobody lists.
pub const EARLY_PROBE_DIR: &str = "/run/eci-early-probe";
pub const EARLY_PROBE_CGROUP: &str = "eci-early-probe";
/// A registry on the VM's loopback (Debian's docker-registry), so digests are real.
pub const REGISTRY: &str = "127.0.0.1:5000";
/// The relay's TCP port inside its own network namespace (QEMU forwards the host's port to it).
pub const RELAY_PORT: u16 = 2375;
/// The agent's Prometheus listener (`--metrics`), on the VM's loopback.
pub const METRICS: &str = "127.0.0.1:9431";

pub fn share(rel: &str) -> PathBuf {
    Path::new(SHARE).join(rel)
}

/// The DaemonSet pod's command, as deploy/kubernetes/daemonset.yaml gives it (xtask's
/// `image::share_pod` writes it into the share, one word per line).
pub fn pod_command() -> anyhow::Result<Vec<String>> {
    let text =
        fs::read_to_string(share("pod/command")).context("reading the share's pod/command")?;
    let words: Vec<String> = text.lines().map(str::to_owned).collect();
    if words.is_empty() {
        bail!("the share's pod/command is empty");
    }
    Ok(words)
}

/// Writes `bytes` to `path` by rename, so that a reader (the agent following its settings, the
/// installer pod following its ConfigMap) never sees half a file.
pub fn write_whole(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path.file_name().context("a file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming onto {}", path.display()))?;
    Ok(())
}

pub fn log_path(name: &str) -> PathBuf {
    Path::new(LOG_DIR).join(name)
}

/// `evm: t=<uptime> <label>`: the host reads these for the timings.
pub fn mark(label: &str) {
    let uptime = fs::read_to_string("/proc/uptime").unwrap_or_default();
    let uptime = uptime.split_whitespace().next().unwrap_or("?");
    println!("evm: t={uptime} {label}");
}

/// The value of the unlabelled sample `name` on the agent's `GET /metrics`.
pub fn metric(name: &str) -> anyhow::Result<f64> {
    let mut stream = std::net::TcpStream::connect(METRICS)
        .with_context(|| format!("connecting to the metrics listener {METRICS}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: eci\r\nConnection: close\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET /metrics: {}", head.lines().next().unwrap_or_default());
    }
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .with_context(|| format!("no {name} sample in GET /metrics"))?
        .trim()
        .parse()
        .with_context(|| format!("{name}: not a number"))
}

/// Polls `ready` every 100 ms until it holds or `limit` passes.
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what}: not ready after {} s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn log_file(name: &str) -> anyhow::Result<fs::File> {
    fs::create_dir_all(LOG_DIR)?;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(name))
        .with_context(|| format!("opening {}", log_path(name).display()))
}

/// Spawns a daemon with stdout and stderr appended to `LOG_DIR/<log>`.
pub fn spawn_logged(cmd: &mut Command, log: &str) -> anyhow::Result<Child> {
    let out = log_file(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))
}

/// `eci-agent run` in front of the engine, as the eci VM runs it. Ready when it has printed its
/// `export DOCKER_HOST=` line (after the kernel side is loaded and the socket bound).
pub fn start_agent(settings: &Path) -> anyhow::Result<Child> {
    let log = "agent.log";
    let before = fs::read_to_string(log_path(log)).unwrap_or_default().len();
    let mut child = spawn_logged(
        Command::new(share("bin/eci-agent"))
            .arg("run")
            .arg("--settings")
            .arg(settings)
            .args(["--listen", PUBLIC_SOCK, "--engine", ENGINE_SOCK])
            .args(["--trust-cgroup", HOST_CGROUP])
            .args(["--insecure-registry", REGISTRY])
            .arg("--audit-log")
            .arg(log_path("audit.log"))
            .args(["--metrics", METRICS])
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1"),
        log,
    )?;
    let ready = wait_for("eci-agent", Duration::from_secs(60), || {
        let text = fs::read_to_string(log_path(log)).unwrap_or_default();
        text.get(before..)
            .is_some_and(|new| new.contains("export DOCKER_HOST="))
            || matches!(child.try_wait(), Ok(Some(_)))
    });
    if let Ok(Some(status)) = child.try_wait() {
        bail!(
            "eci-agent exited at start ({status}); see {}",
            log_path(log).display()
        );
    }
    ready?;
    Ok(child)
}

//! The suite's world: the test images (made here without network and pushed to the loopback
//! registry, so their digests are real), the settings file, the agent process, and helpers to run
//! the real docker CLI and to read what a container's own probe loop sees.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::{Child, Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    guest::{self, CGROUP_ROOT, HOST_CGROUP, REGISTRY},
    sys,
};

pub const WORK: &str = "/tmp/e2e";
/// The settings file the agent runs with (the refusal texts name it).
pub const SETTINGS: &str = "/run/eci/settings.json";

/// On the imageList: busybox, the docker CLI (Debian's, with the two libraries it links) and
/// our static probe.
pub fn cli_image() -> String {
    format!("{REGISTRY}/eci/cli:1")
}
/// Not on the list: busybox and the probe, with a marker that makes its layer differ.
pub fn other_image() -> String {
    format!("{REGISTRY}/eci/other:1")
}
/// Built FROM the cli image (one more layer), local only.
pub fn derived_image() -> String {
    format!("{REGISTRY}/eci/derived:1")
}

/// Normalised name (no tag), as the refusal text names it.
pub fn name_of(image: &str) -> &str {
    image.rsplit_once(':').map_or(image, |(name, _)| name)
}

pub fn socket_mount_denied(image: &str) -> String {
    format!(
        "enhanced container isolation: docker socket mount denied for container with image \
         \"{}\"; image is not in the allowed list; if you wish to allow it, configure the docker \
         socket image list in {SETTINGS}",
        name_of(image)
    )
}

pub struct Suite {
    pub agent: Option<Child>,
    pub cli_id: String,
    /// Containers that keep probing the socket (see [`Holder`]).
    pub holders: Vec<Holder>,
}

impl Suite {
    pub fn set_up() -> anyhow::Result<Self> {
        sys::join_cgroup(
            &Path::new(CGROUP_ROOT).join(HOST_CGROUP).join("e2e"),
            std::process::id(),
        )
        .context("joining the host cgroup")?;
        fs::create_dir_all(WORK)?;
        // The agent first: the kernel side was pinned at boot, so the engine is the agent's alone
        // and the images are made through the sidecar, as the host's admin would.
        write_settings(&[&cli_image()], false)?;
        let agent = guest::start_agent(Path::new(SETTINGS))?;
        guest::mark("agent ready");
        make_images()?;
        guest::mark("images ready");
        let mut suite = Self {
            agent: Some(agent),
            cli_id: String::new(),
            holders: Vec::new(),
        };
        // The cli image is in the registry now: its digest resolves.
        suite.reload(&[&cli_image()], false)?;
        let cli_id = docker_ok(&["image", "inspect", "--format", "{{.Id}}", &cli_image()])?;
        suite.cli_id = cli_id.trim().to_owned();
        Ok(suite)
    }

    /// Writes new settings and sends SIGHUP; returns once the agent has logged the reload and,
    /// after it, a refresh of the allowed digests (an entry not resolved yet allows nothing).
    pub fn reload(&self, images: &[&str], allow_derived: bool) -> anyhow::Result<()> {
        let before = AgentLog::now();
        write_settings(images, allow_derived)?;
        let agent = self.agent.as_ref().context("the agent is not running")?;
        sys::kill(agent.id(), libc::SIGHUP)?;
        before.wait_for(&["settings reloaded", "allowed digests refreshed"])
    }

    pub fn kill_agent(&mut self) -> anyhow::Result<()> {
        let mut agent = self.agent.take().context("the agent is not running")?;
        sys::kill(agent.id(), libc::SIGKILL)?;
        agent.wait()?;
        Ok(())
    }

    pub fn start_agent(&mut self) -> anyhow::Result<()> {
        if self.agent.is_some() {
            bail!("the agent is already running");
        }
        let before = AgentLog::now();
        self.agent = Some(guest::start_agent(Path::new(SETTINGS))?);
        before.wait_for(&["allowed digests refreshed"])
    }

    pub fn tear_down(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            let _ = sys::kill(agent.id(), libc::SIGTERM);
            let _ = agent.wait();
        }
    }
}

/// A point in the agent's log: what it logs after it can be waited for.
struct AgentLog {
    offset: usize,
}

impl AgentLog {
    fn now() -> Self {
        Self {
            offset: Self::text().len(),
        }
    }

    fn text() -> String {
        fs::read_to_string(guest::log_path("agent.log")).unwrap_or_default()
    }

    /// Waits (up to 30 s) until `messages` appear, in this order, after this point.
    fn wait_for(&self, messages: &[&str]) -> anyhow::Result<()> {
        guest::wait_for(
            &format!("the agent to log {messages:?}"),
            Duration::from_secs(30),
            || {
                let text = Self::text();
                let mut rest = text.get(self.offset..).unwrap_or_default();
                messages.iter().all(|m| match rest.find(m) {
                    Some(at) => {
                        rest = &rest[at + m.len()..];
                        true
                    }
                    None => false,
                })
            },
        )
    }
}

/// The settings file: these images on the list, `commandList` denying push and build.
pub fn write_settings(images: &[&str], allow_derived: bool) -> anyhow::Result<()> {
    let settings = serde_json::to_vec_pretty(&settings_json(images, allow_derived))?;
    guest::write_whole(Path::new(SETTINGS), &settings)
}

/// Settings listing `images`, with `commandList` denying push and build (the systemd-host tier's
/// too).
pub fn settings_json(images: &[&str], allow_derived: bool) -> serde_json::Value {
    serde_json::json!({
        "configurationFileVersion": 2,
        "enhancedContainerIsolation": {
            "locked": true,
            "value": true,
            "dockerSocketMount": {
                "imageList": { "images": images, "allowDerivedImages": allow_derived },
                "commandList": { "type": "deny", "commands": ["push", "build"] }
            }
        }
    })
}

/// `docker …` through the sidecar (the suite is in the trusted host cgroup), bounded in time.
pub fn docker(args: &[&str]) -> anyhow::Result<Output> {
    Command::new("timeout")
        .args(["-k", "5", "180", "docker"])
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .with_context(|| format!("running docker {}", args.join(" ")))
}

/// `docker …` that must succeed; its stdout.
pub fn docker_ok(args: &[&str]) -> anyhow::Result<String> {
    let out = docker(args)?;
    if !out.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker …` that must fail with `message` in its error output.
pub fn docker_refused(args: &[&str], message: &str) -> anyhow::Result<()> {
    let out = docker(args)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        bail!("docker {} succeeded; expected a refusal", args.join(" "));
    }
    if !stderr.contains(message) {
        bail!(
            "docker {} failed, but not with the expected message {message:?}: {}",
            args.join(" "),
            stderr.trim()
        );
    }
    Ok(())
}

/// A root filesystem: busybox with its applets, the probe, and `extra` files (source → path).
pub fn rootfs(dir: &Path, extra: &[(&Path, &str)]) -> anyhow::Result<()> {
    let _ = fs::remove_dir_all(dir);
    for sub in [
        "bin", "eci", "etc", "tmp", "proc", "sys", "dev", "run", "var",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    symlink("../run", dir.join("var/run"))?;
    fs::copy("/bin/busybox", dir.join("bin/busybox")).context("copying busybox")?;
    let applets = Command::new("/bin/busybox").arg("--list").output()?;
    for applet in String::from_utf8_lossy(&applets.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", dir.join("bin").join(applet));
        }
    }
    fs::copy(guest::share("bin/evm"), dir.join("eci/evm")).context("copying the probe")?;
    for (from, to) in extra {
        let to = dir.join(to.trim_start_matches('/'));
        fs::create_dir_all(to.parent().context("path")?)?;
        fs::copy(from, &to).with_context(|| format!("copying {}", from.display()))?;
    }
    Ok(())
}

pub fn tar(dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.with_extension("tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(dir)
        .arg("-cf")
        .arg(&out)
        .arg(".")
        .status()?;
    if !status.success() {
        bail!("tar of {} failed", dir.display());
    }
    Ok(out)
}

fn make_images() -> anyhow::Result<()> {
    let work = Path::new(WORK);
    let marker = work.join("marker");
    fs::write(&marker, "not the cli image\n")?;
    let cli = work.join("cli");
    rootfs(
        &cli,
        &[
            (Path::new("/usr/bin/docker"), "/usr/bin/docker"),
            (
                Path::new("/lib/x86_64-linux-gnu/libc.so.6"),
                "/lib/x86_64-linux-gnu/libc.so.6",
            ),
            (
                Path::new("/lib64/ld-linux-x86-64.so.2"),
                "/lib64/ld-linux-x86-64.so.2",
            ),
        ],
    )?;
    let other = work.join("other");
    rootfs(&other, &[(&marker, "/eci/other")])?;
    docker_ok(&["import", &tar(&cli)?.to_string_lossy(), &cli_image()])?;
    guest::mark("imported the cli image");
    docker_ok(&["import", &tar(&other)?.to_string_lossy(), &other_image()])?;
    guest::mark("imported the other image");
    docker_ok(&["push", &cli_image()])?;
    guest::mark("pushed the cli image");
    docker_ok(&["push", &other_image()])?;
    guest::mark("pushed the other image");
    // Derived: one COPY layer on top of the cli image (no RUN: no container needed), not pushed.
    let ctx = work.join("derived");
    fs::create_dir_all(&ctx)?;
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nCOPY marker /eci/derived\n", cli_image()),
    )?;
    fs::copy(&marker, ctx.join("marker"))?;
    docker_ok(&[
        "build",
        "-q",
        "-t",
        &derived_image(),
        &ctx.to_string_lossy(),
    ])?;
    Ok(())
}

/// A long-running container that keeps probing `target` (a socket path inside it) and writes each
/// outcome to a host file: what its connects get is read without going through the engine, so it
/// stays readable while the agent is down.
pub struct Holder {
    pub name: String,
    out: PathBuf,
}

impl Holder {
    /// `docker run -d` with the socket-reaching `mount` flags; Err when the run is refused.
    pub fn start(name: &str, image: &str, mount: &[&str], target: &str) -> anyhow::Result<Self> {
        let out = Path::new(WORK).join("holders").join(name);
        fs::create_dir_all(&out)?;
        let script = format!(
            "while :; do /eci/evm probe unix {target} > /out/next; mv /out/next /out/now; \
             sleep 0.2; done"
        );
        let volume = format!("{}:/out", out.display());
        let mut args = vec!["run", "-d", "--name", name, "-v", &volume];
        args.extend_from_slice(mount);
        args.extend_from_slice(&[image, "sh", "-c", &script]);
        docker_ok(&args)?;
        Ok(Self {
            name: name.to_owned(),
            out,
        })
    }

    /// Waits (up to 20 s) until a fresh probe outcome equals `want`; Err names the last one seen.
    pub fn wait_for(&self, want: &str) -> anyhow::Result<()> {
        let now = self.out.join("now");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::from("(no outcome yet)");
        // Only outcomes written after this call count.
        let _ = fs::remove_file(&now);
        while Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(&now) {
                last = text.trim().to_owned();
                if last == want {
                    return Ok(());
                }
                let _ = fs::remove_file(&now);
            }
            thread::sleep(Duration::from_millis(100));
        }
        bail!("{}: its connects get {last}, expected {want}", self.name)
    }
}

/// `evm probe` run here, in cgroup `rel` (None: the suite's own, trusted cgroup).
pub fn probe_here(cgroup: Option<&str>, args: &[&str]) -> anyhow::Result<String> {
    probe_with_pid(cgroup, args).map(|(_, word)| word)
}

/// As [`probe_here`], with the probe's pid (what the kernel reports a denial under).
pub fn probe_with_pid(cgroup: Option<&str>, args: &[&str]) -> anyhow::Result<(u32, String)> {
    let mut cmd = Command::new(guest::share("bin/evm"));
    cmd.arg("probe");
    if let Some(rel) = cgroup {
        cmd.args(["in-cgroup", rel]);
    }
    let child = cmd
        .args(args)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    Ok((pid, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

/// A point in the agent's audit log (`--audit-log`): the kernel's denials written after it.
pub struct Audit {
    offset: usize,
}

impl Audit {
    pub fn now() -> Self {
        // After the last whole line: a line being written now belongs to what comes after.
        let text = Self::text();
        Self {
            offset: text.rfind('\n').map_or(0, |end| end + 1),
        }
    }

    fn text() -> String {
        fs::read_to_string(guest::log_path("audit.log")).unwrap_or_default()
    }

    /// The kernel denials recorded after this point (lines that are not JSON are an error: the
    /// log is for machines).
    pub fn kernel_denials(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = Self::text();
        let mut found = Vec::new();
        // Only whole lines: the agent may be writing one now.
        let new = text.get(self.offset..).unwrap_or_default();
        let whole = new.rfind('\n').map_or("", |end| &new[..end]);
        for line in whole.lines() {
            let entry: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("an audit line is not JSON: {line}"))?;
            if entry["source"] == "kernel" {
                found.push(entry);
            }
        }
        Ok(found)
    }

    /// Waits (up to 20 s) for a kernel denial after this point that `matches`; Err says how many
    /// other kernel denials came meanwhile, and the last one.
    pub fn wait_for(
        &self,
        what: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let denials = self.kernel_denials()?;
            if let Some(hit) = denials.iter().find(|d| matches(d)) {
                return Ok(hit.clone());
            }
            if Instant::now() > deadline {
                bail!(
                    "no kernel denial of {what} in the audit log after 20 s ({} others, last: {})",
                    denials.len(),
                    denials.last().map_or("none".to_owned(), |d| d.to_string())
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }
}

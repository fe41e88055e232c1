//! The real `eci-agent run` as a process, in front of a test's dockerd: settings in a file the
//! test can rewrite (the agent reloads on change), its own socket, log and pin directory. On
//! this machine's kernel BPF LSM cannot load, so it runs with `--allow-no-lsm`: these tests
//! cover the sidecar and the image policy; the kernel side is covered in the VM suites.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::dockerd::{Dockerd, docker_at, ping};

pub struct Agent {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
    settings: PathBuf,
    log: PathBuf,
}

/// The cgroup2 mount (hybrid hosts have it under `unified`).
pub fn cgroup2_root() -> &'static str {
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    }
}

impl Agent {
    /// Starts the agent binary `bin` (an integration test passes
    /// `env!("CARGO_BIN_EXE_agent-under-test")`) with `settings` (admin-settings.json text) and
    /// `extra` flags, and waits until it answers `/_ping`. It logs at debug level.
    pub fn start(
        bin: &str,
        engine: &Dockerd,
        name: &str,
        settings: &str,
        extra: &[&str],
    ) -> Result<Self> {
        Self::start_logging(bin, engine, name, settings, extra, "info,eci_agent=debug")
    }

    /// [`Agent::start`] with the log filter `rust_log` (the bench runs at the production
    /// default, `info`).
    pub fn start_logging(
        bin: &str,
        engine: &Dockerd,
        name: &str,
        settings: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> Result<Self> {
        let dir = engine.scratch(&format!("agent-{name}"));
        let socket = dir.join("docker.sock");
        let settings_path = dir.join("admin-settings.json");
        std::fs::write(&settings_path, settings)?;
        let log = dir.join("agent.log");
        let child = Command::new(bin)
            .arg("run")
            .arg("--settings")
            .arg(&settings_path)
            .arg("--listen")
            .arg(&socket)
            .arg("--engine")
            .arg(engine.socket())
            .arg("--pin-dir")
            .arg(dir.join("pins"))
            .args([
                "--allow-no-lsm",
                "--trust-cgroup",
                "/",
                "--cgroup-root",
                cgroup2_root(),
            ])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the agent")?;
        let mut agent = Self {
            child,
            dir,
            socket,
            settings: settings_path,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ping(&agent.socket) {
            if Instant::now() > deadline || agent.child.try_wait()?.is_some() {
                bail!("the agent did not come up:\n{}", agent.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(agent)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn settings_path(&self) -> &Path {
        &self.settings
    }

    /// The docker CLI talking to the agent.
    pub fn docker(&self) -> Command {
        docker_at(&self.socket)
    }

    /// `-v <the agent's socket>:/var/run/docker.sock`: what makes a container a socket holder.
    pub fn socket_mount(&self) -> Vec<String> {
        vec![
            "-v".into(),
            format!("{}:/var/run/docker.sock", self.socket.display()),
        ]
    }

    /// `docker run --rm --network none <mount args> IMAGE CMD…` through the agent.
    pub fn run(&self, mount: &[String], image: &str, cmd: &[&str]) -> std::process::Output {
        self.docker()
            .args(["run", "--rm", "--network", "none"])
            .args(mount)
            .arg(image)
            .args(cmd)
            .output()
            .expect("docker run")
    }

    /// `docker run -d --network none --name NAME <socket mount> IMAGE sleep 300` through the
    /// agent: a socket holder that stays (removed first if an earlier run left it).
    pub fn run_holder(
        &self,
        engine: &crate::dockerd::Dockerd,
        name: &str,
        image: &str,
    ) -> std::process::Output {
        let _ = engine.docker().args(["rm", "-f", name]).output();
        self.docker()
            .args(["run", "-d", "--network", "none", "--name", name])
            .args(self.socket_mount())
            .args([image, "sleep", "300"])
            .output()
            .expect("docker run -d")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log has `count` lines containing `needle`.
    pub fn wait_log(&self, needle: &str, count: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log_text().matches(needle).count() >= count {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no {count}× {needle:?} in the agent log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Replaces the settings file the way editors and config management do (write + rename).
    pub fn write_settings(&self, settings: &str) -> Result<()> {
        let tmp = self.dir.join(".admin-settings.json.tmp");
        std::fs::write(&tmp, settings)?;
        std::fs::rename(&tmp, &self.settings)?;
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child, not yet reaped, so the pid is still ours.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

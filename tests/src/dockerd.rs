//! A private dockerd for a test binary: its own socket, data root, exec root and containerd,
//! started once on first use and stopped when the test binary exits. It never touches
//! /var/run/docker.sock or any engine it did not start.
//!
//! Containers must run with `--network none` (the daemon has no bridge). Test images come from
//! [`Dockerd::cli_image`]: a rootfs of Debian's static busybox and the static docker CLI, made
//! with `docker import` since nothing can be pulled.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// The static docker CLI (it goes into test images too, so it must not need a libc).
pub const DOCKER_CLI: &str = "/usr/local/bin/docker";
const BUSYBOX: &str = "/usr/bin/busybox";
/// The image [`Dockerd::cli_image`] builds.
pub const CLI_IMAGE: &str = "eci-test/cli:1";

pub struct Dockerd {
    root: PathBuf,
    socket: PathBuf,
    pid: i32,
    stopped: Mutex<bool>,
    cli_image: OnceLock<()>,
}

static SHARED: OnceLock<Dockerd> = OnceLock::new();

/// The test binary's dockerd, started on first use and stopped at exit.
pub fn shared() -> &'static Dockerd {
    SHARED.get_or_init(|| {
        let dockerd = Dockerd::start().expect("starting the private dockerd");
        // SAFETY: `stop_shared` is an `extern "C" fn()` with no arguments that only touches the
        // already-initialised static and never unwinds across the FFI boundary (it catches).
        let rc = unsafe { libc::atexit(stop_shared) };
        assert_eq!(rc, 0, "atexit");
        dockerd
    })
}

extern "C" fn stop_shared() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(dockerd) = SHARED.get() {
            dockerd.stop();
        }
    });
}

impl Dockerd {
    /// Starts a dockerd on private paths under a fresh directory in /tmp and waits for `/_ping`.
    pub fn start() -> anyhow::Result<Self> {
        static COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Short: unix socket paths (containerd's among them) must stay under 108 bytes.
        let root = PathBuf::from(format!("/tmp/eci-d{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        let socket = root.join("engine.sock");
        let log = std::fs::File::create(root.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .arg("--data-root")
            .arg(root.join("data"))
            .arg("--exec-root")
            .arg(root.join("exec"))
            .arg("--pidfile")
            .arg(root.join("dockerd.pid"))
            .args([
                "--bridge",
                "none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver",
                "overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("spawning dockerd")?;
        let pid = i32::try_from(child.id()).context("pid")?;
        // The child is reaped in stop(); dropping the handle neither kills nor waits.
        drop(child);
        let dockerd = Self {
            root,
            socket,
            pid,
            stopped: Mutex::new(false),
            cli_image: OnceLock::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if ping(&dockerd.socket) {
                return Ok(dockerd);
            }
            if !dockerd.alive() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(dockerd.root.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                bail!(
                    "dockerd did not come up; log tail (newest first):\n{}",
                    tail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A directory that lives as long as this dockerd, for test scratch files.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let dir = self.root.join("scratch").join(name);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// The static docker CLI talking to this engine directly.
    pub fn docker(&self) -> Command {
        docker_at(&self.socket)
    }

    /// Imports [`CLI_IMAGE`] once: busybox (with its applets) and the static docker CLI.
    pub fn cli_image(&self) -> &'static str {
        self.cli_image.get_or_init(|| {
            let rootfs = self.root.join("rootfs");
            let bin = rootfs.join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::fs::create_dir_all(rootfs.join("usr/local/bin")).unwrap();
            std::fs::create_dir_all(rootfs.join("tmp")).unwrap();
            std::fs::create_dir_all(rootfs.join("etc")).unwrap();
            std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
            for applet in [
                "sh", "cat", "echo", "ls", "sleep", "true", "wc", "head", "seq", "printf", "test",
            ] {
                std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
            }
            std::fs::copy(DOCKER_CLI, rootfs.join("usr/local/bin/docker")).unwrap();
            let mut tar = Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .args(["-c", "."])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let out = self
                .docker()
                .args([
                    "import",
                    "-c",
                    "ENV PATH=/usr/local/bin:/bin",
                    "-",
                    CLI_IMAGE,
                ])
                .stdin(tar.stdout.take().unwrap())
                .output()
                .unwrap();
            assert!(tar.wait().unwrap().success());
            assert!(
                out.status.success(),
                "docker import: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        });
        CLI_IMAGE
    }

    fn alive(&self) -> bool {
        let mut status = 0;
        // SAFETY: waitpid on our own child with WNOHANG only reads `status`, a valid local.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        rc == 0
    }

    /// Stops containers, then the daemon (SIGTERM, SIGKILL after 30 s), then removes its files.
    pub fn stop(&self) {
        let mut stopped = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        if *stopped {
            return;
        }
        *stopped = true;
        // Busybox as PID 1 ignores SIGTERM: kill containers first so shutdown does not wait 10 s each.
        if let Ok(out) = self.docker().args(["ps", "-aq"]).output() {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect();
            if !ids.is_empty() {
                let _ = self
                    .docker()
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // SAFETY: plain kill(2) of the dockerd we spawned; it is not reaped yet, so the pid is ours.
        unsafe { libc::kill(self.pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.alive() {
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
                let mut status = 0;
                // SAFETY: blocking waitpid on our own child; `status` is a valid local.
                unsafe { libc::waitpid(self.pid, &mut status, 0) };
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // The engine leaves the handle of the host's network namespace (`exec/netns/default`,
        // made for `--network host` containers) mounted: unmount what is under our root.
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut leftovers: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|m| Path::new(m).starts_with(&self.root))
            .collect();
        leftovers.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in leftovers {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        if let Err(err) = std::fs::remove_dir_all(&self.root) {
            eprintln!(
                "dockerd fixture: could not remove {}: {err}",
                self.root.display()
            );
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The static docker CLI talking to `socket`, with a private config dir (no credentials).
pub fn docker_at(socket: &Path) -> Command {
    let mut cmd = Command::new(DOCKER_CLI);
    cmd.env("DOCKER_HOST", format!("unix://{}", socket.display()))
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("eci-test-docker-config"),
        )
        .env("DOCKER_BUILDKIT", "0")
        .env_remove("DOCKER_CONTEXT")
        .env_remove("DOCKER_API_VERSION");
    cmd
}

/// `GET /_ping` answered 200.
pub fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

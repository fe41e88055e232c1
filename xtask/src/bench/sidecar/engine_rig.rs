//! A private dockerd with the proxies of issue 13 in front of it, for the sections whose
//! upstream must be a real engine (`callers`, `streams`): its own data root under the scratch
//! directory (never /var/run/docker.sock), HAProxy with keep-alive (Tecnativa's rules, the
//! best-configured peer), and `eci-agent run` under a deny-list and under an allow-list
//! commandList (all images listed, `--allow-no-lsm`, the host trusted). A container of that
//! engine (the caller) holds the sockets' directory and the static `loadgen`, for callers that
//! must be containers.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::bail;

use super::{
    daemon,
    templates::{self, HaproxyMode},
};
use crate::{exec, process::Guarded, setup};

/// Where the caller container sees the sockets.
const IN_CONTAINER: &str = "/s";
const CALLER: &str = "eci-bench-caller";
/// The caller's image: an empty root with the static `loadgen` at `/loadgen`.
pub(super) const IMAGE: &str = "eci-bench/caller:1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Way {
    Direct,
    HaproxyKeepAlive,
    EciDeny,
    EciAllow,
}

pub(super) const WAYS: [Way; 4] = [
    Way::Direct,
    Way::HaproxyKeepAlive,
    Way::EciDeny,
    Way::EciAllow,
];

impl Way {
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::HaproxyKeepAlive => "haproxy_ka",
            Self::EciDeny => "eci_deny",
            Self::EciAllow => "eci_allow",
        }
    }

    /// The socket's file name in the shared directory.
    fn socket(self) -> &'static str {
        match self {
            Self::Direct => "engine.sock",
            Self::HaproxyKeepAlive => "haproxy-ka.sock",
            Self::EciDeny => "eci-deny.sock",
            Self::EciAllow => "eci-allow.sock",
        }
    }
}

/// The engine, the proxies and the caller container of one run; stopped when dropped.
pub(super) struct Rig {
    dir: PathBuf,
    shared: PathBuf,
    dockerd: Option<Guarded>,
    haproxy: Option<Guarded>,
    agents: Vec<(Way, Guarded)>,
}

impl Rig {
    pub(super) fn start(dir: &Path, agent: &Path, loadgen: &Path) -> anyhow::Result<Self> {
        let shared = dir.join("sock");
        fs::create_dir_all(&shared)?;
        let engine = shared.join(Way::Direct.socket());
        let mut rig = Self {
            dir: dir.to_owned(),
            shared: shared.clone(),
            dockerd: None,
            haproxy: None,
            agents: Vec::new(),
        };
        rig.dockerd = Some(daemon(
            "dockerd",
            Command::new("dockerd")
                .arg("--host")
                .arg(format!("unix://{}", engine.display()))
                .arg("--data-root")
                .arg(dir.join("data"))
                .arg("--exec-root")
                .arg(dir.join("exec"))
                .arg("--pidfile")
                .arg(dir.join("dockerd.pid"))
                .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"]),
            &dir.join("dockerd.log"),
            &engine,
        )?);
        wait_engine(&rig)?;
        let rootfs = dir.join("rootfs");
        fs::create_dir_all(rootfs.join("tmp"))?;
        fs::copy(loadgen, rootfs.join("loadgen"))?;
        let tar = dir.join("caller.tar");
        crate::image::tar_rootfs(&rootfs, &tar)?;
        exec::run(rig.docker().arg("import").arg(&tar).arg(IMAGE))?;
        // A long-lived process to exec into: loadgen's sink on a socket nobody uses.
        exec::run(
            rig.docker()
                .args(["run", "-d", "--name", CALLER, "--network", "none", "-v"])
                .arg(format!("{}:{IN_CONTAINER}", shared.display()))
                .args([IMAGE, "/loadgen", "sink", "/tmp/idle.sock"]),
        )?;
        let listen = shared.join(Way::HaproxyKeepAlive.socket());
        let cfg = dir.join("haproxy-ka.cfg");
        fs::write(
            &cfg,
            templates::haproxy_cfg(&listen, &engine, HaproxyMode::KeepAlive),
        )?;
        rig.haproxy = Some(daemon(
            "haproxy",
            Command::new("haproxy").arg("-db").arg("-f").arg(&cfg),
            &dir.join("haproxy-ka.log"),
            &listen,
        )?);
        for (way, list, commands) in [
            (Way::EciDeny, "deny", r#"["push","build"]"#),
            (
                Way::EciAllow,
                "allow",
                r#"["ps","version","info","inspect"]"#,
            ),
        ] {
            let settings = dir.join(format!("settings-{list}.json"));
            fs::write(
                &settings,
                format!(
                    r#"{{"configurationFileVersion":2,"enhancedContainerIsolation":{{"locked":true,"value":true,"dockerSocketMount":{{"imageList":{{"images":["*"]}},"commandList":{{"type":"{list}","commands":{commands}}}}}}}}}"#
                ),
            )?;
            let listen = shared.join(way.socket());
            let guard = daemon(
                "eci-agent",
                Command::new(agent)
                    .arg("run")
                    .arg("--settings")
                    .arg(&settings)
                    .arg("--listen")
                    .arg(&listen)
                    .arg("--engine")
                    .arg(&engine)
                    .arg("--pin-dir")
                    .arg(dir.join(format!("pins-{list}")))
                    .args([
                        "--cgroup-root",
                        setup::cgroup2_root().unwrap_or("/sys/fs/cgroup"),
                    ])
                    .arg("--allow-no-lsm")
                    .args(["--trust-cgroup", "/"]),
                &dir.join(format!("eci-agent-{list}.log")),
                &listen,
            )?;
            rig.agents.push((way, guard));
        }
        Ok(rig)
    }

    /// The docker CLI, speaking to the private engine directly.
    pub(super) fn docker(&self) -> Command {
        self.docker_via(Way::Direct)
    }

    /// The docker CLI, speaking to the engine the `way` way.
    pub(super) fn docker_via(&self, way: Way) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env(
            "DOCKER_HOST",
            format!("unix://{}", self.socket(way).display()),
        )
        .env("DOCKER_CONFIG", self.dir.join("docker-config"));
        cmd
    }

    /// `loadgen http` exec'd in the caller container, against `way`.
    pub(super) fn loadgen(
        &self,
        way: Way,
        path: &str,
        concurrency: u32,
        seconds: f64,
        warmup: f64,
    ) -> Command {
        let mut cmd = self.docker();
        cmd.args(["exec", CALLER, "/loadgen", "http"])
            .arg(format!("{IN_CONTAINER}/{}", way.socket()))
            .arg(path)
            .arg(concurrency.to_string())
            .arg(seconds.to_string())
            .arg(warmup.to_string());
        cmd
    }

    /// Where `way` listens, seen from the host.
    pub(super) fn socket(&self, way: Way) -> PathBuf {
        self.shared.join(way.socket())
    }

    pub(super) fn engine_pid(&self) -> u32 {
        self.dockerd.as_ref().map_or(0, Guarded::pid)
    }

    /// The proxy process of `way` (none for the direct way).
    pub(super) fn proxy_pid(&self, way: Way) -> Option<u32> {
        match way {
            Way::Direct => None,
            Way::HaproxyKeepAlive => self.haproxy.as_ref().map(Guarded::pid),
            Way::EciDeny | Way::EciAllow => self
                .agents
                .iter()
                .find(|(w, _)| *w == way)
                .map(|(_, g)| g.pid()),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.agents.clear();
        self.haproxy = None;
        if self.dockerd.is_some() {
            let _ = self.docker().args(["rm", "-f", CALLER]).output();
        }
        self.dockerd = None;
        // What dockerd mounted under the scratch directory (overlays, its exec root), deepest
        // first, so that the scratch directory can go.
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        ours.sort_unstable_by(|a, b| b.cmp(a));
        for m in ours {
            let _ = Command::new("umount").arg(m).status();
        }
    }
}

fn wait_engine(rig: &Rig) -> anyhow::Result<()> {
    for _ in 0..120 {
        if rig
            .docker()
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(250));
    }
    bail!("the private dockerd did not answer `docker version` in 30 s")
}

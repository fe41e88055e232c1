//! `eci-agent install`: what the DaemonSet's pod runs (deploy/kubernetes/daemonset.yaml). It
//! installs the agent on its node as the systemd units of deploy/systemd, by the steps of
//! `eci-agent.service`'s header, then stays to carry edits of its settings (a ConfigMap) to the
//! node.
//!
//! Why the pod installs the agent instead of being it: the agent's identity is its cgroup. The
//! guard over its pins and the cgroupfs rules accept the agent's own cgroup and trusted host
//! cgroups, nothing else. A pod's cgroup is a container's, made anew at every pod restart or
//! upgrade, and nothing the kernel sees tells it from any other privileged container's; if a pod
//! could take the agent's place after a restart, so could any `--privileged` container. As a host
//! service the agent is pinned before any Docker socket exists at boot, adopted after restarts and
//! journaled, all proven on real systemd (the systemd-host tier), and the pod adds only delivery:
//! the binary, the units, the settings.
//!
//! Host commands run in the node's namespaces (`nsenter` into PID 1's, so the pod needs
//! `hostPID`), files are written through the node's root mounted in the pod. Each file is written
//! only when it differs, by rename, so a rerun (a pod restart) changes nothing, and an upgrade
//! (a new image) restarts the agent once. Settings that do not validate are never installed: the
//! node keeps the ones its agent runs.

use std::{
    fs,
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Where the node's root filesystem is mounted (the pod's hostPath `/`); `/` on the node itself.
    #[arg(long, default_value = "/host")]
    pub host_root: PathBuf,
    /// The admin-settings.json to install (the ConfigMap's file), and to follow while this runs.
    #[arg(long)]
    pub settings: PathBuf,
    /// Install and exit, instead of staying to follow the settings.
    #[arg(long)]
    pub once: bool,
    /// How often the settings are compared with the node's, in seconds.
    #[arg(long, default_value_t = 5)]
    pub interval: u64,
}

/// The units of deploy/systemd, as shipped: the image carries exactly what the header documents.
const UNITS: &[(&str, &str)] = &[
    (
        "etc/systemd/system/eci-agent-pins.service",
        include_str!("../../deploy/systemd/eci-agent-pins.service"),
    ),
    (
        "etc/systemd/system/eci-agent.socket",
        include_str!("../../deploy/systemd/eci-agent.socket"),
    ),
    (
        "etc/systemd/system/eci-agent.service",
        include_str!("../../deploy/systemd/eci-agent.service"),
    ),
];

/// The drop-in that moves the engine's socket to /run/eci/engine.sock.
const DROP_IN: (&str, &str) = (
    "etc/systemd/system/docker.socket.d/eci-private-socket.conf",
    include_str!("../../deploy/systemd/docker.socket.d/eci-private-socket.conf"),
);

const BINARY: &str = "usr/local/bin/eci-agent";
const SETTINGS: &str = "etc/eci/admin-settings.json";

/// What this install changed on the node.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    pub binary: bool,
    pub units: bool,
    pub drop_in: bool,
}

/// What systemd on the node ran before this install.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    pub public_socket: bool,
    pub agent: bool,
}

/// Whether the engine's socket has to move (a first install, or a changed drop-in): the only
/// reason to stop the engine, which restarts every container it runs.
fn moves_engine_socket(changes: Changes, running: Running) -> bool {
    !running.public_socket || changes.drop_in
}

/// The `systemctl` steps of `eci-agent.service`'s header that this node still needs, in order.
/// The engine is stopped only when its socket has to move, so a rerun does not do it again.
pub fn steps(changes: Changes, running: Running) -> Vec<Vec<&'static str>> {
    let mut steps: Vec<Vec<&str>> = Vec::new();
    if changes.units || changes.drop_in {
        steps.push(vec!["daemon-reload"]);
    }
    steps.push(vec!["enable", "--now", "eci-agent-pins.service"]);
    if moves_engine_socket(changes, running) {
        steps.push(vec!["stop", "docker.service", "docker.socket"]);
        steps.push(vec!["enable", "--now", "eci-agent.socket"]);
        steps.push(vec!["start", "docker.socket", "docker.service"]);
    }
    steps.push(vec!["enable", "--now", "eci-agent.service"]);
    // A running agent keeps its old binary and unit until restarted; it adopts its pins and
    // containers on the way back (`run` replaces the programs of an earlier load).
    if running.agent && (changes.binary || changes.units) {
        steps.push(vec!["restart", "eci-agent.service"]);
    }
    steps
}

pub fn command(args: &Args) -> anyhow::Result<()> {
    let node = Node::new(&args.host_root)?;
    let settings = valid_settings(&args.settings)?;
    node.write(SETTINGS, &settings, 0o644)?;
    let binary = fs::read("/proc/self/exe").context("reading this program (/proc/self/exe)")?;
    let mut changes = Changes {
        binary: node.write(BINARY, &binary, 0o755)?,
        ..Changes::default()
    };
    for (path, text) in UNITS {
        changes.units |= node.write(path, text.as_bytes(), 0o644)?;
    }
    changes.drop_in = node.write(DROP_IN.0, DROP_IN.1.as_bytes(), 0o644)?;
    let running = Running {
        public_socket: node.active("eci-agent.socket"),
        agent: node.active("eci-agent.service"),
    };
    for step in steps(changes, running) {
        node.systemctl(&step)?;
    }
    if !node.active("eci-agent.service") {
        bail!(
            "eci-agent.service is not active after the install (see `journalctl -u eci-agent` on the node)"
        );
    }
    tracing::info!(
        binary_changed = changes.binary,
        units_changed = changes.units,
        engine_socket_moved = moves_engine_socket(changes, running),
        "eci-agent installed on the node and serving"
    );
    if args.once {
        return Ok(());
    }
    follow(&node, args)
}

/// Carries each valid edit of the settings to the node (the agent reloads its file on change),
/// and says when the agent stops being active, until the pod is stopped.
fn follow(node: &Node, args: &Args) -> anyhow::Result<()> {
    let mut was_active = true;
    loop {
        thread::sleep(Duration::from_secs(args.interval.max(1)));
        match valid_settings(&args.settings).and_then(|s| node.write(SETTINGS, &s, 0o644)) {
            Ok(true) => tracing::info!("settings installed on the node"),
            Ok(false) => {}
            Err(err) => tracing::error!(
                error = format!("{err:#}"),
                "settings not installed; the node keeps the ones its agent runs"
            ),
        }
        let active = node.active("eci-agent.service");
        if active != was_active {
            if active {
                tracing::info!("eci-agent.service is active again");
            } else {
                tracing::error!("eci-agent.service is not active on the node");
            }
            was_active = active;
        }
    }
}

/// The settings file's bytes, once they validate as the agent would load them (the error names
/// the file and each offending field). Read once: the bytes installed are the bytes validated,
/// whatever the ConfigMap's volume swaps in meanwhile.
fn valid_settings(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    crate::settings::Settings::from_json_str(&text, path)?;
    Ok(text.into_bytes())
}

/// The node, seen from here: its root filesystem and its systemd.
struct Node {
    root: PathBuf,
    /// Whether commands must enter PID 1's namespaces (not when `root` is `/`).
    enter: bool,
}

impl Node {
    fn new(root: &Path) -> anyhow::Result<Self> {
        if !root.join("run/systemd/system").is_dir() {
            bail!(
                "{}: no run/systemd/system there: the node does not run systemd, or --host-root is not its root (the pod mounts the node's / there)",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_owned(),
            enter: root != Path::new("/"),
        })
    }

    /// Writes `bytes` to `rel` on the node unless it holds them already; whether it wrote.
    fn write(&self, rel: &str, bytes: &[u8], mode: u32) -> anyhow::Result<bool> {
        let path = self.root.join(rel);
        if fs::read(&path).is_ok_and(|old| old == bytes) {
            return Ok(false);
        }
        let dir = path.parent().context("a node path has a parent")?;
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let tmp = dir.join(format!(
            ".{}.eci-install",
            path.file_name().unwrap_or_default().to_string_lossy()
        ));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        // The umask may have narrowed `mode`.
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
        // A rename: a running program keeps its old binary, and readers never see half a file.
        fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
        tracing::info!(path = %Path::new("/").join(rel).display(), "installed");
        Ok(true)
    }

    fn host_command(&self, program: &str) -> Command {
        if !self.enter {
            return Command::new(program);
        }
        let mut cmd = Command::new("nsenter");
        cmd.args([
            "--target", "1", "--mount", "--uts", "--ipc", "--net", "--pid", "--", program,
        ]);
        cmd
    }

    fn systemctl(&self, args: &[&str]) -> anyhow::Result<()> {
        tracing::info!(step = %format!("systemctl {}", args.join(" ")), "on the node");
        let out = self
            .host_command("systemctl")
            .args(args)
            .output()
            .with_context(|| format!("running systemctl {} on the node", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "systemctl {} on the node failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn active(&self, unit: &str) -> bool {
        self.host_command("systemctl")
            .args(["is-active", "--quiet", unit])
            .status()
            .is_ok_and(|s| s.success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_first_install_moves_the_engine_socket_once() {
        let first = steps(
            Changes {
                binary: true,
                units: true,
                drop_in: true,
            },
            Running::default(),
        );
        assert_eq!(
            first,
            vec![
                vec!["daemon-reload"],
                vec!["enable", "--now", "eci-agent-pins.service"],
                vec!["stop", "docker.service", "docker.socket"],
                vec!["enable", "--now", "eci-agent.socket"],
                vec!["start", "docker.socket", "docker.service"],
                vec!["enable", "--now", "eci-agent.service"],
            ]
        );
    }

    #[test]
    fn a_rerun_touches_neither_the_engine_nor_the_agent() {
        let rerun = steps(
            Changes::default(),
            Running {
                public_socket: true,
                agent: true,
            },
        );
        assert_eq!(
            rerun,
            vec![
                vec!["enable", "--now", "eci-agent-pins.service"],
                vec!["enable", "--now", "eci-agent.service"],
            ]
        );
    }

    #[test]
    fn an_upgrade_restarts_the_agent_and_not_the_engine() {
        let upgrade = steps(
            Changes {
                binary: true,
                ..Changes::default()
            },
            Running {
                public_socket: true,
                agent: true,
            },
        );
        assert!(!upgrade.iter().any(|s| s.contains(&"docker.service")));
        assert_eq!(
            upgrade.last().unwrap(),
            &vec!["restart", "eci-agent.service"]
        );
    }

    #[test]
    fn the_units_carried_are_the_shipped_ones_with_their_install_section() {
        for (path, text) in UNITS {
            assert!(text.contains("[Install]"), "{path} has no [Install]");
        }
        assert!(DROP_IN.1.contains("/run/eci/engine.sock"));
    }

    #[test]
    fn a_node_without_systemd_is_named() {
        let dir = std::env::temp_dir().join(format!("eci-node-install-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let err = Node::new(&dir).err().unwrap().to_string();
        assert!(err.contains("does not run systemd"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_are_the_bytes_that_validated_or_an_error_naming_the_field() {
        let dir = std::env::temp_dir().join(format!("eci-node-settings-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin-settings.json");
        let valid = br#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {"imageList": {"images": ["docker:cli"]}}}}"#;
        fs::write(&path, valid).unwrap();
        assert_eq!(valid_settings(&path).unwrap(), valid);
        fs::write(
            &path,
            br#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {"imageList": {"images": 5}}}}"#,
        )
        .unwrap();
        let err = format!("{:#}", valid_settings(&path).unwrap_err());
        assert!(err.contains("imageList.images"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn files_are_written_only_when_they_differ() {
        let dir = std::env::temp_dir().join(format!("eci-node-write-{}", std::process::id()));
        fs::create_dir_all(dir.join("run/systemd/system")).unwrap();
        let node = Node::new(&dir).unwrap();
        assert!(node.write("etc/eci/x.json", b"{}", 0o644).unwrap());
        assert!(!node.write("etc/eci/x.json", b"{}", 0o644).unwrap());
        assert!(node.write("etc/eci/x.json", b"{ }", 0o644).unwrap());
        let meta = fs::metadata(dir.join("etc/eci/x.json")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        fs::remove_dir_all(&dir).unwrap();
    }
}

//! Boot 4, `pod`: the DaemonSet's pod on a node that had the agent. The agent is uninstalled by
//! its unit's header, then the pod (`cargo xtask image`'s rootfs, with the command of
//! deploy/kubernetes/daemonset.yaml) runs under the node's containerd, as the kubelet would have
//! it run: privileged, in the host's pid namespace, the node's / at /host and the settings (the
//! ConfigMap) at /etc/eci. Not under this node's Docker Engine: the install stops the engine once
//! to move its socket, which would stop a pod it ran.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use anyhow::{Context as _, ensure};

use super::{
    Run,
    cases::{
        ALLOWED, RUN_HOLDER, SETTINGS, SOCK_HOLDER, dir_of, journal_json, never_served, wait_served,
    },
    host::{self, CONTAINER_DIR, docker, is_active, main_pid, wait_until},
};
use crate::{
    e2e::fixture::settings_json,
    probe_log::{self, uptime},
};

/// containerd's name for the pod's container, and its namespace (the kubelet's is `k8s.io`).
const POD: &str = "eci-agent-pod";
const NAMESPACE: &str = "k8s.io";

fn configmap_dir() -> String {
    format!("{CONTAINER_DIR}/configmap")
}

fn rootfs_dir() -> String {
    format!("{CONTAINER_DIR}/pod-rootfs")
}

fn pod_log() -> String {
    format!("{CONTAINER_DIR}/pod.log")
}

pub fn run(run: &mut Run) {
    let mut from = 0.0;
    run.case(
        "uninstall by eci-agent.service's header: the engine serves /var/run/docker.sock again, no pins",
        |_| {
            wait_until("eci-agent.service active", Duration::from_secs(180), || {
                is_active("eci-agent.service")
            })?;
            host::script("/mnt/eci/uninstall.sh", "uninstall-steps.log")?;
            from = uptime();
            ensure!(!is_active("eci-agent.service"), "eci-agent.service still active");
            ensure!(
                !Path::new("/sys/fs/bpf/eci").exists(),
                "/sys/fs/bpf/eci still exists after `eci-agent unload`"
            );
            let listen = host::show("docker.socket", "Listen");
            ensure!(
                listen.contains("/run/docker.sock") && !listen.contains("/run/eci/"),
                "docker.socket listens on {listen}"
            );
            // Nothing enforces now: the unlisted /run holder is served by plain Docker.
            wait_until(
                "the unlisted /run holder served by plain Docker",
                Duration::from_secs(120),
                || {
                    probe_log::latest(&dir_of(RUN_HOLDER))
                        .is_some_and(|(at, words)| at > from && words.contains("public=served"))
                },
            )?;
            Ok(())
        },
    );
    let mut installed_at = f64::MAX;
    run.case(
        "the DaemonSet's pod, run by containerd as its spec says, installs the agent (READY=1)",
        |run| {
            let id = docker(&["image", "inspect", "--format", "{{.Id}}", ALLOWED])?;
            write_configmap(&settings_listing(&[&format!("eci/allowed@{}", id.trim())]))?;
            unpack_rootfs()?;
            let started = uptime();
            start_pod()?;
            wait_until(
                "eci-agent.service active, from the pod",
                Duration::from_secs(240),
                || is_active("eci-agent.service"),
            )
            .with_context(|| format!("the pod's log: {}", tail(&pod_log())))?;
            wait_until(
                "the pod to say it installed",
                Duration::from_secs(30),
                || installed_lines() >= 1,
            )
            .with_context(|| format!("the pod's log: {}", tail(&pod_log())))?;
            installed_at = uptime();
            run.figure(
                "pod install, to agent ready (s)",
                format!("{:.1}", installed_at - started),
            );
            ensure!(
                pod_running(),
                "the pod exited after installing: {}",
                tail(&pod_log())
            );
            let listen = host::show("docker.socket", "Listen");
            ensure!(
                listen.contains("/run/eci/engine.sock"),
                "docker.socket listens on {listen}"
            );
            ensure!(
                fs::read(SETTINGS)?
                    == fs::read(format!("{}/admin-settings.json", configmap_dir()))?,
                "the node's settings are not the ConfigMap's"
            );
            Ok(())
        },
    );
    run.case(
        "after the pod's install: the allowed holder is served, the unlisted /run holder never",
        |_| {
            wait_served(SOCK_HOLDER, installed_at, Duration::from_secs(90))?;
            never_served(RUN_HOLDER, installed_at)
        },
    );
    run.case(
        "a ConfigMap edit reaches the node, and the agent reloads it",
        |_| {
            let reloads = reload_lines()?;
            let id = docker(&["image", "inspect", "--format", "{{.Id}}", ALLOWED])?;
            let edited = settings_listing(&[&format!("eci/allowed@{}", id.trim()), "docker:cli"]);
            write_configmap(&edited)?;
            wait_until(
                "the node's settings to be the edit",
                Duration::from_secs(30),
                || fs::read(SETTINGS).is_ok_and(|s| s == edited),
            )?;
            wait_until("the agent to reload", Duration::from_secs(30), || {
                reload_lines().is_ok_and(|n| n > reloads)
            })?;
            Ok(())
        },
    );
    run.case(
        "a ConfigMap edit that does not validate stays off the node, and the pod names the field",
        |_| {
            let before = fs::read(SETTINGS)?;
            let bad = br#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "dockerSocketMount": {"imageList": {"images": 5}}}}"#;
            write_configmap(bad)?;
            let named = wait_until("the pod to name the bad field", Duration::from_secs(30), || {
                fs::read_to_string(pod_log()).is_ok_and(|l| l.contains("imageList.images"))
            });
            let after = fs::read(SETTINGS)?;
            write_configmap(&before)?;
            named.with_context(|| format!("the pod's log: {}", tail(&pod_log())))?;
            ensure!(after == before, "the node's settings changed to the invalid edit");
            Ok(())
        },
    );
    run.case(
        "the pod restarted with the same image: neither the engine nor the agent restarts",
        |_| {
            let (engine, agent) = (main_pid("docker.service"), main_pid("eci-agent.service"));
            let installs = installed_lines();
            restart_pod()?;
            wait_until(
                "the restarted pod to say it installed",
                Duration::from_secs(60),
                || installed_lines() > installs,
            )
            .with_context(|| format!("the pod's log: {}", tail(&pod_log())))?;
            ensure!(
                main_pid("docker.service") == engine && main_pid("eci-agent.service") == agent,
                "pids changed: engine {engine} → {}, agent {agent} → {}",
                main_pid("docker.service"),
                main_pid("eci-agent.service")
            );
            Ok(())
        },
    );
    run.case(
        "the pod with a new image (another binary): only the agent restarts, and adopts the holder",
        |run| {
            let (engine, agent) = (main_pid("docker.service"), main_pid("eci-agent.service"));
            let installs = installed_lines();
            // Bytes after an ELF's last section are never loaded: a different binary that runs.
            let binary = format!("{}/usr/local/bin/eci-agent", rootfs_dir());
            let mut bytes = fs::read(&binary)?;
            bytes.extend_from_slice(b"eci-agent: the next version\n");
            // By rename, as an image update replaces files: the running pod still executes it.
            let next = format!("{binary}.next");
            fs::write(&next, bytes)?;
            fs::set_permissions(&next, fs::Permissions::from_mode(0o755))?;
            fs::rename(&next, &binary)?;
            let from = uptime();
            restart_pod()?;
            wait_until(
                "the new pod to say it installed",
                Duration::from_secs(120),
                || installed_lines() > installs,
            )
            .with_context(|| format!("the pod's log: {}", tail(&pod_log())))?;
            let now = main_pid("eci-agent.service");
            ensure!(
                now != agent && now != 0,
                "the agent was not restarted (MainPID {agent})"
            );
            ensure!(
                main_pid("docker.service") == engine,
                "the engine restarted ({engine} → {})",
                main_pid("docker.service")
            );
            let at = wait_served(SOCK_HOLDER, uptime(), Duration::from_secs(60))?;
            run.figure(
                "holder served after the upgrade (s)",
                format!("{:.1}", at - from),
            );
            never_served(RUN_HOLDER, from)
        },
    );
    run.case(
        "journalctl -u eci-agent: the agent's lines, all JSON",
        journal_json,
    );
    let _ = host::run(
        "ctr",
        &["-n", NAMESPACE, "task", "kill", "-s", "SIGKILL", POD],
        30,
    );
}

fn settings_listing(images: &[&str]) -> Vec<u8> {
    serde_json::to_vec_pretty(&settings_json(images, false)).unwrap_or_default()
}

/// As the kubelet updates a ConfigMap volume: the new file appears whole.
fn write_configmap(bytes: &[u8]) -> anyhow::Result<()> {
    let dir = configmap_dir();
    fs::create_dir_all(&dir)?;
    crate::guest::write_whole(&Path::new(&dir).join("admin-settings.json"), bytes)
}

fn unpack_rootfs() -> anyhow::Result<()> {
    let dir = rootfs_dir();
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    host::run_ok(
        "tar",
        &[
            "-xf",
            &crate::guest::share("pod/eci-agent.tar").to_string_lossy(),
            "-C",
            &dir,
        ],
        120,
    )?;
    Ok(())
}

/// `ctr run` with the pod spec's privileges, namespaces and mounts.
fn start_pod() -> anyhow::Result<()> {
    let root_mount = "type=bind,src=/,dst=/host,options=rbind:rw";
    let settings_mount = format!(
        "type=bind,src={},dst=/etc/eci,options=rbind:ro",
        configmap_dir()
    );
    let log = format!("file://{}", pod_log());
    let rootfs = rootfs_dir();
    let command = crate::guest::pod_command()?;
    let mut args = vec![
        "-n",
        NAMESPACE,
        "run",
        "-d",
        "--privileged",
        "--with-ns",
        "pid:/proc/1/ns/pid",
        "--mount",
        root_mount,
        "--mount",
        &settings_mount,
        "--log-uri",
        &log,
        // The image's ENV (`cargo xtask image` imports it with this PATH); a bare rootfs has none.
        "--env",
        "PATH=/usr/local/bin:/usr/bin",
        "--rootfs",
        &rootfs,
        POD,
    ];
    args.extend(command.iter().map(String::as_str));
    host::run_ok("ctr", &args, 60)?;
    Ok(())
}

fn restart_pod() -> anyhow::Result<()> {
    let _ = host::run(
        "ctr",
        &["-n", NAMESPACE, "task", "kill", "-s", "SIGKILL", POD],
        30,
    );
    wait_until("the pod to stop", Duration::from_secs(30), || {
        !pod_running()
    })?;
    host::run_ok("ctr", &["-n", NAMESPACE, "task", "delete", POD], 30)?;
    host::run_ok("ctr", &["-n", NAMESPACE, "container", "delete", POD], 30)?;
    start_pod()
}

fn pod_running() -> bool {
    host::run_ok("ctr", &["-n", NAMESPACE, "task", "ls"], 30).is_ok_and(|t| {
        t.lines()
            .any(|l| l.starts_with(POD) && l.contains("RUNNING"))
    })
}

fn installed_lines() -> usize {
    fs::read_to_string(pod_log())
        .map(|l| l.matches("installed on the node and serving").count())
        .unwrap_or(0)
}

fn reload_lines() -> anyhow::Result<usize> {
    Ok(super::cases::agent_lines()?
        .iter()
        .filter(|l| l.contains("settings reloaded"))
        .count())
}

fn tail(path: &str) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(6)..].join(" | ")
}

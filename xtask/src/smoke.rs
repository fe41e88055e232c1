//! The `cargo xtask run` smoke test (a step of `cargo xtask test`): starts `cargo xtask run` as
//! a user would (host mode, its private dockerd), reads the `export DOCKER_HOST=…` line it
//! prints, runs `docker ps` and a container through it, sees a socket mount refused with ECI's
//! exact message, then sends Ctrl-C (SIGINT to its process group, as a terminal does) and checks
//! that nothing it started is left: processes, pins, cgroups, sockets.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{
    build, exec,
    process::{Guarded, Stop},
    setup,
};

/// The busybox image the smoke test imports; not on the example settings' imageList.
const IMAGE: &str = "eci-smoke/busybox:1";

pub fn run(root: &Path) -> anyhow::Result<()> {
    // Built first so the timed part below is the run itself.
    build::agent(root)?;
    let started = Instant::now();
    let scratch = root.join("target/smoke");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let pins = scratch.join("pins");
    let cgroup_root = PathBuf::from(setup::cgroup2_root().context("no cgroup2 mount")?);
    let agent_cgroup_before = cgroup_root.join("eci-agent").exists();

    let mut xtask = Command::new(std::env::current_exe()?);
    xtask
        .arg("run")
        // Host mode even where the kernel has no BPF LSM (the eci VM is what vm-e2e tests).
        .arg("--host")
        .arg("--")
        .arg("--pin-dir")
        .arg(&pins)
        .current_dir(root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(fs::File::create(scratch.join("run.log"))?)
        // Its own process group, so that Ctrl-C can be sent to it the way a terminal does.
        .process_group(0);
    // Stopped as a terminal's Ctrl-C would, if the test fails before it sends one itself.
    let mut child = Guarded::spawn(
        "cargo xtask run",
        &mut xtask,
        Stop::InterruptGroup(Duration::from_secs(30)),
    )?;
    let pgid = child.pid();
    let lines = forward_lines(child.child_mut().stdout.take().context("stdout")?);

    let outcome = (|| {
        let docker_host = wait_for_docker_host(&lines, Duration::from_secs(120))?;
        let socket = PathBuf::from(docker_host.trim_start_matches("unix://"));
        println!("xtask smoke: agent up on {docker_host}");
        let docker = |args: &[&str]| {
            let mut cmd = Command::new("docker");
            cmd.args(args)
                .env("DOCKER_HOST", &docker_host)
                .env("DOCKER_CONFIG", scratch.join("docker-config"))
                .env_remove("DOCKER_CONTEXT");
            cmd
        };
        exec::output(&mut docker(&["ps"])).context("docker ps through the agent")?;
        import_busybox(&scratch, &mut docker(&["import", "-", IMAGE]))?;
        // A container without the socket runs; its cgroup must be gone afterwards.
        let id = exec::stdout(&mut docker(&["create", "--network", "none", IMAGE, "true"]))?
            .trim()
            .to_owned();
        exec::output(&mut docker(&["start", "-a", &id]))?;
        exec::output(&mut docker(&["rm", &id]))?;
        // A container that mounts the socket is refused with Docker Desktop's text.
        let out = docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("{}:/var/run/docker.sock", socket.display()),
            IMAGE,
            "true",
        ])
        .output()?;
        let expected = format!(
            "docker: Error response from daemon: enhanced container isolation: docker socket mount denied for container \
             with image \"docker.io/eci-smoke/busybox\"; image is not in the allowed list; if you wish to allow it, \
             configure the docker socket image list in {}",
            root.join("examples/admin-settings.json").display()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success() && stderr.contains(&expected),
            "expected the refusal\n  {expected}\ngot:\n{stderr}"
        );
        anyhow::Ok((socket, id))
    })();
    let descendants = descendants(pgid);
    let names: Vec<String> = descendants.iter().map(|(pid, _)| comm(*pid)).collect();
    // Ctrl-C, whatever happened above: the process group gets SIGINT.
    child.interrupt_group();
    let exited = child.wait_timeout(Duration::from_secs(60));
    let (socket, id) = match outcome {
        Ok(v) => v,
        Err(err) => {
            return Err(err.context(format!("see {}", scratch.join("run.log").display())));
        }
    };
    let status = exited.context("cargo xtask run did not stop within 60 s of Ctrl-C")?;
    ensure!(status.success(), "cargo xtask run exited with {status}");

    // Nothing left behind (of what was running: the agent and dockerd at least).
    for needed in ["eci-agent", "dockerd"] {
        ensure!(
            names.iter().any(|n| n == needed),
            "{needed} was not among the processes of cargo xtask run: {names:?}"
        );
    }
    let alive: Vec<String> = descendants
        .iter()
        .filter(|(pid, start)| start_time(*pid).as_ref() == Some(start))
        .map(|(pid, _)| format!("{pid} ({})", comm(*pid)))
        .collect();
    ensure!(alive.is_empty(), "processes left running: {alive:?}");
    ensure!(!pins.exists(), "pins left in {}", pins.display());
    for sock in [socket.clone(), root.join("target/run/engine.sock")] {
        ensure!(!sock.exists(), "socket left: {}", sock.display());
    }
    // dockerd's exec root holds containerd's sockets.
    let exec_root = PathBuf::from(format!("/tmp/eci-run-{pgid}"));
    ensure!(!exec_root.exists(), "left: {}", exec_root.display());
    ensure!(
        agent_cgroup_before || !cgroup_root.join("eci-agent").exists(),
        "the agent's cgroup was left"
    );
    for cgroup in [
        cgroup_root.join("docker").join(&id),
        cgroup_root.join(format!("system.slice/docker-{id}.scope")),
    ] {
        ensure!(!cgroup.exists(), "cgroup left: {}", cgroup.display());
    }
    let _ = fs::remove_dir_all(&scratch);
    println!(
        "xtask smoke: cargo xtask run started, served, refused, stopped clean in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Echoes the child's stdout and hands each line over.
fn forward_lines(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("  | {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_docker_host(
    lines: &mpsc::Receiver<String>,
    timeout: Duration,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(host) = line.strip_prefix("export DOCKER_HOST=") {
                    return Ok(host.trim().to_owned());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("no `export DOCKER_HOST=` line within {timeout:?}")
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("cargo xtask run ended without printing `export DOCKER_HOST=`")
            }
        }
    }
}

/// `docker import` of a rootfs holding Debian's static busybox.
fn import_busybox(scratch: &Path, import: &mut Command) -> anyhow::Result<()> {
    let rootfs = scratch.join("rootfs");
    fs::create_dir_all(rootfs.join("bin"))?;
    fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).context("busybox-static")?;
    for applet in ["sh", "true"] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    let tar = exec::output(Command::new("tar").arg("-C").arg(&rootfs).args(["-c", "."]))?;
    let mut child = import
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("docker import")?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(&tar.stdout)?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "docker import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every process below `root` now, with its start time (so a reused pid is not mistaken for it).
fn descendants(root: u32) -> Vec<(u32, String)> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(ppid) = stat_field(pid, 4).and_then(|p| p.parse::<u32>().ok()) {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found
        .into_iter()
        .filter_map(|pid| start_time(pid).map(|t| (pid, t)))
        .collect()
}

/// A field of /proc/PID/stat (1-based, as in proc(5)), after the parenthesised comm.
fn stat_field(pid: u32, n: usize) -> Option<String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

fn start_time(pid: u32) -> Option<String> {
    // A zombie is gone for our purpose: it holds nothing.
    if stat_field(pid, 3).as_deref() == Some("Z") {
        return None;
    }
    stat_field(pid, 22)
}

fn comm(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

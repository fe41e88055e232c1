//! The public socket's path on a real host: what dockerd leaves there (a directory, when it
//! restores a container that bind-mounts the socket before anything listens), and the socket that
//! systemd binds and hands over (`LISTEN_FDS`), whose inode must outlive every agent process so
//! that the bind mounts containers hold stay valid. The real `eci-agent run` in front of a private
//! dockerd, with `--allow-no-lsm` (this host's kernel refuses BPF LSM; the kernel side of the
//! activated socket is the systemd VM's), logging JSON: every line it writes must be JSON.

use std::{
    os::{
        fd::AsRawFd as _,
        unix::{fs::MetadataExt as _, net::UnixListener, process::CommandExt as _},
    },
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use eci_tests::{
    agent::{Agent, cgroup2_root},
    dockerd::{self, Dockerd, ping},
};

const AGENT_BIN: &str = env!("CARGO_BIN_EXE_agent-under-test");
const SETTINGS: &str = r#"{"configurationFileVersion":2,"enhancedContainerIsolation":{"locked":true,"value":true,"dockerSocketMount":{"imageList":{"images":[]}}}}"#;

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

/// The agent's command line, on `socket`, in `dir`.
fn agent_command(dir: &Path, socket: &Path) -> Command {
    let settings = dir.join("admin-settings.json");
    std::fs::write(&settings, SETTINGS).unwrap();
    let mut cmd = Command::new(AGENT_BIN);
    cmd.arg("--log-format")
        .arg("json")
        .arg("run")
        .arg("--settings")
        .arg(&settings)
        .arg("--listen")
        .arg(socket)
        .arg("--engine")
        .arg(engine().socket())
        .arg("--pin-dir")
        .arg(dir.join("pins"))
        .args(["--allow-no-lsm", "--trust-cgroup", "/"])
        .arg("--cgroup-root")
        .arg(cgroup2_root())
        .env("RUST_LOG", "info")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null());
    cmd
}

/// Every line of stdout and stderr is a JSON object (`--log-format json`).
fn assert_all_json(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n--- all:\n{out}"))
        })
        .collect()
}

fn wait_output(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent did not exit within {limit:?} (a crash loop waits here):\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_empty_directory_at_the_socket_path_is_removed_loudly() {
    // What dockerd leaves when it restores a `--restart=always` container with
    // `-v /var/run/docker.sock:/var/run/docker.sock` before the agent exists.
    let dir = engine().scratch("agent-dir-left");
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    std::fs::create_dir_all(&socket).unwrap();
    let agent = Agent::start(AGENT_BIN, engine(), "dir-left", SETTINGS, &[])
        .expect("the agent serves despite the directory");
    assert_eq!(agent.socket(), socket);
    assert!(ping(&socket));
    let log = agent.log_text();
    assert!(
        log.contains("removed an empty directory at the socket path"),
        "the removal is logged loudly:\n{log}"
    );
}

#[test]
fn anything_else_at_the_socket_path_is_a_clear_error_not_a_crash_loop() {
    let dir = engine().scratch("public-occupied");
    for (what, make) in [
        (
            "a directory that is not empty",
            (|p: &Path| {
                std::fs::create_dir_all(p).unwrap();
                std::fs::write(p.join("data"), "someone's").unwrap();
            }) as fn(&Path),
        ),
        ("a regular file", |p: &Path| std::fs::write(p, "x").unwrap()),
    ] {
        let socket = dir.join("docker.sock");
        let _ = std::fs::remove_dir_all(&socket);
        let _ = std::fs::remove_file(&socket);
        make(&socket);
        let child = agent_command(&dir, &socket)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = wait_output(child, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 78 (EX_CONFIG): the unit's RestartPreventExitStatus= keeps systemd from restarting it.
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        let events = assert_all_json(&stderr);
        let fatal = events
            .iter()
            .find(|e| e["fatal"] == true)
            .unwrap_or_else(|| panic!("{what}: no fatal JSON event:\n{stderr}"));
        let message = fatal["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("{} is {what}, not a socket", socket.display())),
            "{message}"
        );
        assert!(
            out.stdout.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(socket.exists(), "{what} was left where it was");
        let _ = std::fs::remove_dir_all(&socket);
        let _ = std::fs::remove_file(&socket);
    }
}

/// An agent started the way systemd starts it from `eci-agent.socket`: the listening socket as
/// fd 3, `LISTEN_FDS=1`, `LISTEN_PID` its own pid (set by the shell that execs it).
fn start_activated(dir: &Path, socket: &Path, listener: &UnixListener, log: &Path) -> Child {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#)
        .arg(AGENT_BIN)
        .args(agent_command(dir, socket).get_args());
    let fd = listener.as_raw_fd();
    // SAFETY: dup2(2) and fcntl(2) are async-signal-safe; they put our listener on fd 3 in the
    // child only, without close-on-exec (dup2 onto itself keeps the flag, hence the fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("INVOCATION_ID")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) of our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
}

fn inode(path: &Path) -> u64 {
    std::fs::symlink_metadata(path).unwrap().ino()
}

#[test]
fn a_socket_systemd_passes_keeps_its_inode_across_agent_restarts() {
    let dir: PathBuf = engine().scratch("public-activated");
    let socket = dir.join("docker.sock");
    let _ = std::fs::remove_file(&socket);
    // The test plays systemd: it binds the socket once and keeps it.
    let listener = UnixListener::bind(&socket).unwrap();
    let bound = inode(&socket);
    let log = dir.join("agent.log");
    for round in 0..2 {
        let child = start_activated(&dir, &socket, &listener, &log);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !ping(&socket) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the agent does not serve the passed socket:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            inode(&socket),
            bound,
            "round {round}: the socket was re-bound"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        let events = assert_all_json(&text);
        assert!(
            events
                .iter()
                .any(|e| e["message"] == "serving" && e["socket_activated"] == true),
            "{text}"
        );
        assert!(
            events
                .iter()
                .any(|e| e["docker_host"] == format!("unix://{}", socket.display()).as_str()),
            "the DOCKER_HOST line is a JSON event:\n{text}"
        );
        let stdout = std::fs::read_to_string(log.with_extension("out")).unwrap();
        assert!(
            stdout.is_empty(),
            "stdout under --log-format json: {stdout}"
        );
        stop(child);
        // systemd's socket stays for the next agent; the agent never removes it.
        assert_eq!(inode(&socket), bound, "round {round}: the agent removed it");
    }
    // A socket bound elsewhere is refused with both names.
    let other = dir.join("other.sock");
    let _ = std::fs::remove_file(&other);
    let wrong = UnixListener::bind(&other).unwrap();
    let child = start_activated(&dir, &socket, &wrong, &log);
    let out = wait_output(child, Duration::from_secs(30));
    assert!(!out.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains(&format!(
            "is bound to {}, not to --listen {}",
            other.display(),
            socket.display()
        )),
        "{text}"
    );
    drop(listener);
    let _ = std::fs::remove_file(&socket);
    let _ = std::fs::remove_file(&other);
}

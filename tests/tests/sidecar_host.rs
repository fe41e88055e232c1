//! The real docker CLI on the host, through the sidecar, against a private dockerd: everything
//! must work as if the engine were reached directly (trusted host callers are not filtered).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use eci_tests::{
    dockerd::{self, Dockerd},
    sidecar::{self, Sidecar},
};

/// One sidecar for the whole binary; its policy would block everything for a container, which
/// shows host callers are not filtered.
fn sidecar() -> &'static Sidecar {
    static SIDECAR: OnceLock<Sidecar> = OnceLock::new();
    SIDECAR.get_or_init(|| Sidecar::start(engine(), sidecar::command_list("allow", &[])))
}

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().expect("spawn docker");
    check(cmd, &out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(cmd: &Command, out: &Output) {
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A detached busybox container that lives until removed.
struct Container(String);

impl Container {
    fn sleeping(name: &str) -> Self {
        let image = engine().cli_image();
        let _ = engine().docker().args(["rm", "-f", name]).output();
        ok(sidecar().docker().args([
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            name,
            image,
            "sleep",
            "600",
        ]));
        Self(name.to_owned())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = engine().docker().args(["rm", "-f", &self.0]).output();
    }
}

#[test]
fn ps_and_version() {
    let out = ok(sidecar().docker().args(["ps", "-a"]));
    assert!(out.starts_with("CONTAINER ID"), "{out}");
    let out = ok(sidecar()
        .docker()
        .args(["version", "--format", "{{.Server.APIVersion}}"]));
    assert_eq!(out.trim(), "1.41");
}

#[test]
fn run_interactive_ends_when_stdin_ends() {
    let image = engine().cli_image();
    let mut child = sidecar()
        .docker()
        .args([
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            image,
            "sh",
            "-c",
            "cat; echo done",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hello through the sidecar\n").unwrap();
    // Closing stdin half-closes the hijacked connection; cat must see EOF and the run must end.
    drop(stdin);
    let out = wait_bounded(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through the sidecar\ndone\n"
    );
}

#[test]
fn run_without_stdin_prints_output() {
    let image = engine().cli_image();
    let out =
        ok(sidecar()
            .docker()
            .args(["run", "--rm", "--network", "none", image, "seq", "1", "3"]));
    assert_eq!(out, "1\n2\n3\n");
}

#[test]
fn exec_interactive() {
    let c = Container::sleeping("eci-host-exec");
    let out = sidecar()
        .docker()
        .args(["exec", "-i", &c.0, "wc", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(&vec![b'x'; 100_000])?;
            Ok(wait_bounded(child, Duration::from_secs(60)))
        })
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "100000");
    // Exit codes come back through `GET /exec/{id}/json` after the stream.
    let status = sidecar()
        .docker()
        .args(["exec", &c.0, "sh", "-c", "exit 7"])
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(7));
}

#[test]
fn logs_follow_streams() {
    let image = engine().cli_image();
    let name = "eci-host-logs";
    let _ = engine().docker().args(["rm", "-f", name]).output();
    let script = "echo first; sleep 2; echo second; sleep 600";
    ok(sidecar().docker().args([
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        image,
        "sh",
        "-c",
        script,
    ]));
    let _guard = Container(name.to_owned());
    let mut child = sidecar()
        .docker()
        .args(["logs", "-f", name])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    // Arrives two seconds later on the same, still open, response.
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn events_stream() {
    let mut child = sidecar()
        .docker()
        .args([
            "events",
            "--filter",
            "type=volume",
            "--format",
            "{{.Action}} {{.Actor.ID}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok(sidecar()
        .docker()
        .args(["volume", "create", "eci-host-events"]));
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert_eq!(first, "create eci-host-events");
    child.kill().unwrap();
    child.wait().unwrap();
    ok(sidecar().docker().args(["volume", "rm", "eci-host-events"]));
}

#[test]
fn cp_both_ways() {
    let c = Container::sleeping("eci-host-cp");
    let dir = engine().scratch("cp");
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("in.bin"), &payload).unwrap();
    ok(sidecar()
        .docker()
        .arg("cp")
        .arg(dir.join("in.bin"))
        .arg(format!("{}:/tmp/in.bin", c.0)));
    ok(sidecar()
        .docker()
        .arg("cp")
        .arg(format!("{}:/tmp/in.bin", c.0))
        .arg(dir.join("out.bin")));
    assert!(
        std::fs::read(dir.join("out.bin")).unwrap() == payload,
        "round trip changed the file"
    );
}

/// `docker load` sends its archive chunked, which the sidecar carries on its own path: the
/// image saved through the sidecar comes back under its name once loaded through it.
#[test]
fn save_and_load_round_trip() {
    let dir = engine().scratch("load");
    let archive = dir.join("saved.tar");
    ok(sidecar()
        .docker()
        .args(["tag", engine().cli_image(), "eci-test/loaded:1"]));
    ok(sidecar()
        .docker()
        .args(["save", "-o"])
        .arg(&archive)
        .arg("eci-test/loaded:1"));
    ok(sidecar()
        .docker()
        .args(["image", "rm", "eci-test/loaded:1"]));
    let out = ok(sidecar().docker().arg("load").arg("-i").arg(&archive));
    assert!(out.contains("Loaded image: eci-test/loaded:1"), "{out}");
    ok(sidecar()
        .docker()
        .args(["image", "inspect", "eci-test/loaded:1"]));
    ok(sidecar()
        .docker()
        .args(["image", "rm", "eci-test/loaded:1"]));
}

#[test]
fn build_from_a_context() {
    let image = engine().cli_image();
    let dir = engine().scratch("build");
    std::fs::write(
        dir.join("Dockerfile"),
        format!("FROM {image}\nCOPY greeting /greeting\nRUN cat /greeting\n"),
    )
    .unwrap();
    std::fs::write(dir.join("greeting"), "built through the sidecar\n").unwrap();
    let out = ok(sidecar()
        .docker()
        .args(["build", "--network", "none", "-t", "eci-test/built:1"])
        .arg(&dir));
    assert!(out.contains("built through the sidecar"), "{out}");
    let out = ok(sidecar().docker().args([
        "run",
        "--rm",
        "--network",
        "none",
        "eci-test/built:1",
        "cat",
        "/greeting",
    ]));
    assert_eq!(out, "built through the sidecar\n");
    ok(sidecar().docker().args(["image", "rm", "eci-test/built:1"]));
}

#[test]
fn volumes_and_networks() {
    ok(sidecar()
        .docker()
        .args(["volume", "create", "eci-host-vol"]));
    assert!(
        ok(sidecar().docker().args(["volume", "ls", "-q"]))
            .lines()
            .any(|l| l == "eci-host-vol")
    );
    ok(sidecar().docker().args(["volume", "rm", "eci-host-vol"]));
    ok(sidecar()
        .docker()
        .args(["network", "create", "--internal", "eci-host-net"]));
    assert!(
        ok(sidecar()
            .docker()
            .args(["network", "ls", "--format", "{{.Name}}"]))
        .lines()
        .any(|l| l == "eci-host-net")
    );
    ok(sidecar().docker().args(["network", "rm", "eci-host-net"]));
}

#[test]
fn stats_no_stream() {
    let c = Container::sleeping("eci-host-stats");
    let out = ok(sidecar()
        .docker()
        .args(["stats", "--no-stream", "--format", "{{.Name}}", &c.0]));
    assert_eq!(out.trim(), c.0);
}

fn wait_bounded(child: std::process::Child, limit: Duration) -> Output {
    let pid = child.id();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            // SAFETY: kill(2) of a child we spawned and have not reaped yet.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("still running after {:?}", start.elapsed());
        }
    }
}

#[test]
fn push_and_pull_through_a_local_registry() {
    let registry = eci_tests::registry::Registry::start().expect("registry");
    let image = engine().cli_image();
    let name = format!("{}/eci/pushpull:1", registry.addr);
    ok(sidecar().docker().args(["tag", image, &name]));
    let pushed = ok(sidecar().docker().args(["push", &name]));
    assert!(pushed.contains("digest: sha256:"), "{pushed}");
    ok(sidecar().docker().args(["rmi", &name]));
    let pulled = ok(sidecar().docker().args(["pull", &name]));
    assert!(
        pulled.contains("Downloaded newer image") || pulled.contains("Pull complete"),
        "{pulled}"
    );
    let digests =
        ok(sidecar()
            .docker()
            .args(["image", "inspect", "-f", "{{json .RepoDigests}}", &name]));
    assert!(
        digests.contains(&format!("{}/eci/pushpull@sha256:", registry.addr)),
        "{digests}"
    );
    ok(sidecar().docker().args(["rmi", &name]));
}

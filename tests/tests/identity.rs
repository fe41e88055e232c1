//! Identity a container cannot choose: the real `eci-agent run` (sidecar alone,
//! `--allow-no-lsm`) in front of a private dockerd, the real CLI inside containers that mount
//! the agent's socket. A container is known by the cgroup the engine put it in, whatever
//! `--cgroup-parent` it picked, and no container is placed where it would borrow standing.
//!
//! The kernel's part (migration between cgroups, verdicts only on recorded cgroups) is proven in
//! the eci VM and the kernel suite.

use std::{path::PathBuf, process::Output};

use eci_tests::{
    agent::{Agent, cgroup2_root},
    dockerd::{self, Dockerd},
};

const AGENT_BIN: &str = env!("CARGO_BIN_EXE_agent-under-test");

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

/// Every image may mount the socket; `ps` is denied to containers.
const SETTINGS: &str = r#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {
    "locked": true, "value": true, "dockerSocketMount": {
        "imageList": {"images": ["*"]},
        "commandList": {"type": "deny", "commands": ["ps"]}}}}"#;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `docker run --rm [extra] CLI-IMAGE sh -c SCRIPT` through the agent, the agent's socket
/// mounted at the default path.
fn run_in(agent: &Agent, extra: &[&str], script: &str) -> Output {
    agent
        .docker()
        .args(["run", "--rm", "--network", "none"])
        .args(extra)
        .arg("-v")
        .arg(format!("{}:/var/run/docker.sock", agent.socket().display()))
        .args([engine().cli_image(), "sh", "-c", script])
        .output()
        .expect("docker run")
}

/// A cgroup of the test's own, removed on drop (with the engine's children, if any are left).
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Self {
        let path = PathBuf::from(cgroup2_root()).join(format!("{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn rel(&self) -> String {
        format!(
            "/{}",
            self.0.strip_prefix(cgroup2_root()).unwrap().display()
        )
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(entries) = std::fs::read_dir(&self.0) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[test]
fn a_chosen_cgroup_parent_does_not_escape_the_command_list() {
    let agent = Agent::start(AGENT_BIN, engine(), "cgparent", SETTINGS, &[]).expect("agent");
    let parent = TestCgroup::new("eci-anything");
    let script =
        "docker ps >/dev/null 2>&1; echo ps-exit=$?; docker version --format '{{.Server.Os}}'";
    // Under the default parent the commandList applies…
    let out = run_in(&agent, &[], script);
    assert!(text(&out).contains("ps-exit=1"), "{}", text(&out));
    // …and under any other parent it still does: the caller is the same kind of container.
    let out = run_in(
        &agent,
        &["--cgroup-parent", &format!("{}/x", parent.rel())],
        script,
    );
    let t = text(&out);
    assert!(
        t.contains("ps-exit=1"),
        "a chosen cgroup parent escaped: {t}"
    );
    assert!(t.contains("linux"), "allowed commands still work: {t}");
}

#[test]
fn no_container_goes_inside_a_trusted_cgroup_or_another_container() {
    let trusted = TestCgroup::new("eci-trusted");
    let agent = Agent::start(
        AGENT_BIN,
        engine(),
        "placement",
        SETTINGS,
        &["--trust-cgroup", &trusted.rel()],
    )
    .expect("agent");
    let out = agent
        .docker()
        .args(["run", "--rm", "--network", "none", "--cgroup-parent"])
        .arg(format!("{}/x", trusted.rel()))
        .args([engine().cli_image(), "true"])
        .output()
        .unwrap();
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("enhanced container isolation: container cgroup refused: cgroup parent")
            && t.contains("is inside the trusted host cgroup"),
        "{t}"
    );

    // Inside a running container's cgroup.
    let holder = agent
        .docker()
        .args(["run", "-d", "--network", "none"])
        .args([engine().cli_image(), "sleep", "60"])
        .output()
        .unwrap();
    let id = String::from_utf8_lossy(&holder.stdout).trim().to_owned();
    assert_eq!(id.len(), 64, "{}", text(&holder));
    let out = agent
        .docker()
        .args(["run", "--rm", "--network", "none", "--cgroup-parent"])
        .arg(format!("/docker/{id}"))
        .args([engine().cli_image(), "true"])
        .output()
        .unwrap();
    let t = text(&out);
    let _ = agent.docker().args(["rm", "-f", &id]).output();
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&format!("is inside the cgroup of container {id}")),
        "{t}"
    );
}

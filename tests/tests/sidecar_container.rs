//! The commandList, seen from inside a container that mounts the sidecar's socket and runs the
//! real docker CLI: blocked commands print Docker Desktop's refusal, others work.

use std::{path::PathBuf, process::Output};

use eci_agent::sidecar::{ProcIdentity, TrustedCgroups};
use eci_tests::{
    dockerd::{self, Dockerd},
    sidecar::{self, SETTINGS_PATH, Sidecar},
};

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn blocked_line(raw_target: &str) -> String {
    format!(
        "Error response from daemon: enhanced container isolation: docker command \"{raw_target}\" is blocked; \
         if you wish to allow it, configure the docker socket command list in {SETTINGS_PATH}"
    )
}

#[test]
fn deny_push_and_build() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &["push", "build"]));
    let image = engine().cli_image();
    let script = format!(
        "docker ps >/dev/null && echo ps-ok; \
         docker push {image}; echo push-exit=$?; \
         mkdir /ctx && echo 'FROM {image}' > /ctx/Dockerfile && docker build -q /ctx; echo build-exit=$?"
    );
    let out = sidecar.in_container(engine(), &script);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("ps-ok"), "{stdout}\n{stderr}");
    assert!(stdout.contains("push-exit=1"), "{stdout}\n{stderr}");
    assert!(stdout.contains("build-exit=1"), "{stdout}\n{stderr}");
    // The static CLI (v28) names the image canonically in the push path.
    assert!(
        stderr.contains(&blocked_line(
            "/v1.41/images/docker.io/eci-test/cli/push?tag=1"
        )),
        "{stderr}"
    );
    let build = stderr
        .lines()
        .find(|l| l.contains("docker command \"/v1.41/build?"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        build.starts_with(
            "Error response from daemon: enhanced container isolation: docker command"
        ),
        "{build}"
    );
    assert!(build.ends_with(&format!("is blocked; if you wish to allow it, configure the docker socket command list in {SETTINGS_PATH}")));

    // Each refusal is audited with the caller's container and the rule.
    let audit = sidecar.audit_lines();
    let push = audit
        .iter()
        .find(|l| l["verdict"] == "deny" && l["rule"] == "push")
        .expect("push refusal audited");
    assert_eq!(push["method"], "POST");
    assert_eq!(
        push["target"],
        "/v1.41/images/docker.io/eci-test/cli/push?tag=1"
    );
    assert_eq!(push["command"], "push");
    assert_eq!(
        push["container_id"].as_str().map(str::len),
        Some(64),
        "{push}"
    );
    assert!(
        push["cgroup"]
            .as_str()
            .is_some_and(|c| c.contains(push["container_id"].as_str().unwrap())),
        "{push}"
    );
    assert!(
        audit
            .iter()
            .any(|l| l["verdict"] == "deny" && l["rule"] == "build")
    );
    assert!(
        audit
            .iter()
            .any(|l| l["verdict"] == "allow" && l["command"] == "ps")
    );
}

#[test]
fn deny_image_wildcard() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &["image*"]));
    let script = "docker images; echo images-exit=$?; docker image ls -q; echo ls-exit=$?; \
                  docker image inspect eci-test/cli:1; echo inspect-exit=$?; docker volume ls -q; echo volume-exit=$?";
    let out = sidecar.in_container(engine(), script);
    let (stdout, stderr) = text(&out);
    for blocked in ["images-exit=1", "ls-exit=1", "inspect-exit=1"] {
        assert!(stdout.contains(blocked), "{blocked}: {stdout}\n{stderr}");
    }
    assert!(stdout.contains("volume-exit=0"), "{stdout}\n{stderr}");
    assert!(
        stderr.contains(&blocked_line("/v1.41/images/json")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&blocked_line("/v1.41/images/eci-test/cli:1/json")),
        "{stderr}"
    );
}

#[test]
fn allow_only_ps() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("allow", &["ps"]));
    let script = "docker ps -a >/dev/null; echo ps-exit=$?; docker volume ls; echo volume-exit=$?; \
                  docker info >/dev/null; echo info-exit=$?";
    let out = sidecar.in_container(engine(), script);
    let (stdout, stderr) = text(&out);
    assert!(stdout.contains("ps-exit=0"), "{stdout}\n{stderr}");
    assert!(stdout.contains("volume-exit=1"), "{stdout}\n{stderr}");
    assert!(stderr.contains(&blocked_line("/v1.41/volumes")), "{stderr}");
    assert!(stderr.contains("is blocked"), "{stderr}");
}

#[test]
fn policy_changes_apply_to_the_next_request() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &["volume*"]));
    let out = sidecar.in_container(engine(), "docker volume ls -q; echo exit=$?");
    assert!(text(&out).0.contains("exit=1"), "{:?}", text(&out));
    sidecar.set_policy(sidecar::command_list("deny", &["push"]));
    let out = sidecar.in_container(engine(), "docker volume ls -q; echo exit=$?");
    assert!(text(&out).0.contains("exit=0"), "{:?}", text(&out));
}

#[test]
fn eci_off_filters_nothing() {
    let off = sidecar::settings(
        r#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": false,
            "dockerSocketMount": {"commandList": {"type": "allow", "commands": []}}}}"#,
    );
    let sidecar = Sidecar::start(engine(), off);
    let out = sidecar.in_container(engine(), "docker volume ls -q; echo exit=$?");
    assert!(text(&out).0.contains("exit=0"), "{:?}", text(&out));
}

#[test]
fn callers_in_no_container_and_no_trusted_cgroup_are_refused() {
    let sidecar = Sidecar::start_with(engine(), sidecar::command_list("deny", &[]), |config| {
        config.identity =
            std::sync::Arc::new(ProcIdentity::new(TrustedCgroups::new([PathBuf::from(
                "/eci-nobody",
            )])));
    });
    let out = sidecar.docker().args(["ps"]).output().unwrap();
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("enhanced container isolation: this process is neither in a container"),
        "{stderr}"
    );
    // A container caller is still judged by the commandList.
    let out = sidecar.in_container(engine(), "docker ps -q; echo exit=$?");
    assert!(text(&out).0.contains("exit=0"), "{:?}", text(&out));
}

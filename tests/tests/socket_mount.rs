//! The socket-mount gate end to end on the host: the real `eci-agent run` in front of a private
//! dockerd, a real `docker-registry` on 127.0.0.1 holding the allowed image, the real docker
//! CLI. Images are made without network: the test CLI image (busybox + static docker CLI) is
//! imported, pushed to the registry (so the engine records its registry digest), built upon
//! (a derived image) and an unrelated image is imported.
//!
//! Kernel verdicts for the same containers are covered by the eci VM suite; here the agent runs
//! with `--allow-no-lsm`.

use std::{process::Output, time::Duration};

use eci_tests::{
    agent::Agent,
    dockerd::{self, Dockerd},
    images::{self, TestImages, UNRELATED_NAME, docker_ok},
    registry::Registry,
};

const AGENT_BIN: &str = env!("CARGO_BIN_EXE_agent-under-test");

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn images() -> &'static TestImages {
    images::shared()
}

fn settings(images: &[&str], derived: bool) -> String {
    images::settings(images, derived, &["push"])
}

/// An agent whose allowed digests have been resolved once from the shared registry.
fn agent(name: &str, images_list: &[&str], derived: bool) -> Agent {
    agent_with(name, images_list, derived, &images().registry_addr)
}

/// An agent that reaches `registry` over plain HTTP and has refreshed its digests once.
fn agent_with(name: &str, images_list: &[&str], derived: bool, registry: &str) -> Agent {
    let agent = Agent::start(
        AGENT_BIN,
        engine(),
        name,
        &settings(images_list, derived),
        &["--insecure-registry", registry, "--registry-refresh", "1s"],
    )
    .expect("agent");
    agent
        .wait_log("allowed digests refreshed", 1, Duration::from_secs(30))
        .unwrap();
    agent
}

fn denied_text(agent: &Agent, image_name: &str) -> String {
    format!(
        "docker: Error response from daemon: enhanced container isolation: docker socket mount denied for container with image \"{image_name}\"; \
         image is not in the allowed list; if you wish to allow it, configure the docker socket image list in {}",
        agent.settings_path().display()
    )
}

#[track_caller]
fn assert_runs_docker_ps(out: &Output) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("CONTAINER ID"),
        "expected `docker ps` to work inside: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[track_caller]
fn assert_denied(out: &Output, expected: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains(expected),
        "expected the refusal\n  {expected}\ngot (exit {:?}):\n{stderr}",
        out.status.code()
    );
}

#[test]
fn allowed_tag_passes_and_every_other_way_to_the_socket_is_refused() {
    let imgs = images();
    let agent = agent("tag", &[&imgs.allowed], false);

    let out = agent.run(&agent.socket_mount(), &imgs.allowed, &["docker", "ps"]);
    assert_runs_docker_ps(&out);
    // The commandList still applies inside the allowed container.
    let out = agent.run(
        &agent.socket_mount(),
        &imgs.allowed,
        &["docker", "push", "x"],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is blocked"),
        "{out:?}"
    );

    let denied = denied_text(&agent, UNRELATED_NAME);
    let sock = agent.socket().display().to_string();
    let dir = agent.dir().display().to_string();
    // -v, --mount, the parent directory, a symlink to the socket.
    assert_denied(
        &agent.run(&agent.socket_mount(), &imgs.unrelated, &["true"]),
        &denied,
    );
    assert_denied(
        &agent.run(
            &[
                "--mount".into(),
                format!("type=bind,source={sock},target=/s"),
            ],
            &imgs.unrelated,
            &["true"],
        ),
        &denied,
    );
    assert_denied(
        &agent.run(
            &["-v".into(), format!("{dir}:/host")],
            &imgs.unrelated,
            &["true"],
        ),
        &denied,
    );
    let link = engine().scratch("links").join("sock-link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(agent.socket(), &link).unwrap();
    assert_denied(
        &agent.run(
            &["-v".into(), format!("{}:/s", link.display())],
            &imgs.unrelated,
            &["true"],
        ),
        &denied,
    );
    // A local volume that bind-mounts the socket's directory.
    let volume = "eci-test-bindvol";
    let _ = engine()
        .docker()
        .args(["volume", "rm", "-f", volume])
        .output();
    docker_ok(&[
        "volume",
        "create",
        "--opt",
        "type=none",
        "--opt",
        "o=bind",
        "--opt",
        &format!("device={dir}"),
        volume,
    ]);
    assert_denied(
        &agent.run(
            &["-v".into(), format!("{volume}:/host")],
            &imgs.unrelated,
            &["true"],
        ),
        &denied,
    );
    // --volumes-from a container that mounts the socket.
    let holder = "eci-test-holder";
    let _ = engine().docker().args(["rm", "-f", holder]).output();
    let created = agent
        .docker()
        .args(["create", "--name", holder])
        .args(agent.socket_mount())
        .args([&imgs.allowed, "true"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    assert_denied(
        &agent.run(
            &["--volumes-from".into(), holder.into()],
            &imgs.unrelated,
            &["true"],
        ),
        &denied,
    );
    let _ = engine().docker().args(["rm", "-f", holder]).output();
    let _ = engine()
        .docker()
        .args(["volume", "rm", "-f", volume])
        .output();

    // No socket mount: anything runs.
    let out = agent.run(&[], &imgs.unrelated, &["true"]);
    assert!(out.status.success(), "{out:?}");
    // Derived images need allowDerivedImages.
    assert_denied(
        &agent.run(&agent.socket_mount(), &imgs.derived, &["docker", "ps"]),
        &denied_text(&agent, &format!("{}/eci/derived", imgs.registry_addr)),
    );
}

#[test]
fn retagging_an_unlisted_image_under_the_allowed_name_is_refused() {
    let imgs = images();
    // The allowed name exists in the registry with the CLI image's digest…
    let name = format!("{}/eci/retag:1", imgs.registry_addr);
    docker_ok(&["tag", &imgs.allowed, &name]);
    docker_ok(&["push", "-q", &name]);
    let agent = agent("retag", &[&name], false);
    assert_runs_docker_ps(&agent.run(&agent.socket_mount(), &name, &["docker", "ps"]));
    // …and now points at another image locally: digests differ, so it is refused.
    docker_ok(&["tag", &imgs.unrelated, &name]);
    assert_denied(
        &agent.run(&agent.socket_mount(), &name, &["true"]),
        &denied_text(&agent, &format!("{}/eci/retag", imgs.registry_addr)),
    );
    let _ = engine().docker().args(["rmi", &name]).output();
}

#[test]
fn any_tag_digest_pin_and_star() {
    let imgs = images();
    let repo = imgs.allowed.rsplit_once(':').unwrap().0;
    for (name, entry) in [
        ("anytag", format!("{repo}:*")),
        ("pin", format!("{repo}@{}", imgs.allowed_digest)),
    ] {
        let agent = agent(name, &[&entry], false);
        assert_runs_docker_ps(&agent.run(&agent.socket_mount(), &imgs.allowed, &["docker", "ps"]));
        assert_denied(
            &agent.run(&agent.socket_mount(), &imgs.unrelated, &["true"]),
            &denied_text(&agent, UNRELATED_NAME),
        );
    }
    let agent = agent("star", &["*"], false);
    let out = agent.run(&agent.socket_mount(), &imgs.derived, &["docker", "ps"]);
    assert_runs_docker_ps(&out);
    let out = agent.run(&agent.socket_mount(), &imgs.unrelated, &["true"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn derived_images_pass_only_with_allow_derived_images() {
    let imgs = images();
    let agent = agent("derived", &[&imgs.allowed], true);
    assert_runs_docker_ps(&agent.run(&agent.socket_mount(), &imgs.derived, &["docker", "ps"]));
    // A local image unrelated to any allowed one is still refused.
    assert_denied(
        &agent.run(&agent.socket_mount(), &imgs.unrelated, &["true"]),
        &denied_text(&agent, UNRELATED_NAME),
    );
}

#[test]
fn registry_down_keeps_the_last_digests_and_never_reached_allows_nothing() {
    let imgs = images();
    // Its own registry, so stopping it concerns this test only.
    let mut own = Registry::start().unwrap();
    let name = format!("{}/eci/own:1", own.addr);
    docker_ok(&["tag", &imgs.allowed, &name]);
    docker_ok(&["push", "-q", &name]);
    let agent = agent_with("down", &[&name], false, &own.addr);
    own.stop();
    agent
        .wait_log(
            "not refreshed; keeping the last good digests",
            1,
            Duration::from_secs(30),
        )
        .unwrap();
    assert_runs_docker_ps(&agent.run(&agent.socket_mount(), &name, &["docker", "ps"]));
    drop(agent);

    // A new agent that never reaches the registry allows nothing.
    let agent = agent_with("never", &[&name], false, &own.addr);
    assert_denied(
        &agent.run(&agent.socket_mount(), &name, &["true"]),
        &denied_text(&agent, &format!("{}/eci/own", own.addr)),
    );
    let _ = engine().docker().args(["rmi", &name]).output();
}

#[test]
fn reload_revokes_a_running_container_and_a_bad_file_changes_nothing() {
    let imgs = images();
    let agent = agent("reload", &[&imgs.allowed], false);
    let name = "eci-test-reload";
    let started = agent.run_holder(engine(), name, &imgs.allowed);
    assert!(started.status.success(), "{started:?}");
    let ps_inside = || {
        engine()
            .docker()
            .args(["exec", name, "docker", "ps", "-q"])
            .output()
            .unwrap()
    };
    assert!(ps_inside().status.success(), "{:?}", ps_inside());

    // A broken file: the running policy stays.
    agent.write_settings("{ not json").unwrap();
    agent
        .wait_log(
            "reload refused, the running policy stays",
            1,
            Duration::from_secs(10),
        )
        .unwrap();
    assert!(ps_inside().status.success());

    // The image leaves the list: the running container is refused at once, and new ones too.
    agent.write_settings(&settings(&[], false)).unwrap();
    agent
        .wait_log("settings reloaded", 1, Duration::from_secs(10))
        .unwrap();
    agent
        .wait_log(
            "running containers judged again",
            1,
            Duration::from_secs(10),
        )
        .unwrap();
    let out = ps_inside();
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr)
                .contains("not allowed to use the docker socket"),
        "{out:?}"
    );
    assert_denied(
        &agent.run(&agent.socket_mount(), &imgs.allowed, &["true"]),
        &denied_text(&agent, &format!("{}/eci/allowed", imgs.registry_addr)),
    );
    let _ = engine().docker().args(["rm", "-f", name]).output();
}

#[test]
fn start_is_judged_on_the_engines_view_and_a_refused_container_stays_created() {
    let imgs = images();
    let agent = agent("start", &[&imgs.allowed], false);
    // Created behind the sidecar's back (straight on the engine): only `start` can stop it.
    let name = "eci-test-start";
    let _ = engine().docker().args(["rm", "-f", name]).output();
    docker_ok(&[
        "create",
        "--network",
        "none",
        "--name",
        name,
        "-v",
        &format!("{}:/var/run/docker.sock", agent.socket().display()),
        &imgs.unrelated,
        "true",
    ]);
    let out = agent.docker().args(["start", name]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains(&format!(
                "Error response from daemon: enhanced container isolation: docker socket mount denied for container with image \"{}\"",
                UNRELATED_NAME
            )),
        "{out:?}"
    );
    let status = docker_ok(&["inspect", "-f", "{{.State.Status}}", name]);
    assert_eq!(status, "created");
    let _ = engine().docker().args(["rm", "-f", name]).output();
}

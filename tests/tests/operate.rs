//! Operating the agent: metrics scraped over HTTP after real decisions, `--dry-run` letting
//! would-be refusals through while logging and auditing them, and `eci-agent explain` agreeing
//! with live enforcement on the acceptance cases. The real `eci-agent run` in front of a private
//! dockerd, a real `docker-registry` on 127.0.0.1 and the real docker CLI; the agent runs with
//! `--allow-no-lsm` (this host's kernel refuses BPF LSM; the kernel side is the VM suite's).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::{Command, Output},
    time::{Duration, Instant},
};

use eci_tests::{
    agent::Agent,
    dockerd::{self, Dockerd},
    images::{self, TestImages, docker_ok},
};

const AGENT_BIN: &str = env!("CARGO_BIN_EXE_agent-under-test");

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn images() -> &'static TestImages {
    images::shared()
}

fn settings(images: &[&str]) -> String {
    images::settings(images, false, &["push", "build"])
}

/// An agent logging JSON, with metrics on an ephemeral port and an audit log, whose allowed
/// digests were resolved once.
fn agent(name: &str, extra: &[&str]) -> (Agent, String) {
    let imgs = images();
    let audit = engine()
        .scratch(&format!("ops-audit-{name}"))
        .join("audit.jsonl");
    let _ = std::fs::remove_file(&audit);
    let mut args = vec![
        "--insecure-registry",
        &imgs.registry_addr,
        "--log-format",
        "json",
        "--metrics",
        "127.0.0.1:0",
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let agent = Agent::start(
        AGENT_BIN,
        engine(),
        name,
        &settings(&[&imgs.allowed]),
        &args,
    )
    .expect("agent");
    agent
        .wait_log("allowed digests refreshed", 1, Duration::from_secs(30))
        .unwrap();
    let bound = log_events(&agent)
        .into_iter()
        .find_map(|e| {
            (e["message"] == "metrics, /healthz and /readyz served")
                .then(|| e["bound"].as_str().map(str::to_owned))
                .flatten()
        })
        .expect("the metrics address in the JSON log");
    std::fs::write(agent.dir().join("audit-path"), audit.to_str().unwrap()).unwrap();
    (agent, bound)
}

/// Every log line must be a JSON object (`--log-format json`).
fn log_events(agent: &Agent) -> Vec<serde_json::Value> {
    agent
        .log_text()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

fn audit_lines(agent: &Agent) -> Vec<serde_json::Value> {
    let path = std::fs::read_to_string(agent.dir().join("audit-path")).unwrap();
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// `GET path` on the metrics listener: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// A sample's value from the exposition, e.g. `eci_requests_total{verdict="deny",command="push"}`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn scrape(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn metrics_count_decisions_and_health_answers() {
    let imgs = images();
    let (agent, addr) = agent("metrics", &[]);
    assert_eq!(http_get(&addr, "/healthz").0, 200);
    let (code, body) = http_get(&addr, "/readyz");
    assert_eq!(code, 200, "{body}");
    assert_eq!(http_get(&addr, "/nothing").0, 404);

    // Allowed image: create and start pass the gate; `docker ps` inside is allowed, `push` not.
    let out = agent.run(&agent.socket_mount(), &imgs.allowed, &["docker", "ps"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = agent.run(
        &agent.socket_mount(),
        &imgs.allowed,
        &["docker", "push", "x"],
    );
    assert!(stderr(&out).contains("is blocked"), "{}", stderr(&out));
    // Unlisted image: refused at create.
    let out = agent.run(&agent.socket_mount(), &imgs.derived, &["true"]);
    assert!(
        stderr(&out).contains("docker socket mount denied"),
        "{}",
        stderr(&out)
    );

    let text = scrape(&addr);
    let at_least = |series: &str, n: f64| {
        let v = metric(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"));
        assert!(v >= n, "{series} = {v}, expected >= {n}\n{text}");
    };
    at_least(r#"eci_requests_total{verdict="deny",command="push"}"#, 1.0);
    at_least(r#"eci_requests_total{verdict="allow",command="ps"}"#, 1.0);
    at_least(
        r#"eci_socket_mount_decisions_total{verdict="allow",reason="image_allowed"}"#,
        4.0,
    );
    at_least(
        r#"eci_socket_mount_decisions_total{verdict="deny",reason="image_not_allowed"}"#,
        1.0,
    );
    at_least(r#"eci_registry_refreshes_total{result="success"}"#, 1.0);
    at_least("eci_registry_allowed_digests", 1.0);
    at_least("eci_registry_digest_set_age_seconds", 0.0);
    assert_eq!(metric(&text, "eci_kernel_enforcement"), Some(0.0));
    assert_eq!(metric(&text, "eci_dry_run"), Some(0.0));
    assert_eq!(metric(&text, "eci_policy_last_reload_success"), Some(1.0));
    assert_eq!(
        metric(&text, r#"eci_policy_reloads_total{result="success"}"#),
        Some(0.0)
    );

    // A running allowed container is counted; a bad reload is counted and keeps the policy.
    let name = "eci-ops-metrics-running";
    let out = agent.run_holder(engine(), name, &imgs.allowed);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_for(|| metric(&scrape(&addr), "eci_allowed_containers") == Some(1.0));
    agent.write_settings("{ not json").unwrap();
    wait_for(|| {
        let text = scrape(&addr);
        metric(&text, r#"eci_policy_reloads_total{result="failure"}"#) == Some(1.0)
            && metric(&text, "eci_policy_last_reload_success") == Some(0.0)
    });
    let _ = engine().docker().args(["rm", "-f", name]).output();
    wait_for(|| metric(&scrape(&addr), "eci_allowed_containers") == Some(0.0));

    // The audit log has the refusals.
    let audit = audit_lines(&agent);
    assert!(
        audit
            .iter()
            .any(|l| l["verdict"] == "deny" && l["command"] == "push"),
        "{audit:?}"
    );
}

fn wait_for(mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "condition not met in 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn dry_run_logs_would_be_refusals_and_lets_them_through() {
    let imgs = images();
    let (agent, addr) = agent("dryrun", &["--dry-run"]);
    // An unlisted image mounts the socket, and inside it `docker ps` (container not allowed)
    // reaches the engine; `push` (listed) too: the engine answers it, not the agent.
    let out = agent.run(&agent.socket_mount(), &imgs.derived, &["docker", "ps"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("CONTAINER ID"),
        "{}",
        stderr(&out)
    );
    let out = agent.run(
        &agent.socket_mount(),
        &imgs.derived,
        &["docker", "push", "eci-ops-no-such-image"],
    );
    assert!(
        !stderr(&out).contains("enhanced container isolation"),
        "{}",
        stderr(&out)
    );

    let audit = audit_lines(&agent);
    for reason in ["image_not_allowed", "container_not_allowed"] {
        assert!(
            audit
                .iter()
                .any(|l| l["verdict"] == "would_deny" && l["reason"] == reason),
            "no would_deny/{reason} in {audit:#?}"
        );
    }
    assert!(
        audit.iter().all(|l| l["verdict"] != "deny"),
        "a dry run refused something: {audit:#?}"
    );
    assert!(
        log_events(&agent)
            .iter()
            .any(|e| e["message"] == "dry run: request would be refused; forwarded"),
    );
    let text = scrape(&addr);
    assert_eq!(metric(&text, "eci_dry_run"), Some(1.0));
    assert!(
        metric(
            &text,
            r#"eci_requests_total{verdict="would_deny",command="create"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // `status` shows the mode; `--check` says enforcement is not live.
    let status = Command::new(AGENT_BIN)
        .args(["status", "--check", "--pin-dir"])
        .arg(agent.dir().join("pins"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        stdout.contains("agent: pid ") && stdout.contains("(running), mode dry-run"),
        "{stdout}"
    );
    assert!(
        stdout.contains("the agent runs in dry-run mode"),
        "{stdout}"
    );
    assert_eq!(status.status.code(), Some(1), "{stdout}");
}

/// `explain` with the agent's own settings and sockets.
fn explain(agent: &Agent, what: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(AGENT_BIN)
        .arg("explain")
        .arg("--settings")
        .arg(agent.settings_path())
        .arg("--engine")
        .arg(agent.socket())
        .arg("--protect")
        .arg(engine().socket())
        .args(["--insecure-registry", &images().registry_addr])
        .args(what)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn message_of(explained: &str) -> &str {
    explained
        .lines()
        .find_map(|l| l.strip_prefix("message: "))
        .unwrap_or_else(|| panic!("no message in\n{explained}"))
}

#[test]
fn explain_agrees_with_live_enforcement() {
    let imgs = images();
    let (agent, _) = agent("explain", &[]);

    // Images: allowed runs with the socket; unlisted is refused with the very same message.
    let (code, text) = explain(&agent, &["--image", &imgs.allowed]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("reason: image_allowed"), "{text}");
    let live = agent.run(&agent.socket_mount(), &imgs.allowed, &["docker", "ps"]);
    assert!(live.status.success(), "{}", stderr(&live));

    let (code, text) = explain(&agent, &["--image", &imgs.derived]);
    assert_eq!(code, Some(1), "{text}");
    let live = agent.run(&agent.socket_mount(), &imgs.derived, &["true"]);
    assert!(
        !live.status.success() && stderr(&live).contains(message_of(&text)),
        "explain said\n{text}\nlive:\n{}",
        stderr(&live)
    );

    // Requests: what the CLI sent for `push` (from the audit log) is refused, with the message
    // the CLI printed; `ps` passes.
    let live = agent.run(
        &agent.socket_mount(),
        &imgs.allowed,
        &["docker", "push", "eci-ops-x"],
    );
    let audit = audit_lines(&agent);
    let pushed = audit
        .iter()
        .find(|l| l["command"] == "push")
        .unwrap_or_else(|| panic!("no push in {audit:#?}"));
    let request = format!("POST {}", pushed["target"].as_str().unwrap());
    let (code, text) = explain(&agent, &["--request", &request]);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("rule: \"push\" in the commandList"), "{text}");
    assert!(
        stderr(&live).contains(message_of(&text)),
        "{}\n{text}",
        stderr(&live)
    );
    let (code, text) = explain(&agent, &["--request", "GET /v1.41/containers/json"]);
    assert_eq!(code, Some(0), "{text}");

    // Containers: one created behind the agent's back with an unlisted image and the socket
    // mounted is judged refused, and `start` through the agent is refused with that message.
    let name = "eci-ops-explain-sneaky";
    let _ = engine().docker().args(["rm", "-f", name]).output();
    docker_ok(&[
        "create",
        "--network",
        "none",
        "--name",
        name,
        "-v",
        &format!("{}:/s", agent.socket().display()),
        &imgs.derived,
        "true",
    ]);
    let (code, text) = explain(&agent, &["--container", name]);
    assert_eq!(code, Some(1), "{text}");
    let live = agent.docker().args(["start", name]).output().unwrap();
    assert!(
        !live.status.success() && stderr(&live).contains(message_of(&text)),
        "{}\n{text}",
        stderr(&live)
    );
    let _ = engine().docker().args(["rm", "-f", name]).output();
    // An allowed one is judged allowed, with its rule and mount.
    let name = "eci-ops-explain-allowed";
    let out = agent.run_holder(engine(), name, &imgs.allowed);
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, text) = explain(&agent, &["--container", name]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("socket: mounted")
            && text.contains("reason: image_allowed")
            && text.contains("/eci/allowed:1"),
        "{text}"
    );
    let _ = engine().docker().args(["rm", "-f", name]).output();
}

/// Bad settings stop `run` before it binds or loads anything, with the field named and exit 64
/// (`EX_USAGE`): a supervisor learns that restarting will not help.
#[test]
fn run_with_bad_settings_exits_64_naming_the_field() {
    let dir = engine().scratch("bad-settings");
    let settings = dir.join("admin-settings.json");
    std::fs::write(
        &settings,
        r#"{"configurationFileVersion": 2, "enhancedContainerIsolation": {"value": true, "locked": true, "dockerSocketMount": {"imageList": {"images": [42]}}}}"#,
    )
    .unwrap();
    let listen = dir.join("never.sock");
    let out = Command::new(AGENT_BIN)
        .arg("run")
        .arg("--settings")
        .arg(&settings)
        .arg("--listen")
        .arg(&listen)
        .arg("--engine")
        .arg(dir.join("engine.sock"))
        .arg("--pin-dir")
        .arg(dir.join("pins"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("images"), "the field is named: {stderr}");
    assert!(!listen.exists(), "nothing was bound");
}

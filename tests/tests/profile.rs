//! The container-caller profile with the real dockerd and docker CLI: a container that holds the
//! socket (allowed image, empty deny list) asks for host-root power through it and is refused
//! with a message naming the option, while the same request from the host is served.

use std::process::Output;

use eci_agent::policy::{
    messages::{profile_refused, profile_refused_use},
    profile::{Breach, ContainerUse, Namespace},
};
use eci_tests::{
    dockerd::{self, Dockerd},
    sidecar::{self, SETTINGS_PATH, Sidecar},
};

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn refused(b: &Breach) -> String {
    profile_refused(b, SETTINGS_PATH)
}

fn host_path(source: &str, reaches: &str, what: &'static str) -> Breach {
    Breach::HostPath {
        source: source.into(),
        reaches: reaches.into(),
        what,
    }
}

/// Options as arguments: split on spaces, `~` stands for a space inside one.
fn args(opts: &str) -> Vec<String> {
    opts.split(' ').map(|o| o.replace('~', " ")).collect()
}

/// The engine's data root, as `GET /info` reports it.
fn data_root() -> String {
    let out = engine()
        .docker()
        .args(["info", "-f", "{{.DockerRootDir}}"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_socket_holder_cannot_create_host_root_containers() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &[]));
    let image = engine().cli_image();
    let data = data_root();
    let engine_sock = engine().socket().display().to_string();
    // (label, docker run options, the refusal, whether the host can run it here)
    let cases: Vec<(&str, String, Breach, bool)> = vec![
        (
            "privileged",
            "--privileged".into(),
            Breach::Privileged,
            true,
        ),
        (
            "pid",
            "--pid=host".into(),
            Breach::HostNamespace(Namespace::Pid),
            true,
        ),
        (
            "ipc",
            "--ipc=host".into(),
            Breach::HostNamespace(Namespace::Ipc),
            true,
        ),
        (
            "cgroupns",
            "--cgroupns=host".into(),
            Breach::HostNamespace(Namespace::Cgroup),
            true,
        ),
        (
            "userns",
            "--userns=host".into(),
            Breach::HostNamespace(Namespace::User),
            true,
        ),
        (
            "capsysadmin",
            "--cap-add sys_admin".into(),
            Breach::Capability("CAP_SYS_ADMIN".into()),
            true,
        ),
        (
            "capbpf",
            "--cap-add CAP_BPF".into(),
            Breach::Capability("CAP_BPF".into()),
            true,
        ),
        (
            "capall",
            "--cap-add ALL".into(),
            Breach::Capability("ALL".into()),
            true,
        ),
        (
            "device",
            "--device /dev/null:/dev/n".into(),
            Breach::Devices,
            true,
        ),
        (
            "devrule",
            "--device-cgroup-rule c~1:3~r".into(),
            Breach::DeviceCgroupRules,
            true,
        ),
        ("gpus", "--gpus all".into(), Breach::DeviceRequests, false),
        (
            "seccomp",
            "--security-opt seccomp=unconfined".into(),
            Breach::SeccompUnconfined,
            true,
        ),
        (
            "apparmor",
            "--security-opt apparmor=unconfined".into(),
            Breach::AppArmorUnconfined,
            true,
        ),
        (
            "label",
            "--security-opt label:disable".into(),
            Breach::LabelDisabled,
            true,
        ),
        (
            "systempaths",
            "--security-opt systempaths=unconfined".into(),
            Breach::SystemPathsUnconfined,
            true,
        ),
        (
            "cgroupparent",
            "--cgroup-parent /eci-elsewhere".into(),
            Breach::CgroupParent("/eci-elsewhere".into()),
            false,
        ),
        (
            "root",
            "-v /:/host:ro".into(),
            host_path("/", "/", "the host's root"),
            true,
        ),
        (
            "proc",
            "-v /proc:/p:ro".into(),
            host_path("/proc", "/proc", "the host's /proc"),
            true,
        ),
        (
            "cgroupfs",
            "--mount type=bind,src=/sys/fs/cgroup,dst=/c,readonly".into(),
            host_path("/sys/fs/cgroup", "/sys/fs/cgroup", "the host's cgroups"),
            true,
        ),
        (
            "dev",
            "-v /dev:/d:ro".into(),
            host_path("/dev", "/dev", "the host's devices"),
            true,
        ),
        (
            "dataroot",
            format!("-v {data}:/d:ro"),
            host_path(&data, &data, "the engine's data root"),
            true,
        ),
        (
            "enginesock",
            format!("-v {engine_sock}:/e.sock"),
            Breach::HostSocket {
                source: engine_sock.clone(),
            },
            true,
        ),
        (
            "bindvolume",
            "-v eci-profile-rootvol:/r:ro".into(),
            host_path("/", "/", "the host's root"),
            true,
        ),
        (
            "procvolume",
            "-v eci-profile-procvol:/p:ro".into(),
            Breach::HostFilesystemVolume {
                name: "eci-profile-procvol".into(),
                fs: "proc".into(),
            },
            true,
        ),
    ];
    // Named volumes made by the container caller itself (volume create is not refused: the
    // volume is judged where it is mounted).
    let mut script = String::from(
        "docker volume create -o type=none -o o=bind -o device=/ eci-profile-rootvol >/dev/null; \
         docker volume create -o type=proc -o device=proc eci-profile-procvol >/dev/null; ",
    );
    for (label, opts, _, _) in &cases {
        let opts: Vec<String> = args(opts).iter().map(|a| format!("'{a}'")).collect();
        let opts = opts.join(" ");
        script.push_str(&format!(
            "docker run --rm --network none {opts} {image} true; echo case-{label}=$?; "
        ));
    }
    // And a plain container still runs.
    script.push_str(&format!(
        "docker run --rm --network none -v /srv-eci-none:/x {image} true; echo case-plain=$?"
    ));
    let out = text(&sidecar.in_container(engine(), &script));
    let mut failures = Vec::new();
    for (label, _, breach, _) in &cases {
        let msg = refused(breach);
        if !out.contains(&format!("case-{label}=125")) || !out.contains(&msg) {
            failures.push(format!("{label}: expected exit 125 and\n    {msg}"));
        }
    }
    assert!(out.contains("case-plain=0"), "{out}");
    assert!(failures.is_empty(), "{}\n---\n{out}", failures.join("\n"));
    // The exact text for one option, as a user reads it.
    assert!(out.contains(&format!(
        "docker: Error response from daemon: enhanced container isolation: privileged containers are not allowed for containers that use the docker socket; \
         if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in {SETTINGS_PATH}"
    )), "{out}");
    let audit = sidecar.audit_lines();
    assert!(
        audit
            .iter()
            .any(|l| l["verdict"] == "deny" && l["reason"] == "profile_privileged"),
        "{audit:?}"
    );

    // The same requests from the host are served: the engine gets them. (This machine's own
    // bounding set lacks CAP_SYS_RESOURCE, so runc cannot start `--privileged` or `ALL` here,
    // this engine does not know CAP_BPF, and there is no GPU: those fail in the engine, not in
    // the sidecar.)
    let mut ran = Vec::new();
    for (label, opts, _, host_runs) in &cases {
        if !host_runs {
            continue;
        }
        let out = sidecar
            .docker()
            .args(["run", "--rm", "--network", "none"])
            .args(args(opts))
            .args([image, "true"])
            .output()
            .unwrap();
        let said = text(&out);
        assert!(
            !said.contains("enhanced container isolation"),
            "{label} from the host was refused: {said}"
        );
        if out.status.success() {
            ran.push(*label);
        } else {
            assert!(
                ["privileged", "capall", "capbpf"].contains(label),
                "{label} from the host: {said}"
            );
        }
    }
    assert!(ran.len() >= cases.len() - 5, "ran from the host: {ran:?}");
    let _ = engine()
        .docker()
        .args(["volume", "rm", "eci-profile-rootvol", "eci-profile-procvol"])
        .output();
}

/// Only `create` used to be judged. A socket holder could start, restart, exec into or attach
/// to a container the host made with host-root power, exec `--privileged` into any container,
/// or join a host-namespace container's namespaces (`--pid|--ipc|--network=container:X`).
/// Each is refused from an allowed container, naming the option, and served from the host.
#[test]
fn a_socket_holder_cannot_use_host_root_containers() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &[]));
    let image = engine().cli_image();
    // Made by the host: (name, `docker create` or `docker run -d` options, command).
    let made: [(&str, &str, &str); 10] = [
        ("eci-use-priv", "create --network none --privileged", "true"),
        (
            "eci-use-cap",
            "create --network none --cap-add SYS_ADMIN",
            "true",
        ),
        (
            "eci-use-root",
            "create --network none -v /:/host:ro",
            "true",
        ),
        (
            "eci-use-dev",
            "create --network none --device /dev/null:/dev/n",
            "true",
        ),
        ("eci-use-net", "create --network host", "true"),
        ("eci-use-plain", "create --network none", "true"),
        (
            "eci-use-pidhost",
            "run -d --network none --pid=host",
            "sleep 600",
        ),
        (
            "eci-use-ipchost",
            "run -d --network none --ipc=host",
            "sleep 600",
        ),
        ("eci-use-nethost", "run -d --network host", "sleep 600"),
        (
            "eci-use-running",
            "run -d --network none --ipc=shareable",
            "sleep 600",
        ),
    ];
    for (name, opts, cmd) in made {
        let out = engine()
            .docker()
            .args(args(opts))
            .args(["--name", name, image])
            .args(args(cmd))
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let pid = Breach::HostNamespace(Namespace::Pid);
    let joined = |ns, container: &str| Breach::JoinedNamespace {
        ns,
        container: container.into(),
    };
    let start = ContainerUse::Start;
    // (label, the container caller's command, the refusal: what it does to which container)
    let cases: Vec<(&str, String, ContainerUse, &str, Breach)> = vec![
        (
            "start-priv",
            "docker start eci-use-priv".into(),
            start,
            "eci-use-priv",
            Breach::Privileged,
        ),
        (
            "start-cap",
            "docker start eci-use-cap".into(),
            start,
            "eci-use-cap",
            Breach::Capability("CAP_SYS_ADMIN".into()),
        ),
        (
            "start-root",
            "docker start eci-use-root".into(),
            start,
            "eci-use-root",
            host_path("/", "/", "the host's root"),
        ),
        (
            "start-dev",
            "docker start eci-use-dev".into(),
            start,
            "eci-use-dev",
            Breach::Devices,
        ),
        (
            "start-net",
            "docker start eci-use-net".into(),
            start,
            "eci-use-net",
            Breach::HostNamespace(Namespace::Network),
        ),
        (
            "restart-pid",
            "docker restart -t 0 eci-use-pidhost".into(),
            start,
            "eci-use-pidhost",
            pid.clone(),
        ),
        (
            "exec-pid",
            "docker exec eci-use-pidhost true".into(),
            ContainerUse::Exec,
            "eci-use-pidhost",
            pid.clone(),
        ),
        (
            "exec-priv",
            "docker exec --privileged eci-use-running true".into(),
            ContainerUse::Exec,
            "eci-use-running",
            Breach::PrivilegedExec,
        ),
        (
            "attach-pid",
            "busybox timeout -s KILL 10 docker attach --no-stdin --sig-proxy=false eci-use-pidhost"
                .into(),
            ContainerUse::Attach,
            "eci-use-pidhost",
            pid.clone(),
        ),
    ];
    // Creates that join another container's namespaces (refused as creates, no container use).
    let joins: Vec<(&str, String, Breach)> = vec![
        (
            "join-pid",
            format!("docker run --rm --network none --pid=container:eci-use-pidhost {image} true"),
            joined(Namespace::Pid, "eci-use-pidhost"),
        ),
        (
            "join-ipc",
            format!("docker run --rm --network none --ipc=container:eci-use-ipchost {image} true"),
            joined(Namespace::Ipc, "eci-use-ipchost"),
        ),
        (
            "join-net",
            format!("docker run --rm --network=container:eci-use-nethost {image} true"),
            joined(Namespace::Network, "eci-use-nethost"),
        ),
        (
            "nethost",
            format!("docker run --rm --network host {image} true"),
            Breach::HostNamespace(Namespace::Network),
        ),
        (
            "volumes-from",
            format!("docker run --rm --network none --volumes-from eci-use-root {image} true"),
            host_path("/", "/", "the host's root"),
        ),
    ];
    // What stays served: an ordinary container started, exec'd into and joined.
    let served = [
        ("start-plain", "docker start -a eci-use-plain".to_owned()),
        ("exec-plain", "docker exec eci-use-running true".to_owned()),
        (
            "join-plain",
            format!(
                "docker run --rm --network none --pid=container:eci-use-running --ipc=container:eci-use-running {image} true"
            ),
        ),
        (
            "join-net-plain",
            format!("docker run --rm --network=container:eci-use-running {image} true"),
        ),
    ];
    let mut script = String::new();
    for (label, cmd) in cases
        .iter()
        .map(|c| (c.0, &c.1))
        .chain(joins.iter().map(|j| (j.0, &j.1)))
        .chain(served.iter().map(|s| (s.0, &s.1)))
    {
        script.push_str(&format!("{cmd}; echo case-{label}=$?; "));
    }
    let out = text(&sidecar.in_container(engine(), &script));
    let mut failures = Vec::new();
    for (label, _, what, name, breach) in &cases {
        let msg = profile_refused_use(*what, name, breach, SETTINGS_PATH);
        // The CLI shows no body when an attach is not upgraded: the audit names the reason.
        let shown = match what {
            ContainerUse::Attach => "unable to upgrade to tcp, received 403".to_owned(),
            _ => msg.clone(),
        };
        if !out.contains(&format!("case-{label}=1")) || !out.contains(&shown) {
            failures.push(format!("{label}: expected exit 1 and\n    {msg}"));
        }
    }
    for (label, _, breach) in &joins {
        let msg = refused(breach);
        if !out.contains(&format!("case-{label}=125")) || !out.contains(&msg) {
            failures.push(format!("{label}: expected exit 125 and\n    {msg}"));
        }
    }
    for (label, _) in &served {
        if !out.contains(&format!("case-{label}=0")) {
            failures.push(format!("{label}: expected exit 0"));
        }
    }
    assert!(failures.is_empty(), "{}\n---\n{out}", failures.join("\n"));
    // The exact text for one, as a user reads it.
    assert!(out.contains(&format!(
        "Error response from daemon: enhanced container isolation: starting container \"eci-use-priv\": privileged containers are not allowed for containers that use the docker socket; \
         if you wish to allow it, set eciAgent.containerProfile.allowPrivileged in {SETTINGS_PATH}"
    )), "{out}");
    let audit = sidecar.audit_lines();
    assert!(
        audit.iter().any(|l| l["verdict"] == "deny"
            && l["reason"] == "profile_host_namespace"
            && l["method"] == "POST"
            && l["target"]
                .as_str()
                .is_some_and(|t| t.contains("/containers/eci-use-pidhost/exec"))),
        "{audit:?}"
    );
    assert!(
        audit.iter().any(|l| l["verdict"] == "deny"
            && l["reason"] == "profile_host_namespace"
            && l["target"]
                .as_str()
                .is_some_and(|t| t.contains("/containers/eci-use-pidhost/attach"))),
        "{audit:?}"
    );

    // From the host every one of them reaches the engine. (`--privileged` cannot start on this
    // machine, whose bounding set lacks CAP_SYS_RESOURCE: that fails in the engine.)
    let host = [
        "start -a eci-use-cap",
        "start -a eci-use-root",
        "start -a eci-use-dev",
        "start -a eci-use-net",
        "restart -t 0 eci-use-pidhost",
        "exec eci-use-pidhost true",
        "exec eci-use-ipchost true",
    ];
    for cmd in host {
        let out = sidecar.docker().args(args(cmd)).output().unwrap();
        assert!(out.status.success(), "{cmd} from the host: {}", text(&out));
    }
    for joins in [
        "--network none --pid=container:eci-use-pidhost",
        "--network none --ipc=container:eci-use-ipchost",
        "--network=container:eci-use-nethost",
        "--network host",
    ] {
        let out = sidecar
            .docker()
            .args(["run", "--rm"])
            .args(args(joins))
            .args([image, "true"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{joins} from the host: {}",
            text(&out)
        );
    }
    for cmd in [
        "start eci-use-priv",
        "exec --privileged eci-use-running true",
    ] {
        let said = text(&sidecar.docker().args(args(cmd)).output().unwrap());
        assert!(
            !said.contains("enhanced container isolation"),
            "{cmd} from the host was refused: {said}"
        );
    }
    let _ = engine()
        .docker()
        .args(["rm", "-f"])
        .args(made.map(|m| m.0))
        .output();
}

#[test]
fn the_profile_relaxes_field_by_field() {
    let relaxed = sidecar::settings(
        r#"{"configurationFileVersion": 2,
            "enhancedContainerIsolation": {"value": true,
              "dockerSocketMount": {"imageList": {"images": ["*"]}}},
            "eciAgent": {"containerProfile": {"allowCapabilities": ["sys_admin"], "allowHostNamespaces": ["pid"]}}}"#,
    );
    let sidecar = Sidecar::start(engine(), relaxed);
    let image = engine().cli_image();
    let out = text(&sidecar.in_container(engine(),
        &format!(
            "docker run --rm --network none --cap-add SYS_ADMIN --pid=host {image} true; echo relaxed=$?; \
             docker run --rm --network none --ipc=host {image} true; echo ipc=$?"
        ),
    ));
    assert!(
        out.contains("relaxed=0"),
        "{out}\n{:?}",
        sidecar.audit_lines()
    );
    assert!(out.contains("ipc=125"), "{out}");
    assert!(
        out.contains(&refused(&Breach::HostNamespace(Namespace::Ipc))),
        "{out}"
    );
}

/// Plugins start what the create gate never sees: closed to containers under a deny list.
#[test]
fn plugin_install_is_refused() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &[]));
    let out = text(&sidecar.in_container(
        engine(),
        "docker plugin install --grant-all-permissions eci-test/no-such-plugin:1; echo install=$?",
    ));
    assert!(out.contains("install=1"), "{out}");
    assert!(
        out.contains(
            "enhanced container isolation: docker command \"/v1.41/plugins/privileges?remote="
        ) && out.contains("is blocked"),
        "{out}"
    );
    assert!(
        sidecar
            .audit_lines()
            .iter()
            .any(|l| l["verdict"] == "deny" && l["reason"] == "command_closed"),
        "{:?}",
        sidecar.audit_lines()
    );
}

/// An allow list grants what its commands need, never another command's own effect.
#[test]
fn allowing_build_grants_neither_push_nor_load() {
    let sidecar = Sidecar::start(
        engine(),
        sidecar::command_list("allow", &["build", "ps", "images"]),
    );
    let image = engine().cli_image();
    let out = text(&sidecar.in_container(engine(),
        &format!(
            "docker push {image}; echo push=$?; \
             echo nothing | docker load; echo load=$?; \
             mkdir /ctx && echo 'FROM {image}' > /ctx/Dockerfile && docker build -q /ctx; echo build=$?; \
             docker ps -q >/dev/null; echo ps=$?"
        ),
    ));
    for want in ["push=1", "load=1", "build=0", "ps=0"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        out.contains(
            "docker command \"/v1.41/images/docker.io/eci-test/cli/push?tag=1\" is blocked"
        ),
        "{out}"
    );
    assert!(
        out.contains("docker command \"/v1.41/images/load?quiet=1\" is blocked"),
        "{out}"
    );
}

/// `run` does not grant a copy into another container.
#[test]
fn allowing_run_does_not_grant_cp_into_another_container() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("allow", &["run"]));
    let image = engine().cli_image();
    let target = "eci-profile-cp-target";
    let created = engine()
        .docker()
        .args(["create", "--name", target, image, "true"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{}", text(&created));
    let out = text(&sidecar.in_container(
        engine(),
        &format!("docker cp /bin/busybox {target}:/planted; echo cp=$?"),
    ));
    let _ = engine().docker().args(["rm", "-f", target]).output();
    assert!(out.contains("cp=1"), "{out}");
    assert!(
        out.contains(&format!("/containers/{target}/archive?")) && out.contains("is blocked"),
        "{out}"
    );
}

/// `docker import` shares `POST /images/create` with `docker pull`; the engine tells them apart by
/// the `fromImage` form value. Listing `pull` grants no import, denying `import` blocks no pull.
#[test]
fn import_is_its_own_command() {
    let sidecar = Sidecar::start(
        engine(),
        sidecar::command_list("allow", &["pull", "images"]),
    );
    let script = "tar -c -f /t.tar -C /etc hostname; \
                  docker import /t.tar eci-imported:1 >/dev/null; echo import=$?; \
                  docker pull eci-test/no-such-image:1; echo pull=$?";
    let out = text(&sidecar.in_container(engine(), script));
    assert!(out.contains("import=1"), "{out}");
    assert!(
        out.contains("docker command \"/v1.41/images/create?fromSrc=-")
            && out.contains("is blocked"),
        "{out}"
    );
    assert!(
        !out.contains("/v1.41/images/create?fromImage="),
        "pull was blocked under allow [pull]: {out}"
    );
    sidecar.set_policy(sidecar::command_list("deny", &["import"]));
    let out = text(&sidecar.in_container(engine(), script));
    assert!(out.contains("import=1"), "{out}");
    assert!(
        out.contains("docker command \"/v1.41/images/create?fromSrc=-"),
        "{out}"
    );
    assert!(
        !out.contains("/v1.41/images/create?fromImage="),
        "pull was blocked under deny [import]: {out}"
    );
    sidecar.set_policy(sidecar::command_list("deny", &["pull"]));
    let out = text(&sidecar.in_container(engine(), script));
    assert!(out.contains("import=0"), "import under deny [pull]: {out}");
    assert!(out.contains("pull=1"), "{out}");
    assert!(
        out.contains("docker command \"/v1.41/images/create?fromImage=")
            && out.contains("is blocked"),
        "{out}"
    );
    let _ = engine().docker().args(["rmi", "eci-imported:1"]).output();
}

/// The engine reads `fromImage` from a form body too, before the query: a `pull` by its query
/// with a form body that empties `fromImage` is an import (here of a URL), which `pull` does
/// not grant.
#[test]
fn a_form_body_does_not_turn_a_pull_into_an_import() {
    let sidecar = Sidecar::start_as_container(engine(), sidecar::command_list("allow", &["pull"]));
    let (status, answer) = sidecar::request(
        sidecar.socket(),
        "POST",
        "/v1.41/images/create?fromImage=eci-test/no-such-image&tag=1",
        &["Content-Type: application/x-www-form-urlencoded"],
        b"fromImage=&fromSrc=http%3A%2F%2F127.0.0.1%3A9%2Fsmuggled.tar&repo=eci-smuggled",
    );
    assert!(
        !answer.contains("smuggled") && !answer.contains("127.0.0.1:9"),
        "the engine imported: {status}\n{answer}"
    );
}

/// JSON of a request straight to the engine (the host's own API use).
fn engine_json(method: &str, target: &str, body: &str) -> serde_json::Value {
    let (status, answer) = sidecar::request(
        engine().socket(),
        method,
        target,
        &["Content-Type: application/json"],
        body.as_bytes(),
    );
    assert!((200..300).contains(&status), "{method} {target}: {answer}");
    let json = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    // Chunked or not: the JSON object is between the first `{` and the last `}`.
    let json = &json[json.find('{').unwrap_or(0)..=json.rfind('}').unwrap_or(0)];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// An exec the host created (or anyone, by ID) is started with the power it was created with:
/// a container caller may not start or resize a privileged exec, or one in a container the
/// profile refuses, while an ordinary exec is served.
#[test]
fn a_socket_holder_cannot_start_an_exec_it_could_not_create() {
    let sidecar = Sidecar::start_as_container(engine(), sidecar::command_list("deny", &[]));
    let image = engine().cli_image();
    for (name, opts) in [
        ("eci-exec-plain", "--network none"),
        ("eci-exec-pidhost", "--network none --pid=host"),
    ] {
        let out = engine()
            .docker()
            .args(["run", "-d", "--name", name])
            .args(args(opts))
            .args([image, "sleep", "600"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let exec = |container: &str, privileged: bool| {
        let created = engine_json(
            "POST",
            &format!("/v1.41/containers/{container}/exec"),
            &format!(r#"{{"Cmd":["true"],"Privileged":{privileged}}}"#),
        );
        created["Id"].as_str().unwrap().to_owned()
    };
    let privileged = exec("eci-exec-plain", true);
    let in_pidhost = exec("eci-exec-pidhost", false);
    let plain = exec("eci-exec-plain", false);
    let start = |id: &str| {
        sidecar::request(
            sidecar.socket(),
            "POST",
            &format!("/v1.41/exec/{id}/start"),
            &["Content-Type: application/json"],
            br#"{"Detach":true}"#,
        )
    };
    let resize = |id: &str| {
        sidecar::request(
            sidecar.socket(),
            "POST",
            &format!("/v1.41/exec/{id}/resize?h=10&w=10"),
            &[],
            b"",
        )
    };
    let mut failures = Vec::new();
    for (label, id, want) in [
        ("resize-privileged", &privileged, "privileged"),
        ("start-privileged", &privileged, "privileged"),
        ("resize-pidhost", &in_pidhost, "host's PID namespace"),
        ("start-pidhost", &in_pidhost, "host's PID namespace"),
    ] {
        let (status, answer) = if label.starts_with("resize") {
            resize(id)
        } else {
            start(id)
        };
        if status != 403
            || !answer.contains("enhanced container isolation")
            || !answer.contains(want)
        {
            failures.push(format!("{label}: {status}\n{answer}"));
        }
    }
    let (status, answer) = start(&plain);
    if status != 200 {
        failures.push(format!("start-plain: {status}\n{answer}"));
    }
    let _ = engine()
        .docker()
        .args(["rm", "-f", "eci-exec-plain", "eci-exec-pidhost"])
        .output();
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// `docker cp` reads and writes through the container's mounts: into a container that binds the
/// host's `/`, it writes the host's files. Judged like exec, on the container as stored.
#[test]
fn a_socket_holder_cannot_cp_through_a_host_root_container() {
    let sidecar = Sidecar::start(engine(), sidecar::command_list("deny", &[]));
    let image = engine().cli_image();
    let scratch = engine().scratch("cp-planted");
    let planted = scratch.join("planted");
    for (name, opts) in [
        ("eci-cp-root", "--network none -v /:/host"),
        ("eci-cp-plain", "--network none"),
    ] {
        let out = engine()
            .docker()
            .args(["create", "--name", name])
            .args(args(opts))
            .args([image, "true"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{name}: {}", text(&out));
    }
    let out = text(&sidecar.in_container(
        engine(),
        &format!(
            "docker cp /etc/hostname eci-cp-root:/host{}; echo cpin=$?; \
             docker cp eci-cp-root:/host/etc/hostname - >/dev/null; echo cpout=$?; \
             docker cp /etc/hostname eci-cp-plain:/planted; echo cpplain=$?",
            planted.display()
        ),
    ));
    let host_wrote = planted.exists();
    // From the host, the same copy is served.
    let host = sidecar
        .docker()
        .args(["cp", "eci-cp-root:/host/etc/hostname", "-"])
        .output()
        .unwrap();
    let _ = engine()
        .docker()
        .args(["rm", "-f", "eci-cp-root", "eci-cp-plain"])
        .output();
    assert!(
        !host_wrote,
        "cp wrote the host's {}: {out}",
        planted.display()
    );
    for want in ["cpin=1", "cpout=1", "cpplain=0"] {
        assert!(out.contains(want), "{want}: {out}");
    }
    assert!(
        out.contains(
            "enhanced container isolation: copying files to or from container \"eci-cp-root\""
        ),
        "{out}"
    );
    assert!(host.status.success(), "cp from the host: {}", text(&host));
}

/// The engine's exec root (`--exec-root`: its runtime state, containerd's shims and sockets) is
/// not in `GET /info`; `eciAgent.containerProfile.engineExecRoot` says where it is (default
/// `/var/run/docker`). This engine's is private.
#[test]
fn the_engine_exec_root_is_a_setting() {
    let exec_root = engine().socket().parent().unwrap().join("exec");
    assert!(exec_root.is_dir(), "{}", exec_root.display());
    let exec_root = exec_root.display().to_string();
    let settings = sidecar::settings(&format!(
        r#"{{"configurationFileVersion": 2,
            "enhancedContainerIsolation": {{"value": true,
              "dockerSocketMount": {{"imageList": {{"images": ["*"]}}}}}},
            "eciAgent": {{"containerProfile": {{"engineExecRoot": "{exec_root}"}}}}}}"#
    ));
    let sidecar = Sidecar::start(engine(), settings);
    let image = engine().cli_image();
    let out = text(&sidecar.in_container(
        engine(),
        &format!(
            "docker run --rm --network none -v {exec_root}:/x:ro {image} true; echo execroot=$?"
        ),
    ));
    assert!(out.contains("execroot=125"), "{out}");
    assert!(
        out.contains(&refused(&host_path(
            &exec_root,
            &exec_root,
            "the engine's exec root"
        ))),
        "{out}"
    );
}

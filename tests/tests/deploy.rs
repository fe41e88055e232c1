//! The deployment files are checked against the real agent: every `eci-agent` command line in
//! them parses with the agent's own clap `Cli`, the paths they pass are the ones they mount or
//! create, the settings they ship load, and the Kubernetes manifest has the privileges, host
//! mounts and probes the agent needs.

use std::path::{Path, PathBuf};

use clap::Parser as _;
use eci_agent::{
    agent::Args as RunArgs,
    cli::{Cli, Command},
    load::Args as LoadArgs,
};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A systemd unit file: `(section, key, value)` in order, continuation lines joined.
fn unit_entries(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut pending = String::new();
    for line in text.lines() {
        let line = line.trim();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with(';'))
        {
            continue;
        }
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            pending.push(' ');
            continue;
        }
        let full = std::mem::take(&mut pending) + line;
        if let Some(name) = full.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((k, v)) = full.split_once('=') {
            out.push((section.clone(), k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn values<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

/// Parses an `eci-agent …` argument vector with the real CLI; it must be `run`.
fn run_args(argv: &[String]) -> RunArgs {
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}:\n{e}"));
    match cli.command {
        Command::Run(args) => args,
        other => panic!("expected `run`, got {other:?}"),
    }
}

/// Parses an `eci-agent …` argument vector with the real CLI; it must be `load`.
fn load_args(argv: &[String]) -> LoadArgs {
    let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{argv:?}:\n{e}"));
    match cli.command {
        Command::Load(args) => args,
        other => panic!("expected `load`, got {other:?}"),
    }
}

fn words(values: Vec<&str>) -> Vec<String> {
    values
        .iter()
        .flat_map(|v| v.split_whitespace())
        .map(str::to_owned)
        .collect()
}

fn has(values: &[String], unit: &str) -> bool {
    values.iter().any(|u| u == unit)
}

fn exec_start(unit: &[(String, String, String)]) -> Vec<String> {
    let exec = values(unit, "Service", "ExecStart");
    assert_eq!(exec.len(), 1, "{exec:?}");
    let argv: Vec<String> = exec[0].split_whitespace().map(str::to_owned).collect();
    assert!(argv[0].ends_with("/eci-agent"), "{argv:?}");
    argv
}

/// `/var/run` is a symlink to `/run` on every systemd host.
fn canonical_run(path: &Path) -> PathBuf {
    path.strip_prefix("/var/run")
        .map(|rest| Path::new("/run").join(rest))
        .unwrap_or_else(|_| path.to_owned())
}

#[test]
fn systemd_unit_runs_the_agent_in_front_of_the_private_engine_socket() {
    let unit = unit_entries(&read("deploy/systemd/eci-agent.service"));
    let requires = words(values(&unit, "Unit", "Requires"));
    let after = words(values(&unit, "Unit", "After"));
    for needed in [
        "eci-agent.socket",
        "docker.socket",
        "eci-agent-pins.service",
    ] {
        assert!(has(&requires, needed), "Requires= {needed}: {requires:?}");
        assert!(has(&after, needed), "After= {needed}: {after:?}");
    }
    // A restart of the engine must not restart the agent, and the agent's start (adoption asks
    // the engine) must not wait for an engine that waits for it.
    assert!(!has(&requires, "docker.service"), "{requires:?}");
    assert!(!has(
        &words(values(&unit, "Unit", "Before")),
        "docker.service"
    ));
    assert_eq!(values(&unit, "Service", "Type"), ["notify"]);
    assert_eq!(values(&unit, "Service", "Delegate"), ["yes"]);
    assert_eq!(values(&unit, "Service", "Restart"), ["on-failure"]);
    assert_eq!(
        values(&unit, "Service", "RestartPreventExitStatus"),
        [eci_agent::cli::EXIT_OCCUPIED.to_string().as_str()]
    );
    assert!(
        values(&unit, "Service", "ExecReload")
            .iter()
            .any(|v| v.contains("-HUP")),
    );
    // The pins are kept across stops: nothing unloads.
    for key in ["ExecStop", "ExecStopPost", "ExecStartPre"] {
        assert!(
            values(&unit, "Service", key)
                .iter()
                .all(|v| !v.contains("unload")),
            "{key} unloads"
        );
    }
    let args = run_args(&exec_start(&unit));
    assert_eq!(args.host.listen, Path::new("/var/run/docker.sock"));
    assert!(
        !args.allow_no_lsm,
        "the deployed agent must not run without teeth"
    );
    assert!(!args.dry_run);
    assert!(args.metrics.is_some());
    assert_eq!(args.host.pin.pin_dir, Path::new("/sys/fs/bpf/eci"));

    // The drop-in moves docker.socket to the engine path the agent forwards to, private, and
    // only once the programs are pinned.
    let drop_in = unit_entries(&read(
        "deploy/systemd/docker.socket.d/eci-private-socket.conf",
    ));
    assert_eq!(
        values(&drop_in, "Socket", "ListenStream"),
        ["", args.host.engine.to_str().unwrap()],
        "the drop-in must reset ListenStream, then listen on --engine"
    );
    assert_eq!(values(&drop_in, "Socket", "SocketMode"), ["0600"]);
    assert_eq!(values(&drop_in, "Socket", "SocketUser"), ["root"]);
    for key in ["Requires", "After"] {
        assert!(
            has(
                &words(values(&drop_in, "Unit", key)),
                "eci-agent-pins.service"
            ),
            "docker.socket {key}= eci-agent-pins.service"
        );
    }

    // The public socket: systemd's, at --listen, one listening socket, there before the engine
    // restores its containers, after the pins.
    let socket = unit_entries(&read("deploy/systemd/eci-agent.socket"));
    let listen = values(&socket, "Socket", "ListenStream");
    assert_eq!(listen.len(), 1, "{listen:?}");
    assert_eq!(
        canonical_run(Path::new(listen[0])),
        canonical_run(&args.host.listen)
    );
    assert_eq!(values(&socket, "Socket", "Accept"), ["no"]);
    assert_eq!(values(&socket, "Socket", "SocketMode"), ["0660"]);
    assert_eq!(values(&socket, "Socket", "SocketGroup"), ["docker"]);
    assert!(has(
        &words(values(&socket, "Unit", "Before")),
        "docker.service"
    ));
    assert!(has(
        &words(values(&socket, "Unit", "Requires")),
        "eci-agent-pins.service"
    ));
    assert!(has(
        &words(values(&socket, "Install", "WantedBy")),
        "sockets.target"
    ));

    // The pins: before every socket, with the run's own paths and trust.
    let pins = unit_entries(&read("deploy/systemd/eci-agent-pins.service"));
    assert_eq!(values(&pins, "Unit", "DefaultDependencies"), ["no"]);
    let before = words(values(&pins, "Unit", "Before"));
    for unit in ["sysinit.target", "docker.socket", "eci-agent.socket"] {
        assert!(has(&before, unit), "Before= {unit}: {before:?}");
    }
    assert_eq!(values(&pins, "Service", "Type"), ["oneshot"]);
    assert_eq!(values(&pins, "Service", "RemainAfterExit"), ["yes"]);
    let load = load_args(&exec_start(&pins));
    assert_eq!(load.host, args.host);

    // The header's install steps install every unit shipped, and enable each.
    let header = read("deploy/systemd/eci-agent.service");
    for file in [
        "eci-agent-pins.service",
        "eci-agent.socket",
        "eci-agent.service",
        "docker.socket.d/eci-private-socket.conf",
    ] {
        assert!(
            header.contains(&format!("deploy/systemd/{file}")),
            "the install steps do not install {file}"
        );
    }
    for enable in [
        "enable --now eci-agent-pins.service",
        "enable --now eci-agent.socket",
        "enable --now eci-agent.service",
    ] {
        assert!(header.contains(enable), "the install steps lack `{enable}`");
    }
    // The public socket before the engine restarts the containers that mount it.
    let socket_at = header.find("enable --now eci-agent.socket");
    let engine_at = header.find("start docker.socket docker.service");
    assert!(
        socket_at.is_some() && engine_at.is_some() && socket_at < engine_at,
        "the install steps must start eci-agent.socket before the engine starts again"
    );
}

fn docs() -> Vec<Yaml> {
    YamlLoader::load_from_str(&read("deploy/kubernetes/daemonset.yaml")).expect("valid YAML")
}

fn kind<'a>(docs: &'a [Yaml], kind: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn daemonset_pod_installs_the_agent_on_its_node_with_the_settings_and_a_probe() {
    let docs = docs();
    let ds = kind(&docs, "DaemonSet");
    assert_eq!(ds["apiVersion"].as_str(), Some("apps/v1"));
    let spec = &ds["spec"]["template"]["spec"];
    // nsenter --target 1 reaches the node's init only in the host's pid namespace.
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    assert_eq!(spec["automountServiceAccountToken"].as_bool(), Some(false));
    let containers = spec["containers"].as_vec().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));

    // The command parses as `eci-agent install`, the node's / mounted at --host-root.
    let mut argv = strings(&c["command"]);
    argv.extend(strings(&c["args"]));
    let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}:\n{e}"));
    let Command::Install(args) = cli.command else {
        panic!("the pod does not run `eci-agent install`: {argv:?}");
    };
    assert!(!args.once, "the pod must stay to carry settings edits");
    let volumes = spec["volumes"].as_vec().expect("volumes");
    let mounts = c["volumeMounts"].as_vec().expect("volumeMounts");
    let mount_of = |volume: &Yaml| {
        mounts
            .iter()
            .find(|m| m["name"] == volume["name"])
            .unwrap_or_else(|| panic!("volume {:?} is not mounted", volume["name"]))
    };
    let root = volumes
        .iter()
        .find(|v| v["hostPath"]["path"].as_str() == Some("/"))
        .expect("a hostPath volume of the node's /");
    let root_mount = mount_of(root);
    assert_eq!(root_mount["mountPath"].as_str(), args.host_root.to_str());
    assert!(
        root_mount["readOnly"].as_bool() != Some(true),
        "the pod writes the node's files"
    );

    // Settings from the ConfigMap, mounted as a directory (subPath would never update), and
    // loadable by the agent.
    let cm = kind(&docs, "ConfigMap");
    let settings_volume = volumes
        .iter()
        .find(|v| !v["configMap"].is_badvalue())
        .expect("a configMap volume");
    assert_eq!(
        settings_volume["configMap"]["name"].as_str(),
        cm["metadata"]["name"].as_str()
    );
    let settings_mount = mount_of(settings_volume);
    assert!(settings_mount["subPath"].is_badvalue());
    let dir = Path::new(settings_mount["mountPath"].as_str().unwrap());
    let key = args
        .settings
        .strip_prefix(dir)
        .expect("--settings is in the ConfigMap's directory")
        .to_str()
        .unwrap();
    let json = cm["data"][key].as_str().expect("the settings key");
    eci_agent::settings::Settings::from_json_str(json, &args.settings)
        .expect("the shipped settings load");

    // Ready while the node's unit is active, asked of the node's systemd.
    let probe = strings(&c["readinessProbe"]["exec"]["command"]);
    assert_eq!(probe.first().map(String::as_str), Some("nsenter"));
    assert!(
        probe.windows(2).any(|w| w == ["--target", "1"]),
        "{probe:?}"
    );
    assert!(
        probe.ends_with(&[
            "is-active".into(),
            "--quiet".into(),
            "eci-agent.service".into()
        ]),
        "{probe:?}"
    );
    assert_eq!(
        ds["spec"]["selector"]["matchLabels"],
        ds["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn the_cli_check_rejects_what_the_deployment_tests_rely_on_it_rejecting() {
    // The flag checks above are only worth something if unknown flags fail to parse.
    assert!(Cli::try_parse_from(["eci-agent", "run", "--no-such-flag"]).is_err());
    assert!(
        Cli::try_parse_from([
            "eci-agent",
            "run",
            "--settings",
            "s",
            "--listen",
            "l",
            "--engine",
            "e",
            "--metrics",
            "not-an-address"
        ])
        .is_err()
    );
}

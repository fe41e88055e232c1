//! The cases, in the order they run. Later cases use what earlier ones leave: the holders (long
//! running containers that keep probing the socket) outlive their case so that the agent's
//! SIGKILL and restart can be judged on them.

use std::{fs, os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use anyhow::{Context as _, bail, ensure};

use super::{
    Case,
    fixture::{
        Audit, Holder, SETTINGS, Suite, WORK, cli_image, derived_image, docker, docker_ok,
        docker_refused, other_image, probe_here, probe_with_pid, socket_mount_denied,
    },
};
use crate::{
    guest::{self, CGROUP_ROOT, EARLY_PROBE_CGROUP, EARLY_PROBE_DIR, ENGINE_SOCK, PUBLIC_SOCK},
    probe_log::{self, ProbeLog, uptime},
};

const SOCK_BIND: &str = "/var/run/docker.sock:/var/run/docker.sock";

pub const ALL: &[Case] = &[
    Case {
        name: "sidecar serves the host's docker CLI",
        run: sidecar_serves_host,
    },
    Case {
        name: "allowed image mounts the socket and runs docker ps",
        run: allowed_runs_docker_ps,
    },
    Case {
        name: "unlisted image refused: -v",
        run: unlisted_dash_v,
    },
    Case {
        name: "unlisted image refused: --mount",
        run: unlisted_mount,
    },
    Case {
        name: "unlisted image refused: parent directory",
        run: unlisted_parent_dir,
    },
    Case {
        name: "re-tagged image refused",
        run: retagged_refused,
    },
    Case {
        name: "derived image refused without allowDerivedImages",
        run: derived_refused,
    },
    Case {
        name: "derived image passes with allowDerivedImages",
        run: derived_allowed,
    },
    Case {
        name: "commandList blocks push and build from a container",
        run: command_list_container,
    },
    Case {
        name: "commandList does not apply to the host",
        run: command_list_host,
    },
    Case {
        name: "profile: a privileged container from an allowed container is refused, from the host it runs",
        run: profile_privileged,
    },
    Case {
        name: "host channel: the host's docker CLI through the relay",
        run: host_channel,
    },
    Case {
        name: "host channel unreachable from containers",
        run: channel_unreachable,
    },
    Case {
        name: "kernel: unlisted cgroup reaches neither engine nor sidecar",
        run: unlisted_cgroup,
    },
    Case {
        name: "kernel: parent-directory mount under \"*\" revoked by reload",
        run: parent_dir_revoked,
    },
    Case {
        name: "kernel: running container revoked by reload, no restart",
        run: socket_holder_revoked,
    },
    Case {
        name: "kernel denials in the audit log and the metrics",
        run: denials_audited,
    },
    Case {
        name: "kernel: SIGKILL of the agent keeps the refusals",
        run: sigkill_keeps_refusals,
    },
    Case {
        name: "restarted agent resumes service",
        run: restart_resumes,
    },
    Case {
        name: "identity: a privileged container joining the agent's cgroup leaves the agent whole",
        run: agent_not_turned_against_itself,
    },
    Case {
        name: "identity: unprivileged migration through the host's cgroup tree is refused",
        run: unprivileged_migration_refused,
    },
    Case {
        name: "DaemonSet: its image, run by this engine as the manifest runs it, names what this node lacks (systemd) and writes nothing",
        run: daemonset_pod_without_systemd,
    },
    // Last, so that it covers the whole boot: the agent's SIGKILL and restart included.
    Case {
        name: "boot: an unlisted process probing both sockets from before the engine existed was never served",
        run: never_served_from_boot,
    },
];

fn sidecar_serves_host(_: &mut Suite) -> anyhow::Result<()> {
    let version = docker_ok(&["version", "--format", "{{.Server.Version}}"])?;
    ensure!(!version.trim().is_empty(), "no server version");
    let out = docker_ok(&["run", "--rm", &cli_image(), "echo", "hello"])?;
    guest::mark("first docker run done");
    ensure!(out.trim() == "hello", "container said {out:?}");
    Ok(())
}

fn allowed_runs_docker_ps(_: &mut Suite) -> anyhow::Result<()> {
    let out = docker_ok(&["run", "--rm", "-v", SOCK_BIND, &cli_image(), "docker", "ps"])?;
    ensure!(out.contains("CONTAINER ID"), "docker ps printed {out:?}");
    Ok(())
}

fn unlisted_dash_v(_: &mut Suite) -> anyhow::Result<()> {
    let image = other_image();
    docker_refused(
        &["run", "--rm", "-v", SOCK_BIND, &image, "true"],
        &socket_mount_denied(&image),
    )
}

fn unlisted_mount(_: &mut Suite) -> anyhow::Result<()> {
    let image = other_image();
    docker_refused(
        &[
            "run",
            "--rm",
            "--mount",
            "type=bind,source=/var/run/docker.sock,target=/var/run/docker.sock",
            &image,
            "true",
        ],
        &socket_mount_denied(&image),
    )
}

fn unlisted_parent_dir(_: &mut Suite) -> anyhow::Result<()> {
    let image = other_image();
    for bind in ["/var/run:/host-run", "/run:/host-run"] {
        docker_refused(
            &["run", "--rm", "-v", bind, &image, "true"],
            &socket_mount_denied(&image),
        )
        .with_context(|| format!("-v {bind}"))?;
    }
    Ok(())
}

/// `docker tag other allowed` must not pass: digests are compared, not names.
fn retagged_refused(suite: &mut Suite) -> anyhow::Result<()> {
    let allowed = cli_image();
    docker_ok(&["tag", &other_image(), &allowed])?;
    let result = docker_refused(
        &["run", "--rm", "-v", SOCK_BIND, &allowed, "true"],
        &socket_mount_denied(&allowed),
    );
    docker_ok(&["tag", &suite.cli_id, &allowed]).context("restoring the cli tag")?;
    result
}

fn derived_refused(_: &mut Suite) -> anyhow::Result<()> {
    let image = derived_image();
    docker_refused(
        &["run", "--rm", "-v", SOCK_BIND, &image, "true"],
        &socket_mount_denied(&image),
    )
}

fn derived_allowed(suite: &mut Suite) -> anyhow::Result<()> {
    suite.reload(&[&cli_image()], true)?;
    let result = docker_ok(&[
        "run",
        "--rm",
        "-v",
        SOCK_BIND,
        &derived_image(),
        "docker",
        "ps",
    ]);
    suite.reload(&[&cli_image()], false)?;
    let out = result?;
    ensure!(out.contains("CONTAINER ID"), "docker ps printed {out:?}");
    Ok(())
}

/// Runs `script` in a container of the allowed CLI image that holds the socket: a socket holder's
/// view of the engine.
fn socket_holder(script: &str) -> anyhow::Result<std::process::Output> {
    docker(&[
        "run",
        "--rm",
        "-v",
        SOCK_BIND,
        &cli_image(),
        "sh",
        "-c",
        script,
    ])
}

fn command_list_container(_: &mut Suite) -> anyhow::Result<()> {
    let blocked = "enhanced container isolation: docker command \"";
    for (what, script) in [
        ("push", format!("docker push {}", cli_image())),
        (
            "build",
            format!(
                "echo FROM {} | docker build -t eci/in-container:1 -",
                cli_image()
            ),
        ),
    ] {
        let out = socket_holder(&script)?;
        let text = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{what} from a container succeeded");
        ensure!(
            text.contains(blocked) && text.contains(&format!("/{what}")) && text.contains(SETTINGS),
            "{what} from a container failed, but not with the commandList message: {}",
            text.trim()
        );
    }
    Ok(())
}

/// The container-caller profile: a socket holder cannot start a privileged container (host root
/// one step away); the host can.
fn profile_privileged(_: &mut Suite) -> anyhow::Result<()> {
    let out = socket_holder(&format!(
        "docker run --rm --privileged {} true",
        cli_image()
    ))?;
    let text = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "a privileged container started from a container ran"
    );
    ensure!(
        text.contains(
            "enhanced container isolation: privileged containers are not allowed for containers that use the docker socket"
        ),
        "the privileged container was refused, but not by the profile: {}",
        text.trim()
    );
    docker_ok(&["run", "--rm", "--privileged", &cli_image(), "true"])
        .context("a privileged container from the host")?;
    Ok(())
}

fn command_list_host(_: &mut Suite) -> anyhow::Result<()> {
    docker_ok(&["push", &cli_image()]).context("push from the host")?;
    let ctx = Path::new(WORK).join("host-build");
    fs::create_dir_all(&ctx)?;
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM {}\nLABEL built-by=host\n", cli_image()),
    )?;
    docker_ok(&[
        "build",
        "-q",
        "-t",
        "eci/host-built:1",
        &ctx.to_string_lossy(),
    ])
    .context("build from the host")?;
    Ok(())
}

/// The host side runs its checks (docker version, a build that the commandList would refuse to a
/// container) through the channel while this waits; it writes its verdict into the share.
fn host_channel(_: &mut Suite) -> anyhow::Result<()> {
    let done = guest::share("host-channel.result");
    let _ = fs::remove_file(&done);
    println!("evm: host-channel ready");
    guest::wait_for(
        "the host's channel checks",
        Duration::from_secs(300),
        || done.exists(),
    )?;
    let verdict = fs::read_to_string(&done)?;
    match verdict.trim() {
        "ok" => Ok(()),
        other => bail!("host side: {other}"),
    }
}

/// Only the relay's network namespace has the network device: containers, with the host's
/// network or their own, and everything else in the VM find nothing listening.
fn channel_unreachable(_: &mut Suite) -> anyhow::Result<()> {
    let relay = format!("10.0.2.15:{}", crate::guest::RELAY_PORT);
    let loopback = format!("127.0.0.1:{}", crate::guest::RELAY_PORT);
    for (network, target) in [
        ("host", relay.as_str()),
        ("host", loopback.as_str()),
        ("default", relay.as_str()),
    ] {
        let out = docker(&[
            "run",
            "--rm",
            "--network",
            network,
            &other_image(),
            "/eci/evm",
            "probe",
            "tcp",
            target,
        ])?;
        let word = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        // Exit 1 with an errno word: the probe ran and its connect failed (125+ is docker's own).
        ensure!(
            out.status.code() == Some(1) && word.starts_with('E'),
            "a container on network {network} connecting to {target}: {word:?} ({}) {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let word = probe_here(None, &["tcp", &relay])?;
    ensure!(
        word.starts_with('E'),
        "the VM's own namespace reaches the relay: {word}"
    );
    Ok(())
}

fn unlisted_cgroup(_: &mut Suite) -> anyhow::Result<()> {
    for socket in [ENGINE_SOCK, PUBLIC_SOCK] {
        let word = probe_here(Some("eci-probe"), &["unix", socket])?;
        ensure!(
            word == "EPERM",
            "an unlisted cgroup connecting to {socket}: {word}"
        );
    }
    // Controls: the trusted host cgroup reaches the sidecar, and still not the engine.
    let word = probe_here(None, &["unix", PUBLIC_SOCK])?;
    ensure!(
        word == "ok",
        "the trusted cgroup connecting to {PUBLIC_SOCK}: {word}"
    );
    let word = probe_here(None, &["unix", ENGINE_SOCK])?;
    ensure!(
        word == "EPERM",
        "the trusted cgroup connecting to {ENGINE_SOCK}: {word}"
    );
    Ok(())
}

fn parent_dir_revoked(suite: &mut Suite) -> anyhow::Result<()> {
    suite.reload(&["*"], false)?;
    let holder = Holder::start(
        "parent-dir",
        &other_image(),
        &["-v", "/run:/host-run"],
        "/host-run/docker.sock",
    )?;
    suite.holders.push(holder);
    let holder = suite.holders.last().context("holder")?;
    holder.wait_for("ok").context("under \"*\"")?;
    suite.reload(&[&cli_image()], false)?;
    holder.wait_for("EPERM").context("after the reload")
}

fn socket_holder_revoked(suite: &mut Suite) -> anyhow::Result<()> {
    suite.reload(&[&cli_image()], false)?;
    let holder = Holder::start(
        "socket",
        &cli_image(),
        &["-v", SOCK_BIND],
        "/var/run/docker.sock",
    )?;
    suite.holders.push(holder);
    let holder = suite.holders.last().context("holder")?;
    holder.wait_for("ok").context("while its image is listed")?;
    // An empty list: no image may hold the socket (the parent-dir holder stays refused too).
    suite.reload(&[], false)?;
    holder.wait_for("EPERM").context("after the reload")
}

const DENIALS_TOTAL: &str = "eci_kernel_denials_total";

/// What the kernel refuses reaches the operator: one audit line per denial, with the process,
/// its cgroup, the container in it and the socket's path (the inode's, not the name the caller
/// used), and the denial counter. A process in an unlisted cgroup tries the engine socket; the
/// revoked holders keep trying the public socket (one through the parent directory's mount).
fn denials_audited(suite: &mut Suite) -> anyhow::Result<()> {
    ensure!(!suite.holders.is_empty(), "no holder container was started");
    // The holders keep being denied while this runs. The agent counts each denial, then writes
    // its line, one event at a time; so with the audit mark taken before the first scrape and
    // the lines read before the second, the only line the counter can miss is the one event in
    // flight when the mark was taken.
    let audit = Audit::now();
    let before = guest::metric(DENIALS_TOTAL)?;
    let (pid, word) = probe_with_pid(Some("eci-probe"), &["unix", ENGINE_SOCK])?;
    ensure!(
        word == "EPERM",
        "an unlisted cgroup connecting to {ENGINE_SOCK}: {word}"
    );
    let engine = fs::metadata(ENGINE_SOCK)?;
    let cgroup_id = fs::metadata(Path::new(CGROUP_ROOT).join("eci-probe"))?.ino();
    let line = audit.wait_for(&format!("pid {pid}"), |d| d["pid"] == pid)?;
    expect_fields(
        &line,
        &[
            ("comm", "evm".into()),
            ("cgroup", "/eci-probe".into()),
            ("cgroup_id", cgroup_id.into()),
            ("container_id", serde_json::Value::Null),
            ("path", ENGINE_SOCK.into()),
            ("dev", engine.dev().into()),
            ("ino", engine.ino().into()),
            ("hook", "unix_stream_connect".into()),
            ("verdict", "deny".into()),
            ("reason", "kernel_denied".into()),
        ],
    )
    .context("the unlisted cgroup's denial")?;

    let public = fs::metadata(PUBLIC_SOCK)?;
    for holder in &suite.holders {
        let id = docker_ok(&["inspect", "--format", "{{.Id}}", &holder.name])?
            .trim()
            .to_owned();
        let line = audit.wait_for(&format!("container {}", holder.name), |d| {
            d["container_id"] == id.as_str()
        })?;
        let pid = line["pid"].as_u64().unwrap_or(0);
        let cgroup = line["cgroup"].as_str().unwrap_or_default();
        ensure!(pid > 1, "{}: pid {pid} in {line}", holder.name);
        ensure!(
            cgroup.ends_with(&id),
            "{}: the cgroup {cgroup:?} is not the container's",
            holder.name
        );
        expect_fields(
            &line,
            &[
                ("comm", "evm".into()),
                ("path", PUBLIC_SOCK.into()),
                ("dev", public.dev().into()),
                ("ino", public.ino().into()),
                ("hook", "unix_stream_connect".into()),
                ("verdict", "deny".into()),
            ],
        )
        .with_context(|| format!("{}'s denial", holder.name))?;
    }
    // Every denial counts, the ones the holders keep causing too: at least those seen here. The
    // init's early probe is left out: its ~13 denials a second keep more than the one line in
    // flight that the bound allows queued at the mark.
    let early = format!("/{EARLY_PROBE_CGROUP}");
    let seen = audit
        .kernel_denials()?
        .iter()
        .filter(|d| d["cgroup"] != early.as_str())
        .count() as f64;
    let after = guest::metric(DENIALS_TOTAL)?;
    ensure!(
        after - before + 1.0 >= seen && seen >= 1.0 + suite.holders.len() as f64,
        "{DENIALS_TOTAL} went from {before} to {after}, while the audit log got {seen} kernel \
         denials"
    );
    Ok(())
}

/// Each `(field, value)` of an audit line, compared exactly.
fn expect_fields(
    line: &serde_json::Value,
    fields: &[(&str, serde_json::Value)],
) -> anyhow::Result<()> {
    let wrong: Vec<String> = fields
        .iter()
        .filter(|(key, want)| line[*key] != *want)
        .map(|(key, want)| format!("{key} is {} (expected {want})", line[*key]))
        .collect();
    ensure!(wrong.is_empty(), "{}: {line}", wrong.join(", "));
    Ok(())
}

fn sigkill_keeps_refusals(suite: &mut Suite) -> anyhow::Result<()> {
    ensure!(!suite.holders.is_empty(), "no holder container was started");
    suite.kill_agent()?;
    // Nobody serves the sidecar now: the trusted cgroup finds it closed, not forbidden.
    let word = probe_here(None, &["unix", PUBLIC_SOCK])?;
    ensure!(
        word == "ECONNREFUSED",
        "after SIGKILL the sidecar socket gives {word}"
    );
    // The kernel judges a connect at the listener, and the sidecar's died with the agent: the
    // holders find it closed too. The engine's listener lives on, and stays refused.
    for holder in &suite.holders {
        holder.wait_for("ECONNREFUSED")?;
    }
    let word = probe_here(Some("eci-probe"), &["unix", ENGINE_SOCK])?;
    ensure!(
        word == "EPERM",
        "an unlisted cgroup reaches the engine after SIGKILL: {word}"
    );
    Ok(())
}

fn restart_resumes(suite: &mut Suite) -> anyhow::Result<()> {
    let audit = Audit::now();
    if suite.agent.is_none() {
        suite.start_agent()?;
    }
    let out = docker_ok(&["run", "--rm", &cli_image(), "echo", "again"])?;
    ensure!(out.trim() == "again", "container said {out:?}");
    for holder in &suite.holders {
        // The restarted agent binds a new socket (a new inode): a holder that mounted the old
        // socket file itself still has that one, where nobody listens any more; the one that
        // mounted the directory reaches the new socket, and is refused.
        let want = if holder.name == "socket" {
            "ECONNREFUSED"
        } else {
            "EPERM"
        };
        holder
            .wait_for(want)
            .with_context(|| format!("holder {}", holder.name))?;
    }
    let (pid, word) = probe_with_pid(Some("eci-probe"), &["unix", ENGINE_SOCK])?;
    ensure!(
        word == "EPERM",
        "an unlisted cgroup reaches the engine: {word}"
    );
    // The restarted agent reads the kernel's denials again (the programs and maps were adopted).
    audit
        .wait_for(&format!("pid {pid} after the restart"), |d| {
            d["pid"] == pid && d["path"] == ENGINE_SOCK
        })
        .map(drop)
}

/// A privileged, host-namespaced, unlisted container writes its shell's pid into the agent's
/// own cgroup, then every container is judged again (a reload). The agent judges a container by
/// the cgroup the engine put it in, never by where its processes say they are, so no verdict
/// lands on the agent's cgroup and the agent still reaches the engine. (Whether the write
/// itself is refused is the kernel's part: the kernel suite's cgroup-protection cases.)
fn agent_not_turned_against_itself(suite: &mut Suite) -> anyhow::Result<()> {
    let agent = suite.agent.as_ref().context("the agent is not running")?;
    let cgroup = fs::read_to_string(format!("/proc/{}/cgroup", agent.id()))?;
    let rel = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("the agent's cgroup")?
        .trim_start_matches('/')
        .to_owned();
    let procs = Path::new(CGROUP_ROOT).join(rel).join("cgroup.procs");
    let script = format!(
        "echo $$ > {} 2>/dev/null && echo moved || echo refused; sleep 60",
        procs.display()
    );
    let id = docker_ok(&[
        "run",
        "-d",
        "--privileged",
        "--cgroupns=host",
        "--pid=host",
        &other_image(),
        "sh",
        "-c",
        &script,
    ])?;
    let id = id.trim().to_owned();
    std::thread::sleep(Duration::from_millis(500));
    let reloaded = suite.reload(&[&cli_image()], false);
    let version = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    let said = docker(&["logs", &id]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let _ = docker(&["rm", "-f", &id]);
    reloaded?;
    let version = version.with_context(|| {
        format!("after the container's attempt ({said:?}) the agent no longer reaches the engine")
    })?;
    ensure!(!version.trim().is_empty(), "no server version");
    Ok(())
}

/// Unprivileged migration (issue 9): a container given the host's cgroup namespace and tree
/// (`--cgroupns=host -v /sys/fs/cgroup:/cg`, no other privilege) writes its shell's pid into the
/// `cgroup.procs` of the agent's cgroup, the trusted host cgroup and the root; a privileged one
/// with the host's pids (`--privileged --cgroupns=host --pid=host`) moves the agent *out* into a
/// cgroup it made under its own. Each write is refused (`file_open`), and afterwards the agent
/// still reaches the engine (no lockout). Short scripts: the suite runs under a time limit on a
/// loaded machine.
fn unprivileged_migration_refused(suite: &mut Suite) -> anyhow::Result<()> {
    let agent = suite.agent.as_ref().context("the agent is not running")?;
    let agent_pid = agent.id();
    let cgroup = fs::read_to_string(format!("/proc/{agent_pid}/cgroup"))?;
    let agent_cgroup = cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("the agent's cgroup")?
        .trim_start_matches('/')
        .to_owned();
    // The subshell's stderr gets the shell's own message when the open is refused.
    let try_write = |what: &str, pid: &str, procs: &str| {
        format!(
            "if (echo {pid} > {procs}) 2>/tmp/e; then echo \"{what}: moved\"; \
             else echo \"{what}: $(cat /tmp/e)\"; fi; "
        )
    };
    let unprivileged = [
        try_write(
            "into the agent's cgroup",
            "$$",
            &format!("/cg/{agent_cgroup}/cgroup.procs"),
        ),
        try_write(
            "into the trusted cgroup",
            "$$",
            &format!("/cg/{}/cgroup.procs", guest::HOST_CGROUP),
        ),
        try_write("into the root", "$$", "/cg/cgroup.procs"),
    ]
    .concat();
    let said = docker_ok(&[
        "run",
        "--rm",
        "--cgroupns=host",
        "-v",
        "/sys/fs/cgroup:/cg",
        &other_image(),
        "sh",
        "-c",
        &unprivileged,
    ]);
    // Its own cgroup, as the host sees it (`0::/docker/<id>`).
    let out = [
        "own=$(sed -n 's/^0:://p' /proc/self/cgroup); mkdir -p /sys/fs/cgroup$own/m; ".to_owned(),
        try_write(
            "the agent out",
            &agent_pid.to_string(),
            "/sys/fs/cgroup$own/m/cgroup.procs",
        ),
    ]
    .concat();
    let said_out = docker_ok(&[
        "run",
        "--rm",
        "--privileged",
        "--cgroupns=host",
        "--pid=host",
        &other_image(),
        "sh",
        "-c",
        &out,
    ]);
    let version = docker_ok(&["version", "--format", "{{.Server.Version}}"]);
    let said = format!("{}{}", said?, said_out?);
    let version = version.with_context(|| {
        format!("after the containers' attempts ({said:?}) the agent no longer reaches the engine")
    })?;
    ensure!(!version.trim().is_empty(), "no server version");
    let lines: Vec<&str> = said.lines().collect();
    ensure!(
        lines.len() == 4 && lines.iter().all(|l| l.contains("Operation not permitted")),
        "not every write was refused with EPERM: {said:?}"
    );
    Ok(())
}

/// Fail closed from the first instant: the init started an unlisted root process probing both
/// sockets before the engine existed. Each socket's first answer is a refusal (the tag was on
/// its name before it was bound), and nothing served it since, through the agent's SIGKILL and
/// restart.
fn never_served_from_boot(_: &mut Suite) -> anyhow::Result<()> {
    let dir = Path::new(EARLY_PROBE_DIR);
    let log = ProbeLog::read(dir)?;
    let seen = || {
        log.changes
            .iter()
            .map(|c| format!("{:.2} {} {}", c.at, c.label, c.word))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (at, _) = probe_log::latest(dir).context("the early probe wrote no round")?;
    ensure!(
        at > uptime() - 5.0,
        "the early probe stopped probing at {at:.1} s"
    );
    if let Some(c) = log.served_since(0.0) {
        bail!(
            "served at {:.2} s on the {} socket (what it saw: {})",
            c.at,
            c.label,
            seen()
        );
    }
    for label in ["engine", "public"] {
        let first = log
            .first_answer(label)
            .with_context(|| format!("the {label} socket never answered ({})", seen()))?;
        ensure!(
            first.word == "EPERM",
            "the {label} socket first answered {} at {:.2} s, not EPERM ({})",
            first.word,
            first.at,
            seen()
        );
    }
    println!("e2e: early probe: {}", seen());
    Ok(())
}

/// The DaemonSet's pod (deploy/kubernetes/daemonset.yaml) installs the agent as systemd units:
/// the systemd-host tier proves that. Here its image runs under this VM's engine, through the
/// agent as a cri-dockerd node would create it, with the manifest's command, privileges, host pid
/// namespace and mounts; this node has no systemd, and the pod must say so and change nothing.
fn daemonset_pod_without_systemd(suite: &mut Suite) -> anyhow::Result<()> {
    const IMAGE: &str = "eci-agent:0.1.0";
    let tar = guest::share("pod/eci-agent.tar");
    let id = docker_ok(&[
        "import",
        "--change",
        "ENV PATH=/usr/local/bin:/usr/bin",
        &tar.to_string_lossy(),
        IMAGE,
    ])?;
    // It mounts the node's /, which holds the socket: listed by its ID, as the manifest says.
    suite.reload(&[&cli_image(), &format!("eci-agent@{}", id.trim())], false)?;
    let configmap = Path::new(WORK).join("configmap");
    fs::create_dir_all(&configmap)?;
    fs::copy(SETTINGS, configmap.join("admin-settings.json"))?;
    let settings_mount = format!("{}:/etc/eci:ro", configmap.display());
    let command = guest::pod_command()?;
    let mut args = vec![
        "run",
        "--rm",
        "--privileged",
        "--pid=host",
        "-v",
        "/:/host",
        "-v",
        &settings_mount,
        IMAGE,
    ];
    args.extend(command.iter().map(String::as_str));
    let out = docker(&args);
    suite.reload(&[&cli_image()], false)?;
    let out = out?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "the pod exited with {} (stderr: {stderr})",
        out.status
    );
    ensure!(
        stderr.contains("does not run systemd"),
        "the pod did not name what the node lacks: {stderr}"
    );
    for written in [
        "/etc/systemd/system/eci-agent.service",
        "/usr/local/bin/eci-agent",
        "/etc/eci/admin-settings.json",
    ] {
        ensure!(
            !Path::new(written).exists(),
            "the pod wrote {written} on a node it refused"
        );
    }
    Ok(())
}

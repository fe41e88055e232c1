//! The checks of each boot, in the order they run (later ones use what earlier ones left).

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};

use super::{
    ROOT_PROBE_DIR, Run,
    host::{self, CONTAINER_DIR, active_at, docker, is_active, main_pid, wait_until},
};
use crate::{
    e2e::fixture::{rootfs, settings_json, tar},
    probe_log::{self, ProbeLog, uptime},
};

pub(super) const ALLOWED: &str = "eci/allowed:1";
const UNLISTED: &str = "eci/other:1";
pub(super) const SETTINGS: &str = "/etc/eci/admin-settings.json";
const PUBLIC: &str = "/run/docker.sock";
/// The unlisted `--restart=always` container with the host's /run mounted.
pub(super) const RUN_HOLDER: &str = "shost-run";
/// The allowed `--restart=always` container holding the socket.
pub(super) const SOCK_HOLDER: &str = "shost-sock";
/// How many times an allowed container connects as it starts.
const AT_ONCE: usize = 20;

pub(super) fn dir_of(container: &str) -> PathBuf {
    Path::new(CONTAINER_DIR).join(container)
}

/// Boot 1: plain Docker first, then eci-agent installed as its unit's header says.
pub fn install(run: &mut Run) {
    run.case(
        "Debian's docker.service serves (before the install)",
        |run| {
            let at = wait_until(
                "the engine on /run/docker.sock",
                Duration::from_secs(150),
                || docker(&["version"]).is_ok(),
            )?;
            run.figure("engine ready (uptime s)", format!("{at:.1}"));
            Ok(())
        },
    );
    run.case("test images imported", |_| {
        let work = Path::new("/tmp/shost");
        fs::create_dir_all(work)?;
        let marker = work.join("marker");
        fs::write(&marker, "not the allowed image\n")?;
        rootfs(&work.join("allowed"), &[])?;
        rootfs(&work.join("other"), &[(&marker, "/eci/other")])?;
        docker(&[
            "import",
            &tar(&work.join("allowed"))?.to_string_lossy(),
            ALLOWED,
        ])?;
        docker(&[
            "import",
            &tar(&work.join("other"))?.to_string_lossy(),
            UNLISTED,
        ])?;
        Ok(())
    });
    run.case(
        "pre-existing --restart=always containers: unlisted with /run, allowed with the socket",
        |_| {
            start_holder(
                RUN_HOLDER,
                UNLISTED,
                "/run:/host-run",
                &[
                    "public=/host-run/docker.sock",
                    "engine=/host-run/eci/engine.sock",
                ],
            )?;
            start_holder(
                SOCK_HOLDER,
                ALLOWED,
                "/var/run/docker.sock:/var/run/docker.sock",
                &["public=/var/run/docker.sock"],
            )?;
            // Plain Docker serves everyone: the loops work (the engine socket's path exists only
            // once installed).
            for name in [RUN_HOLDER, SOCK_HOLDER] {
                wait_until(
                    &format!("{name} served by plain Docker"),
                    Duration::from_secs(60),
                    || {
                        probe_log::latest(&dir_of(name))
                            .is_some_and(|(_, words)| words.contains("public=served"))
                    },
                )?;
            }
            Ok(())
        },
    );
    let mut installed_at = f64::MAX;
    run.case(
        "install by eci-agent.service's header, which ends with `eci-agent status --check`",
        |run| {
            let started = uptime();
            host::script("/mnt/eci/install.sh", "install-steps.log")?;
            installed_at = uptime();
            run.figure(
                "install steps (s)",
                format!("{:.1}", installed_at - started),
            );
            Ok(())
        },
    );
    run.case(
        "settings: the allowed image listed by its ID; the agent reloads",
        |_| {
            let id = docker(&["image", "inspect", "--format", "{{.Id}}", ALLOWED])?;
            let settings = settings_json(&[&format!("eci/allowed@{}", id.trim())], false);
            crate::guest::write_whole(Path::new(SETTINGS), &serde_json::to_vec_pretty(&settings)?)?;
            wait_until(
                "the agent to log `settings reloaded`",
                Duration::from_secs(30),
                || agent_lines().is_ok_and(|l| l.iter().any(|m| m.contains("settings reloaded"))),
            )?;
            Ok(())
        },
    );
    run.case(
        "the allowed socket holder is served after the install",
        |run| {
            let at = wait_served(SOCK_HOLDER, installed_at, Duration::from_secs(60))?;
            run.figure(
                "holder served after the install (s)",
                format!("{:.1}", at - installed_at),
            );
            Ok(())
        },
    );
    run.case(
        "the unlisted /run container is not served once installed",
        |_| never_served(RUN_HOLDER, installed_at),
    );
    run.case(
        "journalctl -u eci-agent: the agent's lines, all JSON",
        journal_json,
    );
}

/// A cold boot of the installed host; `restart_engine`: then `systemctl restart docker`.
pub fn cold(run: &mut Run, restart_engine: bool) {
    let mut ready = f64::MAX;
    run.case("cold boot: eci-agent.service is ready", |run| {
        wait_until("eci-agent.service active", Duration::from_secs(180), || {
            is_active("eci-agent.service")
        })?;
        ready = active_at("eci-agent.service").context("no ActiveEnterTimestamp")?;
        for (what, unit) in [
            ("pins loaded", "eci-agent-pins.service"),
            ("engine socket listening", "docker.socket"),
            ("public socket listening", "eci-agent.socket"),
            ("engine started", "docker.service"),
            ("agent ready (READY=1)", "eci-agent.service"),
        ] {
            // Still activating is not "never": the engine may be restoring containers.
            let at = active_at(unit).map_or_else(
                || format!("not yet at {:.1}", uptime()),
                |t| format!("{t:.1}"),
            );
            run.figure(&format!("{what} (uptime s)"), at);
        }
        Ok(())
    });
    run.case(
        "cold boot: an unlisted root process probing both sockets from boot is never served",
        |run| {
            // Let it probe a while past readiness, when the engine restores its containers.
            let _ = wait_until("", Duration::from_secs(5), || uptime() > ready + 5.0);
            let log = ProbeLog::read(Path::new(ROOT_PROBE_DIR))?;
            let first = *log.starts.first().context("the root probe never started")?;
            run.figure("root probe started (uptime s)", format!("{first:.1}"));
            report_answers(run, "root probe", &log);
            let pins = active_at("eci-agent-pins.service").unwrap_or(f64::MAX);
            ensure!(
                first < pins,
                "the root probe started at {first:.1} s, after the pins ({pins:.1} s): it proves nothing"
            );
            if let Some(c) = log.served_since(0.0) {
                bail!("served at {:.2} s on the {} socket", c.at, c.label);
            }
            Ok(())
        },
    );
    run.case(
        "cold boot: the unlisted container with /run mounted is never served",
        |run| {
            // The engine restores its containers well after the agent is ready under TCG.
            wait_until(
                "the engine to restore the unlisted container",
                Duration::from_secs(180),
                || ProbeLog::read(&dir_of(RUN_HOLDER)).is_ok_and(|l| !l.starts.is_empty()),
            )?;
            let restored = uptime();
            let _ = wait_until("", Duration::from_secs(10), || uptime() > restored + 5.0);
            let log = ProbeLog::read(&dir_of(RUN_HOLDER))?;
            let start = *log
                .starts
                .first()
                .context("the engine did not restore the unlisted container in this boot")?;
            run.figure(
                "unlisted container started (uptime s)",
                format!("{start:.1}"),
            );
            report_answers(run, "unlisted container", &log);
            if let Some(c) = log.served_since(0.0) {
                bail!("served at {:.2} s on the {} socket", c.at, c.label);
            }
            Ok(())
        },
    );
    run.case("cold boot: the allowed socket holder is served", |run| {
        let at = wait_served(SOCK_HOLDER, 0.0, Duration::from_secs(90))?;
        let log = ProbeLog::read(&dir_of(SOCK_HOLDER))?;
        if let Some(start) = log.starts.first() {
            run.figure("allowed holder started (uptime s)", format!("{start:.1}"));
        }
        let first = log.first("public", "served", 0.0).map_or(at, |c| c.at);
        run.figure(
            "allowed holder first served (uptime s)",
            format!("{first:.1}"),
        );
        Ok(())
    });
    run.case(
        "journalctl -u eci-agent: the agent's lines, all JSON",
        journal_json,
    );
    if !restart_engine {
        return;
    }
    run.case(
        "systemctl restart docker: the agent stays, the holder is served again, the unlisted one is not",
        |run| {
            let pid = main_pid("eci-agent.service");
            let from = uptime();
            host::run_ok("systemctl", &["restart", "docker.service"], 180)?;
            let at = wait_until(
                "the allowed holder restarted and served",
                Duration::from_secs(90),
                || {
                    ProbeLog::read(&dir_of(SOCK_HOLDER))
                        .is_ok_and(|l| l.starts.iter().any(|s| *s > from))
                        && latest_served(SOCK_HOLDER, from)
                },
            )?;
            run.figure("holder served again after `restart docker` (s)", format!("{:.1}", at - from));
            ensure!(
                main_pid("eci-agent.service") == pid && is_active("eci-agent.service"),
                "eci-agent.service restarted with the engine (MainPID {pid} → {})",
                main_pid("eci-agent.service")
            );
            never_served(RUN_HOLDER, from)?;
            Ok(())
        },
    );
}

/// The second cold boot: an allowed image connecting at once, and
/// SIGKILL of the agent while the allowed container holds the socket.
pub fn cold_and_kill(run: &mut Run) {
    cold(run, false);
    run.case(
        &format!("an allowed container that connects as it starts, {AT_ONCE} times: no refusal"),
        at_once,
    );
    run.case(
        "SIGKILL of the agent while the allowed container holds the socket: the same socket, served again",
        |run| {
            let inode = fs::metadata(PUBLIC)?.ino();
            let pid = main_pid("eci-agent.service");
            ensure!(pid > 0, "eci-agent.service has no MainPID");
            let from = uptime();
            crate::sys::kill(pid, libc::SIGKILL)?;
            let back = wait_until("eci-agent.service active again", Duration::from_secs(60), || {
                let now = main_pid("eci-agent.service");
                now != 0 && now != pid && is_active("eci-agent.service")
            });
            let served = back.and_then(|_| {
                wait_until("the allowed holder served again", Duration::from_secs(60), || {
                    latest_served(SOCK_HOLDER, uptime() - 0.5)
                })
            });
            never_served(RUN_HOLDER, from)?;
            ensure!(
                fs::metadata(PUBLIC)?.ino() == inode,
                "the public socket's inode changed: {inode} → {}",
                fs::metadata(PUBLIC)?.ino()
            );
            // A restarted agent sits in a new cgroup under systemd; the guard's owner handoff at
            // cgroup_rmdir lets it take its pins again, so not being served is a failure.
            let at = served?;
            run.figure("holder served again after SIGKILL (s)", format!("{:.1}", at - from));
            Ok(())
        },
    );
}

/// `docker run -d --restart=always` of a probing loop with `mount`, writing to its own directory.
fn start_holder(name: &str, image: &str, mount: &str, targets: &[&str]) -> anyhow::Result<()> {
    let out = dir_of(name);
    fs::create_dir_all(&out)?;
    let volume = format!("{}:/out", out.display());
    let mut args = vec![
        "run",
        "-d",
        "--name",
        name,
        "--restart=always",
        "-v",
        mount,
        "-v",
        &volume,
        image,
        "/eci/evm",
        "shost",
        "probe-loop",
        "/out",
    ];
    args.extend_from_slice(targets);
    docker(&args)?;
    Ok(())
}

/// Whether `name`'s latest round, written after `after`, is all `served`.
fn latest_served(name: &str, after: f64) -> bool {
    probe_log::latest(&dir_of(name)).is_some_and(|(at, words)| {
        at > after && words.split_whitespace().all(|w| w.ends_with("=served"))
    })
}

/// Waits until `name`'s loop reports served in a round after `after`; the uptime then.
pub(super) fn wait_served(name: &str, after: f64, limit: Duration) -> anyhow::Result<f64> {
    wait_until(&format!("{name} served"), limit, || {
        latest_served(name, after)
    })
    .with_context(|| {
        format!(
            "{name}'s latest round: {}",
            probe_log::latest(&dir_of(name))
                .map_or("none".to_owned(), |(at, w)| format!("{at:.1} {w}"))
        )
    })
}

/// `name`'s loop was never served from `from` on (and it ran then).
pub(super) fn never_served(name: &str, from: f64) -> anyhow::Result<()> {
    let log = ProbeLog::read(&dir_of(name))?;
    ensure!(
        probe_log::latest(&dir_of(name)).is_some_and(|(at, _)| at > from),
        "{name} has not probed since {from:.1} s"
    );
    if let Some(c) = log.served_since(from) {
        bail!(
            "{name} was served at {:.2} s on the {} socket",
            c.at,
            c.label
        );
    }
    Ok(())
}

/// Figures: when each socket first answered the loop, and how.
fn report_answers(run: &Run, who: &str, log: &ProbeLog) {
    for label in ["public", "engine"] {
        let text = log
            .first_answer(label)
            .map_or("never".to_owned(), |c| format!("{} at {:.2}", c.word, c.at));
        run.figure(
            &format!("{who}: {label} socket first answered (uptime s)"),
            text,
        );
    }
}

/// An entry's MESSAGE: journald gives it as an array of bytes when it is not printable UTF-8
/// (and such a line is then judged as it is).
fn message(entry: &serde_json::Value) -> String {
    match &entry["MESSAGE"] {
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(bytes) => String::from_utf8_lossy(
            &bytes
                .iter()
                .filter_map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect::<Vec<u8>>(),
        )
        .into_owned(),
        other => other.to_string(),
    }
}

/// The agent's own journal lines (eci-agent run, under its unit).
pub(super) fn agent_lines() -> anyhow::Result<Vec<String>> {
    Ok(
        host::journal(&["_SYSTEMD_UNIT=eci-agent.service", "_COMM=eci-agent"])?
            .iter()
            .filter_map(|e| e["MESSAGE"].as_str().map(str::to_owned))
            .collect(),
    )
}

pub(super) fn journal_json(run: &mut Run) -> anyhow::Result<()> {
    // Every line any eci-agent process logged in this boot, wherever it ran from, in one query
    // (the agent keeps logging: two queries would count different moments).
    let everywhere = host::journal(&["_COMM=eci-agent"])?;
    let under_unit: Vec<String> = everywhere
        .iter()
        .filter(|e| e["_SYSTEMD_UNIT"] == "eci-agent.service")
        .map(message)
        .collect();
    let run_lines = everywhere
        .iter()
        .filter(|e| e["_SYSTEMD_UNIT"] != "eci-agent-pins.service")
        .count();
    run.figure(
        "agent lines in `journalctl -u eci-agent` / all its lines",
        format!("{} / {run_lines}", under_unit.len()),
    );
    ensure!(
        !under_unit.is_empty(),
        "journalctl -u eci-agent has no line of the agent"
    );
    if under_unit.len() != run_lines {
        let mut elsewhere: Vec<String> = everywhere
            .iter()
            .filter(|e| {
                e["_SYSTEMD_UNIT"] != "eci-agent-pins.service"
                    && e["_SYSTEMD_UNIT"] != "eci-agent.service"
            })
            .map(|e| {
                format!(
                    "{} {} {}",
                    e["_SYSTEMD_UNIT"], e["_SYSTEMD_CGROUP"], e["MESSAGE"]
                )
            })
            .collect();
        elsewhere.truncate(3);
        bail!(
            "only {} of the agent's {run_lines} lines are under its unit; others: {}",
            under_unit.len(),
            elsewhere.join(" ; ")
        );
    }
    for line in &under_unit {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        ensure!(
            parsed.is_ok_and(|v| v.is_object()),
            "a line of the agent is not a JSON object: {line}"
        );
    }
    ensure!(
        under_unit.iter().any(|l| l.contains("\"serving\"")),
        "no `serving` line among the agent's {} lines",
        under_unit.len()
    );
    Ok(())
}

/// An allowed image that connects to the socket as its first act, started `AT_ONCE` times (four
/// at a time): each refusal is a container the kernel judged before the agent allowed it.
fn at_once(run: &mut Run) -> anyhow::Result<()> {
    let words = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(Mutex::new(0usize));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (words, next) = (Arc::clone(&words), Arc::clone(&next));
            thread::spawn(move || {
                loop {
                    {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        if *n >= AT_ONCE {
                            return;
                        }
                        *n += 1;
                    }
                    let started = std::time::Instant::now();
                    let out = host::run(
                        "docker",
                        &[
                            "run",
                            "--rm",
                            "-v",
                            "/var/run/docker.sock:/var/run/docker.sock",
                            ALLOWED,
                            "/eci/evm",
                            "probe",
                            "ping",
                            "/var/run/docker.sock",
                            // Refused or served, however slow the answer: a refusal is the
                            // kernel's EPERM or the sidecar's status, never a late answer.
                            "30",
                        ],
                        90,
                    );
                    let word = match out {
                        Ok(o) if o.status.code() == Some(124) => {
                            "run-failed: timed out after 90 s".to_owned()
                        }
                        Ok(o) if !o.stdout.is_empty() => {
                            String::from_utf8_lossy(&o.stdout).trim().to_owned()
                        }
                        Ok(o) => {
                            format!("run-failed: {}", String::from_utf8_lossy(&o.stderr).trim())
                        }
                        Err(err) => format!("run-failed: {err:#}"),
                    };
                    println!(
                        "shost: at-once run: {word} ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    );
                    words.lock().unwrap_or_else(|e| e.into_inner()).push(word);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let words = words.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let refused: Vec<&String> = words.iter().filter(|w| *w != "served").collect();
    run.figure(
        "allowed container connecting at once: refused",
        format!("{} of {}{}", refused.len(), words.len(), summary(&refused)),
    );
    ensure!(
        words.len() == AT_ONCE,
        "{} of {AT_ONCE} runs reported",
        words.len()
    );
    if let Some(failed) = refused.iter().find(|w| w.starts_with("run-failed")) {
        bail!("a run failed: {failed}");
    }
    // Kern's approvals (issue 12) admit the container before its first process runs: any
    // refusal is a failure, not a known gap.
    ensure!(
        refused.is_empty(),
        "{} of {AT_ONCE} first connects refused{}",
        refused.len(),
        summary(&refused)
    );
    Ok(())
}

fn summary(words: &[&String]) -> String {
    if words.is_empty() {
        return String::new();
    }
    let mut kinds: Vec<&str> = words.iter().map(|w| w.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    format!(" ({})", kinds.join(", "))
}

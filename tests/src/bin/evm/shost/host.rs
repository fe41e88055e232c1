//! The driver's hands on the systemd host: commands with a time limit, systemd's view of its
//! units, the journal, the logs going back through the share.

use std::{
    fs,
    path::Path,
    process::{Command, Output},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::ROOT_PROBE_DIR;
use crate::guest;
use crate::probe_log::uptime;

/// Where the tier's containers write (on the disk: their logs span the boots).
pub const CONTAINER_DIR: &str = "/var/lib/eci-shost";

/// `program args…`, killed after `secs`.
pub fn run(program: &str, args: &[&str], secs: u32) -> anyhow::Result<Output> {
    Command::new("timeout")
        .args(["-k", "5", &secs.to_string(), program])
        .args(args)
        .output()
        .with_context(|| format!("running {program} {}", args.join(" ")))
}

/// As [`run`], which must succeed: its stdout.
pub fn run_ok(program: &str, args: &[&str], secs: u32) -> anyhow::Result<String> {
    let out = run(program, args, secs)?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sh -x SCRIPT` (the steps the share carries), its output kept in the share's `out/LOG`; the
/// last lines of it in the error when it fails.
pub fn script(path: &str, log: &str) -> anyhow::Result<()> {
    let out = run("sh", &["-x", path], 300)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::write(guest::share(&format!("out/{log}")), &text);
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(12).collect();
        bail!(
            "{path} failed ({}); last lines: {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        );
    }
    Ok(())
}

/// The docker CLI on the default socket (/var/run/docker.sock: the engine before the install,
/// the agent after), as the host's admin.
pub fn docker(args: &[&str]) -> anyhow::Result<String> {
    run_ok("docker", args, 180)
}

pub fn show(unit: &str, property: &str) -> String {
    run_ok("systemctl", &["show", "-p", property, "--value", unit], 30)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// When `unit` last became active, in seconds since boot (systemd's monotonic clock is the
/// kernel's uptime).
pub fn active_at(unit: &str) -> Option<f64> {
    let usec: u64 = show(unit, "ActiveEnterTimestampMonotonic").parse().ok()?;
    (usec > 0).then(|| usec as f64 / 1e6)
}

pub fn is_active(unit: &str) -> bool {
    show(unit, "ActiveState") == "active"
}

pub fn main_pid(unit: &str) -> u32 {
    show(unit, "MainPID").parse().unwrap_or(0)
}

/// Polls `ready` every 200 ms until it holds or `limit` passes.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + limit;
    while !ready() {
        if Instant::now() > deadline {
            bail!("{what}: not after {} s", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(200));
    }
    Ok(uptime())
}

/// The journal's entries for `args` (journalctl's own filters), as JSON objects.
pub fn journal(args: &[&str]) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut all = vec!["-b", "--no-pager", "-o", "json"];
    all.extend_from_slice(args);
    let text = run_ok("journalctl", &all, 60)?;
    text.lines()
        .map(|l| {
            serde_json::from_str(l).context("journalctl -o json printed a line that is not JSON")
        })
        .collect()
}

/// The logs of this boot into the share's `out/`, named after the boot.
pub fn copy_logs_out(boot: &str) {
    let out = guest::share("out");
    let _ = fs::create_dir_all(&out);
    let save = |name: &str, text: &str| {
        let _ = fs::write(out.join(format!("{boot}-{name}")), text);
    };
    let journal = |args: &[&str]| {
        let mut all = vec!["-b", "--no-pager", "-o", "short-monotonic"];
        all.extend_from_slice(args);
        run("journalctl", &all, 60)
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    save("journal.txt", &journal(&[]));
    save(
        "units.txt",
        &journal(&[
            "-u",
            "eci-agent-pins.service",
            "-u",
            "eci-agent.socket",
            "-u",
            "eci-agent.service",
            "-u",
            "docker.socket",
            "-u",
            "docker.service",
        ]),
    );
    for (name, dir) in [
        ("probe-root.log", ROOT_PROBE_DIR.to_owned()),
        ("shost-run.log", format!("{CONTAINER_DIR}/shost-run")),
        ("shost-sock.log", format!("{CONTAINER_DIR}/shost-sock")),
    ] {
        if let Ok(text) = fs::read_to_string(Path::new(&dir).join("log")) {
            save(name, &text);
        }
    }
}

/// A clean power-off, as a reboot would do it (QEMU exits: `-no-reboot`).
pub fn power_off() {
    let _ = Command::new("systemctl")
        .args(["poweroff", "--no-block"])
        .status();
}

//! `cargo xtask vm-e2e` (and the last step of `cargo xtask test`): boots the eci VM once, the
//! guest runs the end-to-end suite, and the host reads its serial lines. Midway the guest asks
//! the host to use the channel (the host's own docker CLI through the relay); the host answers
//! through the share. The run fails on a failed case, a panic, a timeout or a missing line.

use std::{
    fs,
    io::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{
    attempt::{self, Attempt, Console, Failure, Next},
    boot::{Accel, Mode, Share, Vm},
    channel::Channel,
    image,
};
use crate::{build, setup};

#[derive(clap::Args)]
#[group(id = "vm_e2e")]
pub struct Options {
    /// How QEMU runs the eci VM's CPUs.
    // Explicit ids: `cargo xtask test` flattens these beside vm-test's `accel` and `timeout`,
    // and clap keys arguments by id, not by flag name.
    #[arg(id = "e2e_accel", long = "e2e-accel", value_enum, default_value_t = Accel::TcgSingle)]
    pub accel: Accel,
    /// Timeout of the whole boot, in seconds.
    #[arg(id = "e2e_timeout", long = "e2e-timeout", default_value_t = 900)]
    pub timeout: u64,
}

#[derive(Debug, PartialEq, Eq)]
enum CaseResult {
    Ok,
    Failed(String),
}

/// One boot's results: always complete enough to print, whatever failed.
pub struct Outcome {
    cases: Vec<(String, CaseResult)>,
    /// (label, host s, guest uptime) of the init's and the suite's marks.
    pub timings: Vec<(String, f64, String)>,
    pub verdict: Result<(), Failure>,
    /// Host seconds from QEMU's start to the guest's end.
    pub seconds: f64,
    /// The suite's own time, from its summary line.
    pub suite_seconds: Option<f64>,
}

impl Attempt for Outcome {
    fn failure(&self) -> Option<&Failure> {
        self.verdict.as_ref().err()
    }
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let (outcome, retried) = boot(root, opts.accel, Duration::from_secs(opts.timeout), true)?;
    print_report(&outcome, retried.as_deref());
    match outcome.verdict {
        Ok(()) => Ok(()),
        Err(err) => bail!("the eci VM suite failed: {err}"),
    }
}

/// Boots the eci VM for the suite (and once more if the first boot failed before the suite
/// started); the last boot's outcome and, if there was a retry, why. `keep_logs`: a failed
/// boot's guest logs are kept under target/vm/eci/last-e2e-logs (`-boot1` for a retried boot's).
pub fn boot(
    root: &Path,
    accel: Accel,
    timeout: Duration,
    keep_logs: bool,
) -> anyhow::Result<(Outcome, Option<String>)> {
    let kernel = setup::eci_vm_kernel(root)?;
    let image = image::ensure(root, &kernel)?;
    let bins = build::guest(root)?;
    attempt::with_one_retry("vm-e2e", |n| {
        let share = Share::new(root, &bins, &root.join("examples/admin-settings.json"))?;
        // The DaemonSet's image, which a case runs as the manifest does.
        crate::image::share_pod(root, &share.dir)?;
        println!(
            "xtask vm-e2e: booting the eci VM ({}, {accel:?}){}",
            kernel.package,
            if n > 1 { ", second attempt" } else { "" }
        );
        let vm = Vm::start(&image, &share, Mode::E2e, accel)?;
        let outcome = watch(root, &vm, &share, timeout);
        drop(vm);
        if keep_logs && outcome.verdict.is_err() {
            // Keep the guest's logs where they can be read after the share is removed.
            let retried = n == 1 && outcome.failure().is_some_and(|f| f.infrastructure);
            let name = if retried {
                "last-e2e-logs-boot1"
            } else {
                "last-e2e-logs"
            };
            let keep = image::dir(root).join(name);
            let _ = fs::remove_dir_all(&keep);
            if fs::rename(share.out(), &keep).is_ok() {
                println!("xtask vm-e2e: guest logs kept in {}", keep.display());
            }
        }
        Ok(outcome)
    })
}

fn watch(root: &Path, vm: &Vm, share: &Share, timeout: Duration) -> Outcome {
    let mut console = Console::new(vm, timeout);
    let mut cases = Vec::new();
    let mut summary = None;
    let mut suite_seconds = None;
    let mut init = None;
    let verdict = loop {
        let line = match console.next() {
            Ok(Next::Line(line)) => line,
            Ok(Next::Stopped) => {
                break match (init, &summary) {
                    (None, _) => Err(console.stopped("no init: line")),
                    (Some(_), None) => Err(console.stopped("no eci-e2e summary")),
                    (Some(false), Some(s)) => {
                        Err(Failure::workload(format!("init: failure ({s})")))
                    }
                    (Some(true), Some(_))
                        if cases
                            .iter()
                            .any(|(_, r)| matches!(r, CaseResult::Failed(_))) =>
                    {
                        Err(Failure::workload("a case failed"))
                    }
                    (Some(true), Some(_)) if cases.is_empty() => {
                        Err(Failure::workload("no case ran"))
                    }
                    (Some(true), Some(_)) => Ok(()),
                };
            }
            Err(failure) => break Err(failure),
        };
        println!("  [eci-vm] {line}");
        if let Some(rest) = line.strip_prefix("eci-e2e ") {
            if let Some((name, result)) = rest.split_once(" => ") {
                cases.push((name.to_owned(), parse_result(result)));
            }
        } else if line.starts_with("eci-e2e: ") {
            suite_seconds = parse_summary_seconds(&line);
            summary = Some(line.clone());
        } else if line == "evm: host-channel ready" {
            let verdict = match host_checks(root, vm.channel_port) {
                Ok(()) => "ok".to_owned(),
                Err(err) => format!("failed: {err:#}"),
            };
            println!("xtask vm-e2e: host-side channel checks: {verdict}");
            if let Err(err) = fs::write(share.dir.join("host-channel.result"), verdict) {
                break Err(Failure::workload(format!(
                    "writing the host's verdict: {err}"
                )));
            }
        } else if line == "init: success" {
            init = Some(true);
        } else if line == "init: failure" {
            init = Some(false);
        }
    };
    Outcome {
        cases,
        timings: std::mem::take(&mut console.marks),
        verdict,
        seconds: vm.elapsed(),
        suite_seconds,
    }
}

/// `eci-e2e: 17 passed, 0 failed in 212 s` → 212.
fn parse_summary_seconds(line: &str) -> Option<f64> {
    line.rsplit_once(" in ")?.1.strip_suffix(" s")?.parse().ok()
}

fn parse_result(text: &str) -> CaseResult {
    if text.starts_with("ok") {
        CaseResult::Ok
    } else {
        CaseResult::Failed(text.trim_start_matches("FAILED").trim().to_owned())
    }
}

/// The host's side: its own docker CLI through the channel, as a trusted caller (a build, which
/// the commandList refuses to containers, passes).
fn host_checks(root: &Path, port: u16) -> anyhow::Result<()> {
    let socket = image::dir(root).join(format!("channel-{}.sock", std::process::id()));
    let channel = Channel::open(&socket, port)?;
    let host = format!("unix://{}", channel.socket.display());
    let version = docker(&host, &["version", "--format", "{{.Server.Version}}"], None)?;
    if version.trim().is_empty() {
        bail!("no server version through the channel");
    }
    docker(
        &host,
        &["build", "-q", "-t", "eci/from-host:1", "-"],
        Some("FROM 127.0.0.1:5000/eci/cli:1\nLABEL built-by=host-channel\n"),
    )
    .context("docker build from the host")?;
    Ok(())
}

fn docker(host: &str, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let mut child = Command::new("timeout")
        .args(["-k", "5", "180", "docker", "-H", host])
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running the host's docker CLI")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "docker {} through the channel: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn print_report(outcome: &Outcome, retried: Option<&str>) {
    println!();
    println!("| eci VM end-to-end case | result |");
    println!("|---|---|");
    for (name, result) in &outcome.cases {
        let cell = match result {
            CaseResult::Ok => "ok".to_owned(),
            CaseResult::Failed(why) => format!("FAILED: {why}"),
        };
        println!("| {name} | {cell} |");
    }
    if let Some(why) = retried {
        println!(
            "| (boot) | RETRIED once: the first boot failed before the suite started: {why} |"
        );
    }
    println!();
    println!("| step | host s | guest uptime s |");
    println!("|---|---|---|");
    for (label, host, guest) in &outcome.timings {
        println!("| {label} | {host:.1} | {guest} |");
    }
    let passed = count(outcome, |r| *r == CaseResult::Ok);
    let failed = count(outcome, |r| matches!(r, CaseResult::Failed(_)));
    let status = match &outcome.verdict {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("FAILED: {e}"),
    };
    println!("eci VM suite: {:.0} s — {status}", outcome.seconds);
    if let Some(why) = retried {
        println!("eci VM suite: RETRIED: this was the second boot; the first failed: {why}");
    }
    println!("e2e: {passed} passed, {failed} failed");
}

fn count(outcome: &Outcome, pred: impl Fn(&CaseResult) -> bool) -> usize {
    outcome.cases.iter().filter(|(_, r)| pred(r)).count()
}

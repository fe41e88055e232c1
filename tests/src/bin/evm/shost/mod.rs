//! `evm shost …`: the systemd-host tier's guest side (xtask's shost/ boots the guest).
//!
//! - `evm shost driver`: the test driver, a unit stage 1 installs (`eci-shost.service`); runs
//!   the checks of the boot the kernel command line names (`eci.shost=install|cold1|cold2|pod`),
//!   prints `shost <boot>/<case> => ok | FAILED <why>` and `shost figure …` lines
//!   on the console, copies the logs into the share and powers off;
//! - `evm shost early-probe`: the unlisted root process of the cold boots (`eci-shost-probe`);
//! - `evm shost probe-loop DIR LABEL=PATH…`: the probing loop it and the containers run
//!   (`probe_log.rs`, shared with the eci VM's early probe).

mod cases;
mod host;
mod pod;

use std::{process::ExitCode, time::Instant};

use crate::{guest, probe_log};

pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("driver") => driver(),
        Some("early-probe") => early_probe(),
        Some("probe-loop") => probe_log::main(&args[1..]),
        _ => {
            eprintln!("usage: evm shost driver | early-probe | probe-loop DIR LABEL=PATH…");
            ExitCode::from(64)
        }
    }
}

/// Where the unlisted root process writes (tmpfs: one boot's worth).
pub const ROOT_PROBE_DIR: &str = "/run/eci-shost-probe";

fn boot_name() -> String {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("eci.shost="))
        .unwrap_or_default()
        .to_owned()
}

/// Only the cold boots probe from boot: before the install there is nothing to judge.
fn early_probe() -> ExitCode {
    if !boot_name().starts_with("cold") {
        return ExitCode::SUCCESS;
    }
    probe_log::main(&[
        ROOT_PROBE_DIR.to_owned(),
        "public=/run/docker.sock".to_owned(),
        "engine=/run/eci/engine.sock".to_owned(),
    ])
}

/// What one boot's cases came to.
pub struct Run {
    pub boot: String,
    passed: u32,
    failed: u32,
}

impl Run {
    /// Runs one case and prints its line.
    pub fn case(&mut self, name: &str, check: impl FnOnce(&mut Self) -> anyhow::Result<()>) {
        let started = Instant::now();
        let result = check(self);
        let secs = started.elapsed().as_secs_f64();
        let line = match result {
            Ok(()) => {
                self.passed += 1;
                format!("ok ({secs:.1} s)")
            }
            Err(err) => {
                self.failed += 1;
                format!("FAILED {}", one_line(&format!("{err:#}")))
            }
        };
        println!("shost {}/{name} => {line}", self.boot);
        // What the host reads if a later case hangs the boot.
        host::copy_logs_out(&self.boot);
    }

    pub fn figure(&self, key: &str, value: impl std::fmt::Display) {
        println!("shost figure {key} = {value}");
    }
}

fn driver() -> ExitCode {
    let boot = boot_name();
    guest::mark("workload start");
    let mut run = Run {
        boot: boot.clone(),
        passed: 0,
        failed: 0,
    };
    match boot.as_str() {
        "install" => cases::install(&mut run),
        "cold1" => cases::cold(&mut run, true),
        "cold2" => cases::cold_and_kill(&mut run),
        "pod" => pod::run(&mut run),
        other => {
            println!(
                "shost {other}/(boot) => FAILED eci.shost= must be install, cold1, cold2 or pod"
            );
            run.failed += 1;
        }
    }
    host::copy_logs_out(&boot);
    println!(
        "shost: {boot}: {} passed, {} failed; done",
        run.passed, run.failed
    );
    host::power_off();
    ExitCode::SUCCESS
}

fn one_line(text: &str) -> String {
    let flat: String = text
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    if flat.len() > 600 {
        format!("{}…", &flat[..flat.floor_char_boundary(600)])
    } else {
        flat
    }
}

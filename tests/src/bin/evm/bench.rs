//! `evm bench RUNS`: what `cargo xtask bench --section evm` measures inside the eci VM (the init
//! has started the engine and the registry). It makes a busybox image, starts the agent (the
//! `agent ready` mark), then times `docker run --rm` of it:
//!
//! - `eci-bench-evm first_run <ms>`: the first container of the boot, through the sidecar;
//! - after one unmeasured run each way, `eci-bench-evm run <sidecar|direct> <round> <ms>`: RUNS rounds, each one run through the
//!   sidecar (from a cgroup the agent trusts, as the host channel's callers) and one straight to
//!   the engine socket (from the agent's own cgroup, the only one the kernel lets reach it), in an
//!   order that alternates per round so neither side always follows the other;
//! - `eci-bench-evm-done` at the end; `eci-bench-evm-error <why>` if anything failed.
//!
//! Both sides start the docker CLI the same way (`evm in-cgroup REL -- docker …` under `timeout`),
//! so the difference is the sidecar's hop and its decisions.

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{
    e2e::fixture::{self, SETTINGS},
    guest::{self, CGROUP_ROOT, ENGINE_SOCK, HOST_CGROUP},
    sys,
};

const IMAGE: &str = "eci/bench:1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Sidecar,
    Direct,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Self::Sidecar => "sidecar",
            Self::Direct => "direct",
        }
    }
}

pub fn main(args: &[String]) -> ExitCode {
    let runs = match args {
        [runs] => runs.parse::<u32>().ok().filter(|&n| n > 0),
        _ => None,
    };
    let Some(runs) = runs else {
        println!("eci-bench-evm-error usage: evm bench RUNS (RUNS > 0)");
        return ExitCode::from(64);
    };
    match run(runs) {
        Ok(()) => {
            println!("eci-bench-evm-done");
            ExitCode::SUCCESS
        }
        Err(err) => {
            println!("eci-bench-evm-error {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(runs: u32) -> anyhow::Result<()> {
    sys::join_cgroup(
        &Path::new(CGROUP_ROOT).join(HOST_CGROUP).join("bench"),
        std::process::id(),
    )
    .context("joining the host cgroup")?;
    let dir = Path::new(fixture::WORK).join("bench");
    fixture::rootfs(&dir, &[])?;
    // No socket mounts here: the list only has to be valid.
    fixture::write_settings(&[], false)?;
    let mut agent = guest::start_agent(Path::new(SETTINGS))?;
    guest::mark("agent ready");
    let result = (|| {
        // Through the sidecar: the engine is the agent's alone since the boot's pins.
        fixture::docker_ok(&["import", &fixture::tar(&dir)?.to_string_lossy(), IMAGE])?;
        guest::mark("image ready");
        let first = docker_run(Via::Sidecar)?;
        println!("eci-bench-evm first_run {first:.1}");
        guest::mark("first docker run done");
        // One unmeasured run each way: what the figures compare is warm runs.
        docker_run(Via::Sidecar)?;
        docker_run(Via::Direct)?;
        for round in 0..runs {
            let order = if round % 2 == 0 {
                [Via::Sidecar, Via::Direct]
            } else {
                [Via::Direct, Via::Sidecar]
            };
            for via in order {
                let ms = docker_run(via)?;
                println!("eci-bench-evm run {} {round} {ms:.1}", via.name());
            }
        }
        Ok(())
    })();
    let _ = sys::kill(agent.id(), libc::SIGTERM);
    let _ = agent.wait();
    result
}

/// One `docker run --rm IMAGE true` by `via`; its wall time in ms.
fn docker_run(via: Via) -> anyhow::Result<f64> {
    let cgroup = match via {
        Via::Sidecar => format!("{HOST_CGROUP}/bench"),
        Via::Direct => eci_agent::kernel::enforce::AGENT_CGROUP.to_owned(),
    };
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "180"])
        .arg(guest::share("bin/evm"))
        .args(["in-cgroup", &cgroup, "--", "docker"]);
    if via == Via::Direct {
        cmd.arg("-H").arg(format!("unix://{ENGINE_SOCK}"));
    }
    cmd.args(["run", "--rm", IMAGE, "true"]);
    let started = Instant::now();
    let out = cmd.output().context("running docker")?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    if !out.status.success() {
        bail!(
            "docker run ({}) failed ({}): {}",
            via.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(ms)
}

/// `evm in-cgroup REL -- CMD ARGS…`: moves into cgroup REL (under the cgroup2 root), then
/// becomes CMD.
pub fn in_cgroup(args: &[String]) -> ExitCode {
    let [rel, dash, cmd, rest @ ..] = args else {
        eprintln!("usage: evm in-cgroup REL -- CMD ARGS…");
        return ExitCode::from(64);
    };
    if dash != "--" {
        eprintln!("usage: evm in-cgroup REL -- CMD ARGS…");
        return ExitCode::from(64);
    }
    if let Err(err) = sys::join_cgroup(&Path::new(CGROUP_ROOT).join(rel), std::process::id()) {
        eprintln!("evm in-cgroup: joining {rel}: {err}");
        return ExitCode::from(125);
    }
    let err = Command::new(cmd).args(rest).exec();
    eprintln!("evm in-cgroup: running {cmd}: {err}");
    ExitCode::from(127)
}

//! `eci-agent status [--check]`: the agent's record (`state.rs`), then what the kernel enforces
//! now, read from the pins.

use std::{path::Path, process::ExitCode};

use crate::state::{AgentState, Mode, read};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub pin: crate::host_args::PinArgs,
    /// Exit 1 unless enforcement is live: BPF LSM active, programs pinned, and a running agent
    /// in enforce mode with kernel enforcement (for health checks and scripts).
    #[arg(long)]
    pub check: bool,
}

/// `eci-agent status [--check]`: the agent's record, then the kernel's pins; with `--check`,
/// exit 1 unless enforcement is live.
pub fn command(args: &Args) -> ExitCode {
    let pin_dir = &args.pin.pin_dir;
    let agent = read(pin_dir);
    match &agent {
        Some(a) => println!(
            "agent: pid {} ({}), mode {}, kernel enforcement {}",
            a.pid,
            if a.running() {
                "running"
            } else {
                "NOT RUNNING"
            },
            a.mode.as_str(),
            if a.kernel {
                "on"
            } else {
                "off (--allow-no-lsm)"
            },
        ),
        None => println!("agent: not running (no record in {})", pin_dir.display()),
    }
    if let Err(err) = crate::kernel::status(pin_dir) {
        eprintln!("eci-agent: {err:#}");
        return ExitCode::FAILURE;
    }
    if !args.check {
        return ExitCode::SUCCESS;
    }
    let why = not_live(pin_dir, agent.as_ref());
    if why.is_empty() {
        println!("check: enforcement is live");
        ExitCode::SUCCESS
    } else {
        println!("check: enforcement is NOT live: {}", why.join("; "));
        ExitCode::FAILURE
    }
}

fn not_live(pin_dir: &Path, agent: Option<&AgentState>) -> Vec<&'static str> {
    use crate::kernel::{PinLayout, lsm};
    let mut why = Vec::new();
    if !lsm::active_lsms().is_ok_and(|lsms| lsm::lsm_list_has_bpf(&lsms)) {
        why.push("BPF LSM is not active");
    }
    if !PinLayout::new(pin_dir).is_loaded() {
        why.push("no programs are pinned");
    }
    match agent {
        None => why.push("no agent has recorded its mode"),
        Some(a) => {
            if !a.running() {
                why.push("the agent is not running");
            }
            if a.mode == Mode::DryRun {
                why.push("the agent runs in dry-run mode");
            }
            if !a.kernel {
                why.push("the agent runs without kernel enforcement");
            }
        }
    }
    why
}

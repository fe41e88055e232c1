//! The command line: `eci-agent run|check|status|unload`. Each subcommand's flags are a struct so
//! the code that runs it receives typed options, not a bag of strings.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

/// Default place of the pinned BPF maps and links; kept across agent restarts.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eci";

#[derive(Debug, Parser)]
#[command(
    name = "eci-agent",
    version,
    about = "Docker socket mount permissions, enforced in the kernel and on the socket"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel programs and serve the Docker Engine API on --listen.
    Run(RunArgs),
    /// Validate an admin-settings.json and print the normalised policy.
    Check(CheckArgs),
    /// Print what the kernel enforces now (from the pinned maps).
    Status(PinArgs),
    /// Detach the programs and remove every pin.
    Unload(PinArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Docker Desktop's admin-settings.json.
    #[arg(long)]
    pub settings: PathBuf,
    /// The public socket the sidecar listens on (what clients use as DOCKER_HOST).
    #[arg(long)]
    pub listen: PathBuf,
    /// The real engine socket; only the agent may reach it.
    #[arg(long)]
    pub engine: PathBuf,
    #[command(flatten)]
    pub pin: PinArgs,
    /// A host cgroup (relative to the cgroup2 mount) whose processes are trusted; repeatable.
    #[arg(long = "trust-cgroup", value_name = "PATH")]
    pub trust_cgroups: Vec<PathBuf>,
    /// A registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// Time between two registry refreshes of the allowed digests (e.g. 5m, 30s).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub registry_refresh: Seconds,
    /// Where the cgroup2 hierarchy is mounted.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// One JSON line per refused request to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub audit_log: Option<PathBuf>,
    /// Run the sidecar without kernel enforcement when BPF LSM is not active (loudly).
    #[arg(long)]
    pub allow_no_lsm: bool,
}

/// A duration given as `90`, `90s`, `5m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub u64);

impl From<Seconds> for std::time::Duration {
    fn from(s: Seconds) -> Self {
        Self::from_secs(s.0)
    }
}

fn parse_duration(s: &str) -> Result<Seconds, String> {
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?}: expected a number with an optional s, m or h"))?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (s, m or h)")),
    };
    match n.checked_mul(factor) {
        Some(0) | None => Err(format!("{s:?}: must be between 1s and many years")),
        Some(secs) => Ok(Seconds(secs)),
    }
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    #[arg(long)]
    pub settings: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Runs a parsed command line and turns its outcome into an exit code (64 = bad usage or settings).
pub fn main(cli: Cli) -> ExitCode {
    crate::logging::init();
    let Cli { command } = cli;
    let result = match command {
        Command::Run(args) => crate::agent::run(args),
        Command::Check(args) => return crate::settings::check_command(&args),
        Command::Status(args) => crate::kernel::status(&args.pin_dir),
        Command::Unload(args) => crate::kernel::unload(&args.pin_dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("eci-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Seconds(90)));
        assert_eq!(parse_duration("5m"), Ok(Seconds(300)));
        assert_eq!(parse_duration("1h"), Ok(Seconds(3600)));
        for bad in ["", "0", "5d", "m", "-1s", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}

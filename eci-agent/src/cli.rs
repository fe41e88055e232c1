//! The command line: `eci-agent run|check|explain|status|unload`. Each subcommand's flags are a struct so
//! the code that runs it receives typed options, not a bag of strings.

use std::{path::PathBuf, process::ExitCode};

use clap::{ArgGroup, Args, Parser, Subcommand};

use crate::logging::LogFormat;

/// dockerd's default group for its socket.
pub const DEFAULT_SOCKET_GROUP: &str = "docker";

/// Default place of the pinned BPF maps and links; kept across agent restarts.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/eci";

#[derive(Debug, Parser)]
#[command(
    name = "eci-agent",
    version,
    about = "Docker socket mount permissions, enforced in the kernel and on the socket"
)]
pub struct Cli {
    /// How log lines are written on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Load the kernel programs and serve the Docker Engine API on --listen.
    Run(RunArgs),
    /// Validate an admin-settings.json and print the normalised policy.
    Check(CheckArgs),
    /// Print the decision the running policy makes for an image, a container or a request, and
    /// the rule that made it (the same code as enforcement).
    Explain(ExplainArgs),
    /// Print the agent's mode and what the kernel enforces now (from the pinned maps).
    Status(StatusArgs),
    /// Detach the programs and remove every pin.
    Unload(PinArgs),
    /// Exit 0 when this kernel loads and attaches the programs (loaded into a throwaway pin
    /// directory and removed again); 1 with the reason otherwise.
    Probe(ProbeArgs),
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
    /// Group that may use the public socket (mode 0660), as dockerd's own `--group`.
    #[arg(long, short = 'G', default_value = DEFAULT_SOCKET_GROUP)]
    pub group: String,
    /// Serve Prometheus metrics, /healthz and /readyz over HTTP on ADDR (e.g. 127.0.0.1:9431).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Decide, log and audit everything but refuse nothing (see the README for the kernel side).
    #[arg(long)]
    pub dry_run: bool,
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
#[command(group(ArgGroup::new("subject").required(true).args(["image", "container", "request"])))]
pub struct ExplainArgs {
    #[arg(long)]
    pub settings: PathBuf,
    /// May a container of this image mount the socket? (a reference or an image ID)
    #[arg(long, value_name = "REF")]
    pub image: Option<String>,
    /// The gate's judgement of an existing container (name or ID).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// May a container send this request? e.g. 'POST /v1.47/images/x/push?tag=1'
    #[arg(long, value_name = "'METHOD PATH'")]
    pub request: Option<String>,
    /// The Engine API asked about images and containers; through a running agent the host is
    /// trusted, so the public socket works.
    #[arg(long, default_value = "/var/run/docker.sock")]
    pub engine: PathBuf,
    /// A socket a container's mounts must not reach; repeatable. Default: --engine, plus the
    /// deployment's engine socket /run/eci/engine.sock when it exists.
    #[arg(long = "protect", value_name = "PATH")]
    pub protect: Vec<PathBuf>,
    /// A registry reached over plain HTTP (HOST:PORT); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub pin: PinArgs,
    /// Exit 1 unless enforcement is live: BPF LSM active, programs pinned, and a running agent
    /// in enforce mode with kernel enforcement (for health checks and scripts).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The bpffs mount the throwaway pins go under.
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct PinArgs {
    /// bpffs directory of the pinned maps and links.
    #[arg(long, default_value = DEFAULT_PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Runs a parsed command line and turns its outcome into an exit code (64 = bad usage or settings).
pub fn main(cli: Cli) -> ExitCode {
    let Cli {
        log_format,
        command,
    } = cli;
    crate::logging::init(log_format);
    let result = match command {
        Command::Run(args) => crate::agent::run(args),
        Command::Check(args) => return crate::settings::check_command(&args),
        Command::Explain(args) => return crate::explain::command(&args),
        Command::Status(args) => return crate::state::status_command(&args),
        Command::Unload(args) => crate::kernel::unload(&args.pin_dir).map_err(Into::into),
        Command::Probe(args) => {
            return match crate::kernel::probe::try_load(&args.bpffs) {
                Ok(()) => {
                    println!("enforcement: available (BPF LSM programs load and attach)");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    println!("enforcement: unavailable: {err:#}");
                    ExitCode::FAILURE
                }
            };
        }
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

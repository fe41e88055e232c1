//! The command line: `eci-agent run|load|check|explain|status|unload|probe|install`. Each subcommand's flags are a struct so
//! the code that runs it receives typed options, not a bag of strings.

use std::{path::PathBuf, process::ExitCode};

use clap::{Args, Parser, Subcommand};

use crate::{
    agent, check, explain, host_args::PinArgs, load, logging::LogFormat, node_install, status,
};

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
    /// Load the kernel programs and serve the Docker Engine API on --listen (on the socket
    /// systemd passes, under socket activation).
    Run(agent::Args),
    /// Load and pin the programs with every cgroup denied but the trusted ones, protect both
    /// socket names, and exit (the boot unit before any Docker socket exists; `run` adopts it).
    Load(load::Args),
    /// Validate an admin-settings.json and print the normalised policy.
    Check(check::Args),
    /// Print the decision the running policy makes for an image, a container or a request, and
    /// the rule that made it (the same code as enforcement).
    Explain(explain::Args),
    /// Print the agent's mode and what the kernel enforces now (from the pinned maps).
    Status(status::Args),
    /// Detach the programs and remove every pin.
    Unload(PinArgs),
    /// Exit 0 when this kernel loads and attaches the programs (loaded into a throwaway pin
    /// directory and removed again); 1 with the reason otherwise.
    Probe(ProbeArgs),
    /// Install the agent on this node as its systemd units (deploy/systemd) and stay to carry
    /// settings edits there: what the DaemonSet's pod runs, with the node's / at --host-root.
    Install(node_install::Args),
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The bpffs mount the throwaway pins go under.
    #[arg(long, default_value = "/sys/fs/bpf")]
    pub bpffs: PathBuf,
}

/// Exit code when something that is not a socket occupies the socket path (EX_CONFIG): restarting
/// cannot help until someone moves it, so the systemd unit does not (`RestartPreventExitStatus=`).
pub const EXIT_OCCUPIED: u8 = 78;

/// Runs a parsed command line and turns its outcome into an exit code (64 = bad usage or settings,
/// 78 = the socket path is occupied).
pub fn main(cli: Cli) -> ExitCode {
    let Cli {
        log_format,
        command,
    } = cli;
    crate::logging::init(log_format);
    let result = match command {
        Command::Run(args) => match agent::run(args) {
            Err(err) if err.is::<agent::BadSettings>() => {
                crate::logging::fatal(&err);
                return ExitCode::from(crate::settings::EXIT_INVALID);
            }
            other => other,
        },
        Command::Load(args) => load::load(&args),
        Command::Install(args) => node_install::command(&args),
        Command::Check(args) => return check::command(&args),
        Command::Explain(args) => return explain::command(&args),
        Command::Status(args) => return status::command(&args),
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
            crate::logging::fatal(&err);
            let occupied = err
                .chain()
                .filter_map(|e| e.downcast_ref::<crate::socket_path::SocketPathError>())
                .any(crate::socket_path::SocketPathError::is_occupied);
            if occupied {
                ExitCode::from(EXIT_OCCUPIED)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

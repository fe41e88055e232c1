use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = eci_agent::cli::Cli::parse();
    eci_agent::cli::main(cli)
}

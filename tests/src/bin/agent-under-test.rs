//! `eci-agent`'s own command line, built inside this package so that its integration tests can
//! run the real agent process (`CARGO_BIN_EXE_agent-under-test`): same `cli::main`, same code.

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    eci_agent::cli::main(eci_agent::cli::Cli::parse())
}

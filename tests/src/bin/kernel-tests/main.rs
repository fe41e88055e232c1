//! The kernel suite, run as root inside a QEMU guest (see `vm-init`) on a kernel with BPF LSM
//! active. It starts the agent's kernel side in a child process, then judges what processes in
//! cgroups of its own can reach, through every path it can think of.
//!
//! One binary, three roles chosen by the first argument:
//! - (none): the suite; prints `eci-test <name>: ok|FAILED …` per case and `N passed, M failed`;
//! - `agent …`: the agent's kernel side (load, pin, protect, re-tag), as `eci-agent run` does it;
//! - `probe …`: joins a cgroup and tries one access; the exit code says what happened.

mod agent;
mod cases;
mod cgroup_cases;
mod fixture;
mod gate_cases;
mod guard_cases;
mod lifecycle_cases;
mod probe;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("agent") => agent::main(&args[1..]),
        Some("probe") => probe::main(&args[1..]),
        _ => cases::main(&args),
    }
}

//! `evm`: the eci VM's own programs, one static binary that the host passes in through the 9p
//! share at each boot (so the disk image holds none of the project's code).
//!
//! - as PID 1: the init (see `init`);
//! - `evm relay`: the guest end of the host channel;
//! - `evm e2e`: the end-to-end suite;
//! - `evm bench RUNS`: the figures of `cargo xtask bench --section evm`;
//! - `evm in-cgroup REL -- CMD…`: CMD run in another cgroup (the bench's docker CLI);
//! - `evm probe …`: one access attempt (also runs inside the test images);
//! - `evm shost …`: the systemd-host tier's driver and probes (see `shost`).

mod bench;
mod e2e;
mod guest;
mod init;
mod probe;
mod probe_log;
mod relay;
mod shost;
mod sys;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Stage 1 starts the init without arguments; the probe may be PID 1 too, in a container.
    if std::process::id() == 1 && args.is_empty() {
        return init::main();
    }
    match args.first().map(String::as_str) {
        Some("relay") => relay::main(),
        Some("e2e") => e2e::main(),
        Some("bench") => bench::main(&args[1..]),
        Some("in-cgroup") => bench::in_cgroup(&args[1..]),
        Some("probe") => probe::main(&args[1..]),
        Some("shost") => shost::main(&args[1..]),
        _ => {
            eprintln!(
                "usage: evm relay | e2e | bench RUNS | in-cgroup REL -- CMD… | probe … | shost …  (as PID 1: the eci VM's init)"
            );
            ExitCode::from(64)
        }
    }
}

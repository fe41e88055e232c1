//! `cargo xtask <command>`: the project's own set-up, build, test and VM harness. Every command
//! installs what it is missing first (idempotently, one line per step), so a fresh machine needs
//! nothing by hand.

mod bench;
mod build;
mod cpio;
mod evm;
mod exec;
mod image;
mod lint;
mod process;
mod run;
mod setup;
mod shost;
mod smoke;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install every prerequisite (Debian packages, rust-src, bpf-linker, VM kernels).
    Setup,
    /// Build target/agent/eci-agent (release with LTO) with its BPF object embedded.
    Build,
    /// The agent in front of a Docker engine (a private dockerd unless --engine), example settings.
    Run(run::Options),
    /// Format, clippy (workspace and eci-ebpf's own target), no import circles, a pure policy core.
    Lint,
    /// Only the smoke test of `cargo xtask run` (start, docker ps, a refused mount, Ctrl-C).
    Smoke,
    /// Everything: unit and integration tests on the host, then the kernel suite in a VM per kernel.
    Test(test::Options),
    /// The kernel suite only, in a QEMU guest per Debian kernel.
    VmTest(vm::Options),
    /// Build (or find current) the eci VM's disk image under target/vm/eci.
    VmImage,
    /// The end-to-end suite in the eci VM (engine, registry, agent, kernel, host channel).
    VmE2e(evm::e2e::Options),
    /// The systemd-host tier alone: a Debian guest with systemd as PID 1 and Debian's docker
    /// units, eci-agent installed by its unit header's commands, then cold boots.
    Shost(shost::Options),
    /// Build the eci-agent:VERSION image the Kubernetes DaemonSet runs (docker import of the static
    /// agent and nsenter; no pulls) into the engine the docker CLI talks to.
    Image(image::Options),
    /// Benchmarks (kernel hooks in the VM, sidecar vs direct vs HAProxy): a markdown table and
    /// target/bench/summary.json.
    Bench(bench::Options),
}

fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    let root = exec::workspace_root()?;
    match command {
        Command::Setup => setup::all(&root).map(drop),
        Command::Build => {
            setup::build_tools()?;
            build::agent(&root).map(drop)
        }
        Command::Run(opts) => run::run(&root, &opts),
        Command::Smoke => {
            setup::build_tools()?;
            smoke::run(&root)
        }
        Command::Lint => lint::run(&root),
        Command::Test(opts) => test::run(&root, &opts),
        Command::Bench(opts) => bench::run(&root, &opts),
        Command::Image(opts) => {
            setup::build_tools()?;
            image::run(&root, &opts)
        }
        Command::VmTest(opts) => {
            let kernels = setup::all(&root)?;
            vm::run(&root, &opts, &kernels)
        }
        Command::VmImage => {
            setup::build_tools()?;
            let kernel = setup::eci_vm_kernel(&root)?;
            evm::image::ensure(&root, &kernel).map(drop)
        }
        Command::Shost(opts) => {
            setup::build_tools()?;
            shost::run(&root, &opts)
        }
        Command::VmE2e(opts) => {
            setup::build_tools()?;
            evm::e2e::run(&root, &opts)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks the whole command line's consistency (duplicate ids among flattened options
    /// and the like) only when asked: a broken `cargo xtask test` would fail CI before any test.
    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn test_parses_with_no_flags() {
        use clap::Parser as _;
        super::Cli::try_parse_from(["xtask", "test"]).expect("cargo xtask test parses");
    }
}

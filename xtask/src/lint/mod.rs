//! `cargo xtask lint` (also the first step of `cargo xtask test`): the house rules that a
//! compiler does not check, enforced rather than promised.
//!
//! - format: `cargo fmt --check` against the pinned `rustfmt.toml`;
//! - lints: clippy with `-D warnings` on the workspace (the table in `Cargo.toml` gives each
//!   lint's reason), and on eci-ebpf for its own target (`bpfel-unknown-none`), where the
//!   programs really are compiled;
//! - `imports.rs`: no import circle in eci-agent, between modules or between the files of one;
//! - `purity.rs`: the decision core (`policy/`) does no I/O.

pub mod imports;
pub mod purity;

use std::{path::Path, process::Command};

use anyhow::bail;

use crate::exec;

pub fn run(root: &Path) -> anyhow::Result<()> {
    println!("xtask lint: format (rustfmt.toml)");
    exec::run(
        Command::new("cargo")
            .args(["fmt", "--all", "--check"])
            .current_dir(root),
    )?;
    println!("xtask lint: clippy -D warnings (workspace)");
    exec::run(
        Command::new("cargo")
            .args([
                "clippy",
                "--locked",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
            .current_dir(root),
    )?;
    println!("xtask lint: clippy -D warnings (eci-ebpf on bpfel-unknown-none)");
    exec::run(
        Command::new("rustup")
            .args([
                "run",
                "nightly",
                "cargo",
                "clippy",
                "--locked",
                "-p",
                "eci-ebpf",
                "--bins",
                "--release",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--target-dir",
                "target/ebpf-clippy",
                "--",
                "-D",
                "warnings",
            ])
            .env(
                "CARGO_ENCODED_RUSTFLAGS",
                "--cfg=bpf_target_arch=\"x86_64\"",
            )
            .env_remove("RUSTC")
            .env_remove("RUSTC_WORKSPACE_WRAPPER")
            .current_dir(root),
    )?;
    house(root)
}

/// The source-shape rules alone (no compiler): import circles and the core's purity.
pub fn house(root: &Path) -> anyhow::Result<()> {
    let src = root.join("eci-agent/src");
    let mut problems = Vec::new();
    let (mut modules, mut edges) = (0, 0);
    for (name, graph) in imports::graphs(&src)? {
        modules += graph.len();
        edges += graph
            .values()
            .map(std::collections::BTreeSet::len)
            .sum::<usize>();
        for circle in imports::circles(&graph) {
            problems.push(format!(
                "import circle in {name}: {} ({})",
                circle.join(", "),
                imports::edges_within(&graph, &circle).join("; ")
            ));
        }
    }
    for violation in purity::violations(&src.join("policy"))? {
        problems.push(format!("the decision core does I/O: {violation}"));
    }
    if problems.is_empty() {
        println!(
            "xtask lint: imports run downhill (no circles in {modules} modules, {edges} imports); \
             policy/ is pure"
        );
        return Ok(());
    }
    for problem in &problems {
        eprintln!("xtask lint: {problem}");
    }
    bail!("{} house rule(s) broken (see above)", problems.len())
}

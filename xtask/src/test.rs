//! `cargo xtask test`: everything, in tiers (lint, host tests, the kernel suite, the eci VM's
//! end-to-end suite, the systemd host). Root, BPF and dockerd tests run here, never skipped.

use std::{path::Path, process::Command};

use crate::{evm, exec, lint, setup, shost, smoke, vm};

#[derive(clap::Args)]
#[group(id = "test")]
pub struct Options {
    #[command(flatten)]
    pub vm: vm::Options,
    #[command(flatten)]
    pub e2e: evm::e2e::Options,
    #[command(flatten)]
    pub shost: shost::Options,
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let kernels = setup::all(root)?;
    // The house rules first: they take a minute and a broken one needs no VM to show.
    lint::run(root)?;
    println!("xtask test: host tests (unit, sidecar, registry; real dockerd and registry)");
    exec::run(
        Command::new("cargo")
            .args(["test", "--locked", "--workspace"])
            .current_dir(root),
    )?;
    println!("xtask test: smoke test of `cargo xtask run` (host mode, private dockerd, Ctrl-C)");
    smoke::run(root)?;
    println!("xtask test: kernel suite in QEMU");
    vm::run(root, &opts.vm, &kernels)?;
    println!("xtask test: end-to-end suite in the eci VM");
    evm::e2e::run(root, &opts.e2e)?;
    println!("xtask test: the systemd host (Debian's systemd and docker units, cold boots)");
    shost::run(root, &opts.shost)
}

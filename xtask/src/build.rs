//! Builds: the agent for the host, and static guest binaries for the VM's initramfs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::exec;

/// `target/agent/eci-agent` (the workspace's `agent` profile: release with LTO) with the BPF
/// object embedded.
pub fn agent(root: &Path) -> anyhow::Result<PathBuf> {
    exec::run(
        Command::new("cargo")
            .args(["build", "--profile", "agent", "--locked", "-p", "eci-agent"])
            .current_dir(root),
    )?;
    let bin = root.join("target/agent/eci-agent");
    println!("xtask build: {}", bin.display());
    Ok(bin)
}

/// `target/release/BIN` of package `package`, for the host.
pub fn host_bin(root: &Path, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    exec::run(
        Command::new("cargo")
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                package,
                "--bin",
                bin,
            ])
            .current_dir(root),
    )?;
    Ok(root.join("target/release").join(bin))
}

pub const GUEST_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Statically linked binaries for the guest (it has no libc): vm-init, kernel-tests, eci-agent.
pub fn guest(root: &Path) -> anyhow::Result<PathBuf> {
    static_bins(root, &["-p", "eci-agent", "-p", "eci-tests", "--bins"])
}

/// The static eci-agent alone (for the DaemonSet's image), in the guest target's directory.
pub fn guest_agent(root: &Path) -> anyhow::Result<PathBuf> {
    static_bins(root, &["-p", "eci-agent", "--bin", "eci-agent"])
}

/// One static binary of `package` (to run inside a container, which has no libc of ours).
pub fn static_bin(root: &Path, package: &str, bin: &str) -> anyhow::Result<PathBuf> {
    Ok(static_bins(root, &["-p", package, "--bin", bin])?.join(bin))
}

/// Builds `selection` statically linked, returning their directory. An explicit --target keeps
/// their RUSTFLAGS away from build scripts and the host build.
fn static_bins(root: &Path, selection: &[&str]) -> anyhow::Result<PathBuf> {
    exec::run(
        Command::new("cargo")
            .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
            .args(selection)
            .env(
                "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS",
                "-C target-feature=+crt-static",
            )
            .current_dir(root),
    )?;
    Ok(root.join("target").join(GUEST_TARGET).join("release"))
}

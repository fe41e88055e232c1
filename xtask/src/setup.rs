//! Prerequisites, installed only when missing. Each step prints one line: what it checked and
//! whether it had to install anything.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::exec;

/// The host's cgroup2 mount: `/sys/fs/cgroup/unified` on a hybrid host like this one,
/// `/sys/fs/cgroup` on a pure cgroup2 host; `None` without one.
pub fn cgroup2_root() -> Option<&'static str> {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .find(|p| Path::new(p).join("cgroup.controllers").exists())
}

/// Debian packages: the BPF toolchain's LLVM, QEMU and busybox for the VM harness, the engine
/// and the registry for the integration tests.
const PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "qemu-system-x86",
    "busybox-static",
    "docker.io",
    "docker-registry",
    "skopeo",
    // The eci VM's disk image (`cargo xtask vm-image`): a Debian root by debootstrap, an ext4
    // image of it, and the kernel decompressed to vmlinux.
    "debootstrap",
    "e2fsprogs",
    "xz-utils",
];

/// Debian packages only `cargo xtask bench` needs: the stand-in engine and the HAProxy socket
/// proxy it compares the sidecar with.
const BENCH_PACKAGES: &[&str] = &["nginx", "haproxy"];

/// Debian kernel series the VM suite boots: (label, apt package name pattern).
const KERNEL_SERIES: &[(&str, &str)] = &[
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$"),
    (
        "6.12",
        r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
    ),
];

/// The eci VM's kernel: Debian's standard 6.1 build. The cloud flavour used by the kernel suite
/// has no 9p, which the eci VM shares files with the host through.
const ECI_VM_KERNEL: (&str, &str) = ("6.1-std", r"^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$");

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub label: String,
    pub package: String,
    pub vmlinuz: PathBuf,
}

pub fn all(root: &Path) -> anyhow::Result<Vec<Kernel>> {
    build_tools()?;
    kernels(root)
}

/// Everything `cargo xtask build` needs (plus the test packages, which are cheap to check).
pub fn build_tools() -> anyhow::Result<()> {
    packages()?;
    rust_src()?;
    bpf_linker()
}

fn step(what: &str, done: &str) {
    println!("xtask setup: {what}: {done}");
}

/// What the bench needs beyond the build and test tools.
pub fn bench_tools() -> anyhow::Result<()> {
    install("bench packages", BENCH_PACKAGES)
}

fn packages() -> anyhow::Result<()> {
    install("Debian packages", PACKAGES)
}

/// Installs the packages of `list` that are missing (packages install without starting their
/// services where a policy-rc.d forbids it, as in containers; the bench starts its own).
fn install(what: &str, list: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = list
        .iter()
        .copied()
        .filter(|pkg| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", pkg])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        step(what, "present");
        return Ok(());
    }
    step(what, &format!("installing {}", missing.join(" ")));
    exec::run(Command::new("apt-get").arg("update").arg("-q"))?;
    exec::run(
        Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn rust_src() -> anyhow::Result<()> {
    let installed = exec::stdout(Command::new("rustup").args([
        "component",
        "list",
        "--installed",
        "--toolchain",
        "nightly",
    ]))
    .unwrap_or_default();
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        step("nightly rust-src (BPF build-std)", "present");
        return Ok(());
    }
    step("nightly rust-src (BPF build-std)", "installing");
    exec::run(Command::new("rustup").args([
        "component",
        "add",
        "rust-src",
        "--toolchain",
        "nightly",
    ]))
    .context("the BPF object is built with the nightly toolchain's rust-src (-Z build-std=core)")
}

fn bpf_linker() -> anyhow::Result<()> {
    if Command::new("bpf-linker")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        step("bpf-linker", "present");
        return Ok(());
    }
    step(
        "bpf-linker",
        "building against Debian's LLVM 22 (a few minutes)",
    );
    // bpf-linker ≥ 0.13 finds LLVM through LLVM_PREFIX, older releases through llvm-sys's variable.
    exec::run(
        Command::new("cargo")
            .args([
                "install",
                "--locked",
                "bpf-linker",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )
}

/// The newest Debian cloud kernel of each series, downloaded and unpacked under target/vm/kernels.
pub fn kernels(root: &Path) -> anyhow::Result<Vec<Kernel>> {
    KERNEL_SERIES
        .iter()
        .map(|(label, pattern)| kernel(root, label, pattern))
        .collect()
}

/// The eci VM's kernel, downloaded and unpacked under target/vm/kernels.
pub fn eci_vm_kernel(root: &Path) -> anyhow::Result<Kernel> {
    let (label, pattern) = ECI_VM_KERNEL;
    kernel(root, label, pattern)
}

fn kernel(root: &Path, label: &str, pattern: &str) -> anyhow::Result<Kernel> {
    let dir = root.join("target/vm/kernels");
    fs::create_dir_all(&dir)?;
    let package = newest_package(pattern)
        .or_else(|_| cached_package(&dir, pattern))
        .with_context(|| format!("no Debian kernel package of series {label}"))?;
    let unpacked = dir.join(&package);
    if !unpacked.join("boot").exists() {
        step(
            &format!("kernel {label}"),
            &format!("downloading {package}"),
        );
        let tmp = dir.join(format!("download-{label}"));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        exec::run(
            Command::new("apt-get")
                .args(["download", &package])
                .current_dir(&tmp),
        )?;
        let deb = fs::read_dir(&tmp)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download produced no .deb")?;
        // Unpack beside, then rename: an interrupted unpack never looks complete.
        let partial = dir.join(format!("{package}.partial"));
        let _ = fs::remove_dir_all(&partial);
        exec::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial))?;
        fs::rename(&partial, &unpacked)?;
        fs::remove_dir_all(&tmp)?;
    } else {
        step(&format!("kernel {label}"), &format!("{package} cached"));
    }
    let vmlinuz = fs::read_dir(unpacked.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .with_context(|| format!("{package} has no /boot/vmlinuz-*"))?;
    Ok(Kernel {
        label: label.to_owned(),
        package,
        vmlinuz,
    })
}

fn newest_package(pattern: &str) -> anyhow::Result<String> {
    let out = exec::stdout(Command::new("apt-cache").args(["search", "--names-only", pattern]))?;
    let mut names: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    names.sort_by_key(|name| version_key(name));
    match names.pop() {
        Some(name) => Ok(name),
        None => bail!("apt-cache knows no package matching {pattern}"),
    }
}

/// Without an apt index (offline), use what an earlier run unpacked.
fn cached_package(dir: &Path, pattern: &str) -> anyhow::Result<String> {
    let mut names: Vec<String> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.path().join("boot").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| matches_pattern(pattern, n))
        .collect();
    names.sort_by_key(|name| version_key(name));
    names.pop().context("nothing cached")
}

/// The subset of apt's regular expressions the patterns above use: `^…$` anchors, `\.` and
/// `[0-9]+` (one or more digits); everything else is literal.
fn matches_pattern(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p {
            [] | [b'$'] => n.is_empty(),
            [b'\\', c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
            [b'[', b'0', b'-', b'9', b']', b'+', rest @ ..] => {
                let digits = n.iter().take_while(|b| b.is_ascii_digit()).count();
                (1..=digits).rev().any(|k| go(rest, &n[k..]))
            }
            [c, rest @ ..] => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.trim_start_matches('^').as_bytes(), name.as_bytes())
}

/// Numeric runs of a package name, so that 6.12.117 sorts after 6.12.99.
fn version_key(name: &str) -> Vec<u64> {
    name.split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_kernels_match_their_series_only() {
        let (_, std) = ECI_VM_KERNEL;
        assert!(matches_pattern(std, "linux-image-6.1.0-57-amd64-unsigned"));
        assert!(!matches_pattern(
            std,
            "linux-image-6.1.0-57-cloud-amd64-unsigned"
        ));
        assert!(!matches_pattern(std, "linux-image-6.1.0--amd64-unsigned"));
        let (_, cloud) = KERNEL_SERIES[1];
        assert!(matches_pattern(
            cloud,
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned"
        ));
        assert!(!matches_pattern(
            cloud,
            "linux-image-6.12.117+deb12-amd64-unsigned"
        ));
    }
}

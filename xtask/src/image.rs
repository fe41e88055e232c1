//! `cargo xtask image`: the `eci-agent:0.1.0` image that deploy/kubernetes/daemonset.yaml runs,
//! made with `docker import` (nothing can be pulled here, and nothing needs to be): a rootfs
//! holding only the static agent and util-linux's `nsenter` with the libraries it links (the pod
//! enters the host's cgroup namespace with it; busybox's nsenter has no `--cgroup`).
//!
//! The rootfs is also left as `target/image/eci-agent-VERSION.tar` for `docker load`-less hosts
//! (`docker import` it, or `ctr images import` after wrapping it): the import goes to the engine
//! the docker CLI talks to (`DOCKER_HOST`), or nowhere with `--no-import`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{build, exec};

/// The tag the DaemonSet names (`image: eci-agent:0.1.0`): the agent's own version.
pub const TAG: &str = concat!("eci-agent:", env!("CARGO_PKG_VERSION"));

#[derive(clap::Args)]
pub struct Options {
    /// Only build the rootfs tarball; do not `docker import` it.
    #[arg(long)]
    pub no_import: bool,
}

pub fn run(root: &Path, opts: &Options) -> anyhow::Result<()> {
    let tar = rootfs_tar(root)?;
    println!("xtask image: {}", tar.display());
    if opts.no_import {
        return Ok(());
    }
    let id = exec::stdout(
        Command::new("docker")
            .arg("import")
            .args(["--change", "ENV PATH=/usr/local/bin:/usr/bin"])
            .args(["--change", r#"ENTRYPOINT ["/usr/local/bin/eci-agent"]"#])
            .args(["--change", "LABEL org.opencontainers.image.title=eci-agent"])
            .arg(&tar)
            .arg(TAG),
    )?;
    println!("xtask image: {TAG} {}", id.trim());
    Ok(())
}

/// Builds the image's rootfs as `target/image/eci-agent-VERSION.tar` (the systemd-host tier runs
/// it as the DaemonSet's pod); its path.
pub fn rootfs_tar(root: &Path) -> anyhow::Result<PathBuf> {
    let bins = build::guest_agent(root)?;
    let dir = root.join("target/image");
    let rootfs = dir.join("rootfs");
    let _ = fs::remove_dir_all(&rootfs);
    for sub in ["usr/local/bin", "usr/bin", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(sub))?;
    }
    fs::copy(
        bins.join("eci-agent"),
        rootfs.join("usr/local/bin/eci-agent"),
    )
    .context("copying the static eci-agent")?;
    let nsenter = Path::new("/usr/bin/nsenter");
    copy_with_libraries(nsenter, &rootfs)?;
    // Resolvers and tools that look these up find nothing surprising.
    fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/:/sbin/nologin\n",
    )?;
    fs::write(rootfs.join("etc/group"), "root:x:0:\n")?;
    let tar = dir.join(format!("eci-agent-{}.tar", env!("CARGO_PKG_VERSION")));
    tar_rootfs(&rootfs, &tar)?;
    fs::remove_dir_all(&rootfs)?;
    Ok(tar)
}

/// `rootfs` as the tarball `docker import` takes, every file root's.
pub fn tar_rootfs(rootfs: &Path, tar: &Path) -> anyhow::Result<()> {
    exec::run(
        Command::new("tar")
            .arg("--numeric-owner")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("-C")
            .arg(rootfs)
            .arg("-cf")
            .arg(tar)
            .arg("."),
    )
}

/// The pod's command in a DaemonSet manifest: the items of the first `command:` list (the
/// container's; a probe's comes later), as the kubelet would pass them.
pub fn pod_command(manifest: &str) -> anyhow::Result<Vec<String>> {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "command:");
    let Some(key) = lines.next() else {
        bail!("the DaemonSet has no `command:`");
    };
    let indent = key.len() - key.trim_start().len();
    let words: Vec<String> = lines
        .take_while(|l| {
            l.trim_start().starts_with("- ") && l.len() - l.trim_start().len() >= indent
        })
        .map(|l| l.trim_start()[2..].trim().trim_matches('"').to_owned())
        .collect();
    if words.is_empty() {
        bail!("the DaemonSet's `command:` lists nothing");
    }
    Ok(words)
}

/// The DaemonSet's pod for a guest, under `share/pod`: `eci-agent.tar` (this image's rootfs) and
/// `command` (deploy/kubernetes/daemonset.yaml's command, one word per line), so that the
/// guests run what the manifest says.
pub fn share_pod(root: &Path, share: &Path) -> anyhow::Result<()> {
    let pod = share.join("pod");
    fs::create_dir_all(&pod)?;
    fs::copy(rootfs_tar(root)?, pod.join("eci-agent.tar"))?;
    let daemonset = fs::read_to_string(root.join("deploy/kubernetes/daemonset.yaml"))
        .context("reading deploy/kubernetes/daemonset.yaml")?;
    fs::write(
        pod.join("command"),
        pod_command(&daemonset)?.join("\n") + "\n",
    )?;
    Ok(())
}

/// Copies `bin` to the same path under `rootfs`, with every library `ldd` says it loads (and the
/// dynamic loader), each at its own path.
fn copy_with_libraries(bin: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let ldd = exec::stdout(Command::new("ldd").arg(bin))?;
    let mut files: Vec<PathBuf> = vec![bin.to_path_buf()];
    for line in ldd.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(path));
        }
    }
    if files.len() < 2 {
        bail!("{}: ldd found no libraries:\n{ldd}", bin.display());
    }
    for file in files {
        let to = rootfs.join(file.strip_prefix("/").unwrap_or(&file));
        fs::create_dir_all(to.parent().context("a parent")?)?;
        // Resolved: /lib64 is a link on Debian, the copy is the file itself.
        let real = fs::canonicalize(&file).with_context(|| format!("{}", file.display()))?;
        fs::copy(&real, &to).with_context(|| format!("copying {}", file.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_daemonset_runs_the_installer() {
        let manifest = include_str!("../../deploy/kubernetes/daemonset.yaml");
        let command = pod_command(manifest).unwrap();
        assert_eq!(command.first().map(String::as_str), Some("eci-agent"));
        assert!(command.iter().any(|w| w == "install"), "{command:?}");
        assert!(command.iter().any(|w| w == "/host"), "{command:?}");
        assert!(pod_command("kind: DaemonSet\n").is_err());
    }
}

//! The images of the image-policy tests and of its bench, made without network: the test CLI
//! image (busybox + static docker CLI) is imported and pushed to a local registry (so the engine
//! records its registry digest), an image is built upon it (a derived image), and an unrelated
//! image is imported from another rootfs.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::dockerd::Dockerd;

pub struct PolicyImages {
    pub registry_addr: String,
    /// In the registry (pushed, so the engine recorded its digest): `<reg>/eci/allowed:1`.
    pub allowed: String,
    /// Its manifest digest in the registry.
    pub allowed_digest: String,
    /// Built FROM `allowed` with one more layer; never pushed.
    pub derived: String,
    /// Imported from another rootfs; never pushed.
    pub unrelated: String,
}

/// `docker ARGS` against `engine`; its trimmed stdout, or an error with its stderr.
pub fn docker_ok(engine: &Dockerd, args: &[&str]) -> anyhow::Result<String> {
    let out = engine
        .docker()
        .args(args)
        .output()
        .with_context(|| format!("docker {args:?}"))?;
    if !out.status.success() {
        bail!(
            "docker {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl PolicyImages {
    /// Makes the three images in `engine`, pushing the allowed one to the registry at
    /// `registry_addr` (plain HTTP on loopback, which the engine allows without configuration).
    pub fn make(engine: &Dockerd, registry_addr: &str) -> anyhow::Result<Self> {
        let addr = registry_addr;
        let cli = engine.cli_image();
        let allowed = format!("{addr}/eci/allowed:1");
        docker_ok(engine, &["tag", cli, &allowed])?;
        docker_ok(engine, &["push", "-q", &allowed])?;
        let repo_digests = docker_ok(
            engine,
            &["image", "inspect", "-f", "{{json .RepoDigests}}", &allowed],
        )?;
        let allowed_digest = repo_digests
            .split('@')
            .nth(1)
            .and_then(|d| d.split('"').next())
            .with_context(|| format!("no registry digest recorded for {allowed}"))?
            .to_owned();

        let ctx = engine.scratch("derived-ctx");
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {allowed}\nCOPY extra /extra\n"),
        )?;
        std::fs::write(ctx.join("extra"), "derived\n")?;
        let derived = format!("{addr}/eci/derived:1");
        let ctx = ctx.to_str().context("scratch path is not UTF-8")?;
        docker_ok(engine, &["build", "-q", "-t", &derived, ctx])?;

        let rootfs = engine.scratch("unrelated-rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
        let _ = std::fs::remove_file(rootfs.join("bin/busybox"));
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox"))?;
        for applet in ["sh", "true"] {
            let link = rootfs.join("bin").join(applet);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink("busybox", link)?;
        }
        let unrelated = "eci-test/unrelated:1".to_owned();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()
            .context("tar of the unrelated rootfs")?;
        let mut import = engine
            .docker()
            .args(["import", "-", &unrelated])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .context("docker import")?;
        import
            .stdin
            .take()
            .context("docker import stdin")?
            .write_all(&tar.stdout)?;
        if !import.wait()?.success() {
            bail!("docker import of {unrelated} failed");
        }
        Ok(Self {
            registry_addr: addr.to_owned(),
            allowed,
            allowed_digest,
            derived,
            unrelated,
        })
    }
}

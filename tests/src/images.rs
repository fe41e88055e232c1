//! The test images of the image-policy tests, made once per test binary without any network:
//! the CLI image (busybox + static docker CLI) imported and pushed to a real `docker-registry`
//! on 127.0.0.1 (so the engine records its registry digest), an image derived from it by
//! `docker build`, and an unrelated one imported from another rootfs.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

use anyhow::{Context as _, bail};

use crate::{
    dockerd::{self, Dockerd},
    registry::Registry,
};

pub struct TestImages {
    pub registry_addr: String,
    /// `<registry>/eci/allowed:1`, pushed: the engine recorded its registry digest.
    pub allowed: String,
    /// The manifest digest of `allowed` in the registry.
    pub allowed_digest: String,
    /// `<registry>/eci/derived:1`: FROM `allowed` plus one layer, never pushed.
    pub derived: String,
    /// `eci-test/unrelated:1`: busybox alone, imported, never pushed.
    pub unrelated: String,
}

/// The familiar name refusals use for [`TestImages::unrelated`].
pub const UNRELATED_NAME: &str = "docker.io/eci-test/unrelated";

static REGISTRY: OnceLock<Mutex<Registry>> = OnceLock::new();
static IMAGES: OnceLock<TestImages> = OnceLock::new();

extern "C" fn stop_registry() {
    let _ = std::panic::catch_unwind(|| {
        if let Some(reg) = REGISTRY.get()
            && let Ok(mut reg) = reg.lock()
        {
            reg.cleanup();
        }
    });
}

fn engine() -> &'static Dockerd {
    dockerd::shared()
}

/// `docker ARGS` straight on the test binary's engine; its stdout, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    docker_on(engine(), args).unwrap_or_else(|err| panic!("{err:#}"))
}

/// `docker ARGS` straight on `engine`; its stdout, trimmed, or an error with its stderr.
pub fn docker_on(engine: &Dockerd, args: &[&str]) -> anyhow::Result<String> {
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

/// The images, with the registry holding `allowed` (stopped at exit).
pub fn shared() -> &'static TestImages {
    IMAGES.get_or_init(|| {
        let registry = Registry::start().expect("registry");
        let addr = registry.addr.clone();
        REGISTRY
            .set(Mutex::new(registry))
            .ok()
            .expect("registry once");
        // SAFETY: `stop_registry` is an `extern "C" fn()` that catches every panic.
        assert_eq!(unsafe { libc::atexit(stop_registry) }, 0);
        TestImages::make(engine(), &addr).unwrap_or_else(|err| panic!("{err:#}"))
    })
}

impl TestImages {
    /// Makes the images in `engine`, pushing `allowed` to the registry at `registry_addr`
    /// (plain HTTP on loopback, which the engine allows without configuration). The bench makes
    /// its own this way, in an engine of its own.
    pub fn make(engine: &Dockerd, registry_addr: &str) -> anyhow::Result<Self> {
        let addr = registry_addr;
        let allowed = format!("{addr}/eci/allowed:1");
        docker_on(engine, &["tag", engine.cli_image(), &allowed])?;
        docker_on(engine, &["push", "-q", &allowed])?;
        let repo_digests = docker_on(
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
        docker_on(engine, &["build", "-q", "-t", &derived, ctx])?;

        let rootfs = engine.scratch("unrelated-rootfs");
        std::fs::create_dir_all(rootfs.join("bin"))?;
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

/// admin-settings.json text: ECI on, `images` (and `allowDerivedImages`), a deny commandList.
pub fn settings(images: &[&str], derived: bool, denied_commands: &[&str]) -> String {
    serde_json::json!({
        "configurationFileVersion": 2,
        "enhancedContainerIsolation": {
            "locked": true,
            "value": true,
            "dockerSocketMount": {
                "imageList": { "images": images, "allowDerivedImages": derived },
                "commandList": { "type": "deny", "commands": denied_commands },
            },
        },
    })
    .to_string()
}

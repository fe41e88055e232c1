//! The test images of the image-policy tests, made once per test binary without any network:
//! the CLI image (busybox + static docker CLI) imported and pushed to a real `docker-registry`
//! on 127.0.0.1 (so the engine records its registry digest), an image derived from it by
//! `docker build`, and an unrelated one imported from another rootfs.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

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
    let out = engine().docker().args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
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

        let allowed = format!("{addr}/eci/allowed:1");
        docker_ok(&["tag", engine().cli_image(), &allowed]);
        docker_ok(&["push", "-q", &allowed]);
        let repo_digests =
            docker_ok(&["image", "inspect", "-f", "{{json .RepoDigests}}", &allowed]);
        let allowed_digest = repo_digests
            .split('@')
            .nth(1)
            .and_then(|d| d.split('"').next())
            .expect("a recorded registry digest")
            .to_owned();

        let ctx = engine().scratch("derived-ctx");
        std::fs::write(
            ctx.join("Dockerfile"),
            format!("FROM {allowed}\nCOPY extra /extra\n"),
        )
        .unwrap();
        std::fs::write(ctx.join("extra"), "derived\n").unwrap();
        let derived = format!("{addr}/eci/derived:1");
        docker_ok(&["build", "-q", "-t", &derived, ctx.to_str().unwrap()]);

        let rootfs = engine().scratch("unrelated-rootfs");
        std::fs::create_dir_all(rootfs.join("bin")).unwrap();
        std::fs::copy("/usr/bin/busybox", rootfs.join("bin/busybox")).unwrap();
        for applet in ["sh", "true"] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let unrelated = "eci-test/unrelated:1".to_owned();
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .args(["-c", "."])
            .output()
            .unwrap();
        let mut import = engine()
            .docker()
            .args(["import", "-", &unrelated])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        import.stdin.take().unwrap().write_all(&tar.stdout).unwrap();
        assert!(import.wait().unwrap().success());
        TestImages {
            registry_addr: addr,
            allowed,
            allowed_digest,
            derived,
            unrelated,
        }
    })
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

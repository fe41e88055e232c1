//! `eci-agent load`: enforcement before any Docker socket exists (the early boot unit
//! `eci-agent-pins.service`, ordered before `docker.socket` and `eci-agent.socket`).
//!
//! bpffs is empty after a reboot, and `docker.socket` listens long before the agent can run (it
//! waits for the engine to adopt its containers). This loads and pins the programs, writes the
//! verdicts that hold without an agent (trusted host cgroups, container parents denied; no verdict
//! is denied) and protects the *names* of both sockets, so that the kernel tags each socket the
//! moment systemd binds it (`d_instantiate`). Then it exits; the pins keep enforcing, and `eci-agent
//! run` adopts them.

use std::{fs, os::unix::fs::DirBuilderExt as _, path::Path};

use anyhow::Context as _;
use eci_common::{CLASS_ENGINE, CLASS_PUBLIC};

use crate::kernel::{
    cgroup::CgroupTree,
    enforce::{KernelConfig, load_defaults},
};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub host: crate::host_args::HostArgs,
}

pub fn load(args: &Args) -> anyhow::Result<()> {
    // A trusted slice may not exist yet this early (systemd makes `user.slice` at the first
    // login): it gets its verdict when `eci-agent run` starts. Until then it is denied.
    let tree = CgroupTree::open(&args.host.cgroup_root)?;
    let (trust, missing) = tree.split_present(&args.host.trust_cgroups);
    for rel in missing {
        tracing::warn!(cgroup = %rel.display(), "--trust-cgroup: not created yet; denied until `eci-agent run` trusts it");
    }
    let cfg = KernelConfig {
        pin_dir: args.host.pin.pin_dir.clone(),
        cgroup_root: args.host.cgroup_root.clone(),
        engine: args.host.engine.clone(),
        trust,
        container_parents: vec![crate::gate::placement::DEFAULT_CGROUPFS_PARENT.into()],
    };
    let mut enforcer = load_defaults(&cfg)?;
    // The engine's directory, as docker.socket's DirectoryMode=0700 would make it: its name must
    // be protected before the engine's socket exists.
    if let Some(dir) = args.host.engine.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    for (path, class) in [
        (&args.host.engine, CLASS_ENGINE),
        (&args.host.listen, CLASS_PUBLIC),
    ] {
        enforcer.maps.protect_name(path, class)?;
        // One bound earlier (a `load` after the sockets exist, e.g. at install) is tagged now.
        if is_socket(path) {
            enforcer.maps.protect(path, class)?;
        }
    }
    tracing::info!(
        pin_dir = %args.host.pin.pin_dir.display(),
        engine = %args.host.engine.display(),
        listen = %args.host.listen.display(),
        "programs pinned; both socket names protected; every cgroup without a verdict is denied"
    );
    Ok(())
}

fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

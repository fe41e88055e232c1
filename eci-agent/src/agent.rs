//! `eci-agent run`: loads the kernel programs, protects the two sockets, then serves the sidecar.

use std::{
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixListener},
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use eci_common::{CLASS_ALL, CLASS_ENGINE, CLASS_PUBLIC, CgroupVerdict, VERDICT_EXACT};

use crate::{
    cli::RunArgs,
    kernel::{Enforcer, KernelMaps, PinLayout, cgroup::CgroupTree},
};

/// The agent's own cgroup (relative to the cgroup2 mount): the only one that reaches the engine.
pub const AGENT_CGROUP: &str = "eci-agent";

/// What the kernel side of the agent needs to know.
#[derive(Clone, Debug)]
pub struct KernelConfig {
    pub pin_dir: PathBuf,
    pub cgroup_root: PathBuf,
    /// The engine socket (only the agent's cgroup may reach it).
    pub engine: PathBuf,
    /// Host cgroups trusted to reach the public socket.
    pub trust: Vec<PathBuf>,
    /// Parents under which the engine creates container cgroups (e.g. `docker`, dockerd's
    /// `--cgroup-parent`).
    pub container_parents: Vec<PathBuf>,
}

/// Loads and pins the programs, moves this process into its own cgroup and writes the verdicts.
///
/// Admission race: a container cgroup is created by the runtime before the agent can know its id.
/// Its verdict is inherited from the nearest ancestor until the agent writes its own. The container
/// parents therefore get an explicit deny, even when a trusted cgroup contains them, and are
/// registered so that the kernel's `cgroup_mkdir` program gives each new child (and each new
/// `docker-<id>.scope` of the systemd driver, wherever it is made) an explicit deny of its own at
/// creation; the existing ones get it from a scan. A new container starts denied (fail closed) and
/// gains access only when the agent allows its cgroup (see `kernel/admission.rs`).
pub fn enforce(cfg: &KernelConfig) -> anyhow::Result<Enforcer> {
    let tree = CgroupTree::open(&cfg.cgroup_root)?;
    let mut enforcer = Enforcer::load(&PinLayout::new(&cfg.pin_dir))?;
    let own = tree.create(Path::new(AGENT_CGROUP))?;
    enforcer.maps.set_verdict(
        own,
        CgroupVerdict {
            classes: CLASS_ALL,
            flags: VERDICT_EXACT,
        },
    )?;
    tree.move_pid(Path::new(AGENT_CGROUP), std::process::id())?;
    let root = tree.id(Path::new("/"))?;
    for rel in &cfg.trust {
        let id = tree
            .id(rel)
            .with_context(|| format!("--trust-cgroup {}", rel.display()))?;
        // The root is trusted only exactly: every cgroup on the host descends from it.
        let flags = if id == root { VERDICT_EXACT } else { 0 };
        enforcer.maps.set_verdict(
            id,
            CgroupVerdict {
                classes: CLASS_PUBLIC,
                flags,
            },
        )?;
    }
    for rel in &cfg.container_parents {
        // Created if the engine has not yet, so the deny is there before its first container.
        let id = tree
            .create(rel)
            .with_context(|| format!("container cgroup parent {}", rel.display()))?;
        enforcer.maps.set_verdict(id, CgroupVerdict::DENY)?;
        enforcer.maps.admit_children_denied(id)?;
    }
    crate::kernel::admission::deny_unadmitted(&tree, &mut enforcer.maps)?;
    enforcer.maps.protect(&cfg.engine, CLASS_ENGINE)?;
    Ok(enforcer)
}

/// Binds the public socket so that it is protected before anyone can connect: it is bound in a
/// private (0700) directory beside `path`, tagged, and only then renamed into place (a rename keeps
/// the inode, and with it the tag).
pub fn bind_protected(path: &Path, maps: &mut KernelMaps) -> anyhow::Result<UnixListener> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(".eci-agent-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir(&staging).with_context(|| format!("creating {}", staging.display()))?;
    fs::set_permissions(&staging, fs::Permissions::from_mode(0o700))?;
    let result = (|| {
        let tmp = staging.join("sock");
        let listener =
            UnixListener::bind(&tmp).with_context(|| format!("binding {}", tmp.display()))?;
        maps.protect(&tmp, CLASS_PUBLIC)?;
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err).with_context(|| format!("removing stale {}", path.display()));
            }
        }
        fs::rename(&tmp, path)
            .with_context(|| format!("moving the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&staging);
    result
}

/// A protected socket path. The tag belongs to the inode, so when the socket is re-created (the
/// engine restarted) the new inode must be tagged again; `refresh` notices and does it.
#[derive(Debug)]
pub struct ProtectedPath {
    path: PathBuf,
    class: u32,
    key: Option<eci_common::InodeKey>,
}

impl ProtectedPath {
    /// Tags `path` now (idempotent) and remembers which inode carries the tag.
    pub fn new(path: PathBuf, class: u32, maps: &mut KernelMaps) -> anyhow::Result<Self> {
        let key = maps.protect(&path, class)?;
        Ok(Self {
            path,
            class,
            key: Some(key),
        })
    }

    /// Re-tags the path when it names another inode than the tagged one; returns whether it did.
    /// A missing path is not an error: the engine may be restarting.
    pub fn refresh(&mut self, maps: &mut KernelMaps) -> anyhow::Result<bool> {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(meta) = fs::metadata(&self.path) else {
            return Ok(false);
        };
        let now = eci_common::InodeKey {
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if self.key == Some(now) {
            return Ok(false);
        }
        if let Some(old) = self.key.take() {
            maps.forget(&old);
        }
        self.key = Some(maps.protect(&self.path, self.class)?);
        tracing::info!(path = %self.path.display(), "socket re-created; protected the new inode");
        Ok(true)
    }
}

/// `eci-agent run`: settings first (a bad file stops here, before anything is bound or loaded),
/// then the kernel, then the sidecar until SIGINT/SIGTERM; SIGHUP reloads the settings.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let settings = crate::settings::load(&args.settings)
        .map_err(|err| anyhow::anyhow!("{}: {err}", args.settings.display()))?;
    for warning in &settings.warnings {
        tracing::warn!(settings = %args.settings.display(), "{warning}");
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?
        .block_on(serve(args, settings))
}

async fn serve(args: RunArgs, settings: crate::settings::Settings) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};

    use tokio::signal::unix::{SignalKind, signal};

    use crate::{
        engine::EngineApi,
        gate::{KernelSync, SocketMountGate, host::protected_socket},
        policy::mount::SocketGate,
        registry::{DigestCache, RegistryClient, RegistryConfig},
        sidecar::{SidecarConfig, audit::AuditLog, peer::TrustedCgroups},
    };

    if !settings.eci_enabled {
        tracing::warn!(settings = %args.settings.display(), "enhancedContainerIsolation.value is false: socket mounts are not restricted and the command list does not apply");
    }
    let kernel = KernelConfig {
        pin_dir: args.pin.pin_dir.clone(),
        cgroup_root: args.cgroup_root.clone(),
        engine: args.engine.clone(),
        trust: args.trust_cgroups.clone(),
        container_parents: vec![PathBuf::from(crate::gate::kernel::DEFAULT_CGROUPFS_PARENT)],
    };
    let mut enforcer = match enforce(&kernel) {
        Ok(enforcer) => Some(enforcer),
        Err(err) if args.allow_no_lsm => {
            tracing::error!(
                "NO KERNEL ENFORCEMENT: {err:#}. --allow-no-lsm: serving the sidecar alone; \
                 containers that reach the engine socket directly are not stopped"
            );
            None
        }
        Err(err) => {
            return Err(err.context(
                "kernel enforcement is unavailable (--allow-no-lsm runs the sidecar alone)",
            ));
        }
    };
    let listener = match enforcer.as_mut() {
        Some(enforcer) => bind_protected(&args.listen, &mut enforcer.maps)?,
        None => {
            crate::sidecar::remove_stale_socket(&args.listen)?;
            UnixListener::bind(&args.listen)
                .with_context(|| format!("binding {}", args.listen.display()))?
        }
    };
    // The kernel state is pinned: the process ending, however it ends, leaves it in place. What
    // the agent keeps is the maps, shared by the engine-socket watch and the container verdicts.
    let maps = match enforcer {
        Some(mut enforcer) => {
            if let Some(events) = enforcer.take_events() {
                tokio::spawn(crate::kernel::events::log_denials(events));
            }
            let mut engine =
                ProtectedPath::new(args.engine.clone(), CLASS_ENGINE, &mut enforcer.maps)?;
            let maps = Arc::new(Mutex::new(enforcer.maps));
            // The engine re-creates its socket when it restarts: tag each new inode.
            let engine_path = args.engine.clone();
            let watched = maps.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
                loop {
                    tick.tick().await;
                    let Ok(mut maps) = watched.lock() else { break };
                    if let Err(err) = engine.refresh(&mut maps) {
                        tracing::error!("re-protecting {}: {err:#}", engine_path.display());
                    }
                }
            });
            Some(maps)
        }
        None => None,
    };

    // Allowed digests: resolved in the background, refreshed, replaced on reload.
    let digests = Arc::new(DigestCache::new(settings.policy.images.clone()));
    let registry = RegistryClient::new(RegistryConfig {
        insecure: args.insecure_registries.iter().cloned().collect(),
        ..RegistryConfig::default()
    })
    .context("building the registry client")?;
    digests
        .clone()
        .spawn_refresher(Arc::new(registry), args.registry_refresh.into());

    let (policy_tx, policy_rx) = tokio::sync::watch::channel(Arc::new(settings));
    crate::reload::spawn(args.settings.clone(), policy_tx, digests.clone())
        .context("SIGHUP handler")?;

    let sockets = SocketGate::new(vec![
        protected_socket(&args.listen)?,
        protected_socket(&args.engine)?,
    ]);
    let kernel_sync = match &maps {
        Some(maps) => Some(KernelSync::new(
            maps.clone(),
            CgroupTree::open(&args.cgroup_root)?,
        )),
        None => None,
    };
    let gate = Arc::new(SocketMountGate::new(
        EngineApi::new(&args.engine),
        sockets,
        policy_rx.clone(),
        digests.subscribe(),
        kernel_sync,
    ));
    tokio::spawn(crate::gate::watch::run(
        gate.clone(),
        policy_rx.clone(),
        digests.subscribe(),
    ));

    let mut config = SidecarConfig::new(
        &args.engine,
        TrustedCgroups::new(args.trust_cgroups.clone()),
    );
    config.mounts = Some(gate);
    if let Some(target) = &args.audit_log {
        config.audit = Some(
            AuditLog::open(target, false)
                .with_context(|| format!("opening the audit log {}", target.display()))?,
        );
    }
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    println!("export DOCKER_HOST=unix://{}", args.listen.display());
    tracing::info!(listen = %args.listen.display(), engine = %args.engine.display(), "serving");
    let served = crate::sidecar::serve_listener(listener, config, policy_rx, shutdown).await;
    let _ = fs::remove_file(&args.listen);
    served
}
